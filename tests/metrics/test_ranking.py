"""Tests for prerank_jax.metrics.ranking: closed forms, masking, vmap/jit, references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytrec_eval
import rax

from prerank_jax.metrics import dcg_at_k
from prerank_jax.metrics import has_relevant
from prerank_jax.metrics import EMPTY_MODES
from prerank_jax.metrics import keep_size
from prerank_jax.metrics import mean_over_defined
from prerank_jax.metrics import mean_over_lists
from prerank_jax.metrics import ndcg_at_k
from prerank_jax.metrics import positive_retention
from prerank_jax.metrics import ranks
from prerank_jax.metrics import recall_at_k
from prerank_jax.metrics import reciprocal_rank
from prerank_jax.metrics import teacher_consistency_recall
from prerank_jax.metrics import top_m_mask

# labels (2, 0, 1) for d1, d2, d3; scores put them in the order d2, d3, d1.
LABELS = jnp.array([2.0, 0.0, 1.0])
SCORES = jnp.array([0.1, 0.9, 0.5])


def _close(actual, expected, tol=1e-6):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- closed forms


def test_ranks_closed_form_and_ties_by_lower_index():
  _close(ranks(SCORES), [3, 1, 2])
  r = ranks(jnp.array([1.0, 3.0, 3.0, 1.0, 2.0]))
  assert r.dtype == jnp.int32
  np.testing.assert_array_equal(r, [4, 1, 2, 5, 3])
  # All tied: the index order.
  np.testing.assert_array_equal(ranks(jnp.zeros(4)), [1, 2, 3, 4])
  # -0.0 ties with +0.0 (lower index first).
  np.testing.assert_array_equal(ranks(jnp.array([-0.0, 0.0, 0.0, -0.0])), [1, 2, 3, 4])


def test_ranks_masked_last_nan_safe():
  where = jnp.array([True, False, True, True, True])
  scores = jnp.array([1.0, jnp.nan, 3.0, 1.0, 2.0])
  # Valid: idx2 (3), idx4 (2), idx0 (1), idx3 (1, tie -> after idx0); masked idx1 last.
  np.testing.assert_array_equal(ranks(scores, where=where), [3, 5, 1, 4, 2])
  # Several masked slots take the trailing ranks in index order.
  where = jnp.array([False, True, False, True])
  np.testing.assert_array_equal(
      ranks(jnp.array([jnp.inf, 0.0, jnp.nan, 1.0]), where=where), [3, 2, 4, 1])
  # A valid NaN ranks after every valid number, before masked candidates.
  np.testing.assert_array_equal(
      ranks(jnp.array([jnp.nan, -jnp.inf, 5.0, 9.0]), where=jnp.array([True, True, True, False])),
      [3, 2, 1, 4])


def test_ranks_integer_and_bool_scores():
  np.testing.assert_array_equal(
      ranks(jnp.array([np.iinfo(np.int32).min, 0, np.iinfo(np.int32).max, 0])), [4, 2, 1, 3])
  np.testing.assert_array_equal(ranks(jnp.array([False, True, True])), [3, 1, 2])
  np.testing.assert_array_equal(ranks(jnp.array([0, 7, 3], dtype=jnp.uint8)), [3, 1, 2])


def test_top_m_mask():
  np.testing.assert_array_equal(top_m_mask(SCORES, m=2), [False, True, True])
  np.testing.assert_array_equal(top_m_mask(SCORES, m=0), [False, False, False])
  np.testing.assert_array_equal(top_m_mask(SCORES, m=10), [True, True, True])
  where = jnp.array([True, False, True])
  np.testing.assert_array_equal(top_m_mask(SCORES, where=where, m=1), [False, False, True])
  np.testing.assert_array_equal(top_m_mask(SCORES, where=where, m=3), [True, False, True])
  # Per-list m broadcast against [..., N].
  batch = jnp.stack([SCORES, -SCORES])
  np.testing.assert_array_equal(top_m_mask(batch, m=jnp.array([1, 2])),
                                [[False, True, False], [True, False, True]])


def test_ndcg_linear_closed_form():
  dcg = 1 / math.log2(3) + 2 / math.log2(4)  # d3 at rank 2, d1 at rank 3
  ideal = 2 / math.log2(2) + 1 / math.log2(3)
  _close(dcg_at_k(SCORES, LABELS, k=10, gain="linear"), dcg)
  _close(ndcg_at_k(SCORES, LABELS, k=10, gain="linear"), dcg / ideal)
  _close(ndcg_at_k(SCORES, LABELS, k=10, gain="linear"), 0.6199062332840657)
  # k=2: d1 is cut; the ideal DCG is cut too.
  _close(ndcg_at_k(SCORES, LABELS, k=2, gain="linear"),
         (1 / math.log2(3)) / (2 + 1 / math.log2(3)))
  _close(ndcg_at_k(SCORES, LABELS, k=1, gain="linear"), 0.0)
  _close(ndcg_at_k(LABELS, LABELS, k=3, gain="linear"), 1.0)


def test_ndcg_exp2_closed_form():
  dcg = (2**1 - 1) / math.log2(3) + (2**2 - 1) / math.log2(4)
  ideal = (2**2 - 1) / math.log2(2) + (2**1 - 1) / math.log2(3)
  _close(dcg_at_k(SCORES, LABELS, k=10), dcg)
  _close(ndcg_at_k(SCORES, LABELS, k=10), dcg / ideal)
  _close(ndcg_at_k(SCORES, LABELS, k=2), (1 / math.log2(3)) / ideal)
  _close(ndcg_at_k(SCORES, LABELS, k=0), 0.0)


def test_ndcg_no_relevant_is_zero_and_has_relevant():
  zeros = jnp.zeros(3)
  _close(ndcg_at_k(SCORES, zeros, k=3), 0.0)
  assert not bool(has_relevant(zeros))
  assert bool(has_relevant(LABELS))
  # The only relevant candidate is masked: no relevant list.
  where = jnp.array([False, True, True])
  assert not bool(has_relevant(jnp.array([2.0, 0.0, 0.0]), where=where))
  _close(ndcg_at_k(SCORES, jnp.array([2.0, 0.0, 0.0]), where=where, k=3), 0.0)
  np.testing.assert_array_equal(has_relevant(jnp.stack([LABELS, zeros])), [True, False])


def test_gain_validation():
  with pytest.raises(ValueError, match=r"exp2.*linear"):
    ndcg_at_k(SCORES, LABELS, k=3, gain="log")
  with pytest.raises(ValueError, match="gain must be one of"):
    dcg_at_k(SCORES, LABELS, k=3, gain=None)


def test_mask_dtype_validation():
  with pytest.raises(TypeError, match="bool"):
    ndcg_at_k(SCORES, LABELS, where=jnp.array([1, 1, 0]), k=3)
  with pytest.raises(TypeError, match="bool"):
    recall_at_k(SCORES, jnp.array([1.0, 0.0, 1.0]), k=3)
  with pytest.raises(TypeError, match="bool"):
    keep_size(jnp.ones(3), keep_ratio=0.5)


def test_recall_closed_form():
  relevant = jnp.array([True, False, True])  # d1 (rank 3) and d3 (rank 2)
  _close(recall_at_k(SCORES, relevant, k=1), 0.0)
  _close(recall_at_k(SCORES, relevant, k=2), 0.5)
  _close(recall_at_k(SCORES, relevant, k=3), 1.0)
  _close(recall_at_k(SCORES, jnp.zeros(3, bool), k=3), 0.0)
  # Masking d2 promotes d3 to rank 1 and d1 to rank 2.
  _close(recall_at_k(SCORES, relevant, where=jnp.array([True, False, True]), k=1), 0.5)


def test_teacher_consistency_closed_form():
  teacher = jnp.array([3.0, 2.0, 1.0, 0.0])  # teacher order 0, 1, 2, 3
  student = jnp.array([0.0, 1.0, 2.0, 3.0])  # student order 3, 2, 1, 0
  _close(teacher_consistency_recall(student, teacher, k=2, m=2), 0.0)
  _close(teacher_consistency_recall(student, teacher, k=2, m=3), 0.5)
  _close(teacher_consistency_recall(student, teacher, k=2, m=4), 1.0)
  _close(teacher_consistency_recall(teacher, teacher, k=2, m=2), 1.0)
  # k larger than the list: divide by n_valid.
  _close(teacher_consistency_recall(student, teacher, k=10, m=2), 2 / 4)
  # Masking: n_valid = 2 (items 1, 3); teacher top-1 = {1}; student top-1 = {3}.
  where = jnp.array([False, True, False, True])
  _close(teacher_consistency_recall(student, teacher, where=where, k=1, m=1), 0.0)
  _close(teacher_consistency_recall(student, teacher, where=where, k=5, m=1), 1 / 2)
  # Ties: an all-tied teacher keeps the lower indices {0, 1}.
  _close(teacher_consistency_recall(teacher, jnp.zeros(4), k=2, m=2), 1.0)
  _close(teacher_consistency_recall(student, jnp.zeros(4), k=2, m=2), 0.0)
  _close(teacher_consistency_recall(student, teacher, k=0, m=2), 0.0)


def test_keep_size():
  ten = jnp.ones(10, bool)
  assert int(keep_size(ten, keep_ratio=0.3)) == 3  # not 4 from float rounding
  assert int(keep_size(ten, keep_ratio=0.7)) == 7
  assert int(keep_size(ten, keep_ratio=0.25)) == 3  # ceil(2.5)
  assert int(keep_size(ten, keep_ratio=0.01)) == 1  # at least 1
  assert int(keep_size(ten, keep_ratio=1.0)) == 10
  assert int(keep_size(jnp.zeros(10, bool), keep_ratio=0.5)) == 1  # all masked
  where = jnp.array([[True] * 10, [True] * 5 + [False] * 5, [False] * 10])
  m = keep_size(where, keep_ratio=0.5)
  assert m.dtype == jnp.int32
  np.testing.assert_array_equal(m, [5, 3, 1])
  np.testing.assert_array_equal(keep_size(where, keep_ratio=jnp.array([0.1, 1.0, 0.5])),
                                [1, 5, 1])
  # Every list length 1..39 against every common ratio, in one batched call.
  sizes = np.arange(1, 40)
  ratios = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
  where = jnp.asarray(np.arange(39)[None, None, :] < sizes[None, :, None])  # [1, 39, 39]
  where = jnp.broadcast_to(where, (len(ratios), 39, 39))
  got = np.asarray(keep_size(where, keep_ratio=jnp.asarray(ratios, jnp.float32)[:, None]))
  expected = [[max(1, math.ceil(round(r * n, 9))) for n in sizes] for r in ratios]
  np.testing.assert_array_equal(got, expected)


def test_mean_over_lists():
  values = jnp.array([0.5, jnp.nan, 1.0])
  where = jnp.array([True, False, True])
  _close(mean_over_lists(values, where=where), 0.75)
  _close(mean_over_lists(jnp.array([0.5, 1.0])), 0.75)
  _close(mean_over_lists(values, where=jnp.zeros(3, bool)), 0.0)
  # Typical use: NDCG averaged over lists that have a relevant candidate.
  labels = jnp.stack([LABELS, jnp.zeros(3)])
  scores = jnp.stack([SCORES, SCORES])
  _close(mean_over_lists(ndcg_at_k(scores, labels, k=10, gain="linear"),
                         where=has_relevant(labels)), 0.6199062332840657)


def test_reciprocal_rank_closed_form():
  # Order d2, d3, d1: the first relevant (d3) is at rank 2.
  _close(reciprocal_rank(SCORES, jnp.array([True, False, True])), 0.5)
  _close(reciprocal_rank(SCORES, jnp.array([False, True, False])), 1.0)
  _close(reciprocal_rank(SCORES, jnp.array([True, False, False])), 1 / 3)
  _close(reciprocal_rank(SCORES, jnp.zeros(3, bool)), 0.0)  # nothing relevant
  # Masking d2 promotes d3 to rank 1.
  _close(reciprocal_rank(SCORES, jnp.array([True, False, True]),
                         where=jnp.array([True, False, True])), 1.0)
  # Ties are broken by the lower index, not averaged: relevant d1 tied behind d0.
  _close(reciprocal_rank(jnp.zeros(3), jnp.array([False, True, False])), 0.5)
  _close(reciprocal_rank(jnp.stack([SCORES, -SCORES]), jnp.array([True, False, False])),
         [1 / 3, 1.0])
  with pytest.raises(TypeError, match="bool"):
    reciprocal_rank(SCORES, jnp.array([1.0, 0.0, 0.0]))


def test_positive_retention_closed_form():
  scores = jnp.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
  labels = jnp.array([0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0])
  exposed = jnp.array([True, True, True, False, True, False, False, False, True, False])
  # Logged positives: 1, 4, 8 (index 3 is unexposed; unexposed labels never count).
  _close(positive_retention(scores, labels, exposed=exposed, keep_ratio=0.1), 0.0)
  _close(positive_retention(scores, labels, exposed=exposed, keep_ratio=0.2), 1 / 3)
  _close(positive_retention(scores, labels, exposed=exposed, keep_ratio=0.5), 2 / 3)
  _close(positive_retention(scores, labels, exposed=exposed, keep_ratio=1.0), 1.0)
  # An unexposed "positive" label is ignored, even if garbage.
  labels_garbage = labels.at[3].set(jnp.nan).at[5].set(5.0)
  _close(positive_retention(scores, labels_garbage, exposed=exposed, keep_ratio=0.5), 2 / 3)
  # The cut ranks the WHOLE valid list: unexposed candidates take places in it.
  _close(positive_retention(scores, labels, exposed=exposed, keep_ratio=0.4),
         recall_at_k(scores, exposed & (labels > 0), k=4))
  # No logged positive: 0. Masking keeps the cut on valid candidates only.
  _close(positive_retention(scores, jnp.zeros(10), exposed=exposed, keep_ratio=0.5), 0.0)
  where = jnp.arange(10) >= 4  # indices 4..9 valid: positives 4, 8; m = 3 keeps 4, 5, 6
  _close(positive_retention(scores, labels, exposed=exposed, where=where, keep_ratio=0.5),
         0.5)
  with pytest.raises(TypeError, match="exposed must be a bool"):
    positive_retention(scores, labels, exposed=jnp.ones(10), keep_ratio=0.5)


def test_mean_over_defined_modes():
  values = jnp.array([0.5, jnp.nan, 1.0, 0.25])  # list 1 is undefined (NaN is never read)
  defined = jnp.array([True, False, True, True])
  mean, excluded = mean_over_defined(values, defined)
  _close(mean, (0.5 + 1.0 + 0.25) / 3)
  assert excluded.dtype == jnp.int32 and int(excluded) == 1
  mean, excluded = mean_over_defined(values, defined, empty="zero")
  _close(mean, (0.5 + 1.0 + 0.25) / 4)
  assert int(excluded) == 1
  mean, _ = mean_over_defined(values, defined, empty="one")
  _close(mean, (0.5 + 1.0 + 0.25 + 1.0) / 4)
  # ``where`` drops lists entirely (they are neither averaged nor counted).
  where = jnp.array([True, False, True, False])
  for empty, expected in (("exclude", 0.75), ("zero", 0.75), ("one", 0.75)):
    mean, excluded = mean_over_defined(values, defined, where=where, empty=empty)
    _close(mean, expected)
    assert int(excluded) == 0
  # Nothing defined: exclude gives 0, never NaN; zero and one give 0 and 1.
  none = jnp.zeros(4, bool)
  for empty, expected in zip(EMPTY_MODES, (0.0, 0.0, 1.0)):
    mean, excluded = mean_over_defined(values, none, empty=empty)
    _close(mean, expected)
    assert int(excluded) == 4
  with pytest.raises(ValueError, match=r"exclude.*zero.*one"):
    mean_over_defined(values, defined, empty="skip")
  with pytest.raises(TypeError, match="bool"):
    mean_over_defined(values, jnp.ones(4))
  # Under jit, with NDCG: a list without a relevant candidate.
  labels = jnp.stack([LABELS, jnp.zeros(3)])
  scores = jnp.stack([SCORES, SCORES])
  ndcg = ndcg_at_k(scores, labels, k=10, gain="linear")
  fn = jax.jit(lambda v, d: mean_over_defined(v, d, empty="zero"))
  mean, excluded = fn(ndcg, has_relevant(labels))
  _close(mean, 0.6199062332840657 / 2)
  assert int(excluded) == 1


# ----------------------------------------------------------------------------- masking


def _all_metrics(scores, teacher, labels, where, k, m):
  relevant = labels > 0
  return {
      "dcg_exp2": dcg_at_k(scores, labels, where=where, k=k),
      "ndcg_exp2": ndcg_at_k(scores, labels, where=where, k=k),
      "ndcg_linear": ndcg_at_k(scores, labels, where=where, k=k, gain="linear"),
      "has_relevant": has_relevant(labels, where=where),
      "recall": recall_at_k(scores, relevant, where=where, k=k),
      "consistency": teacher_consistency_recall(scores, teacher, where=where, k=k, m=m),
      "rr": reciprocal_rank(scores, relevant, where=where),
      "retention": positive_retention(scores, labels, exposed=teacher > 0, where=where,
                                      keep_ratio=0.4),
      "keep": keep_size(jnp.ones(scores.shape, bool) if where is None else where,
                        keep_ratio=0.3),
  }


@pytest.mark.parametrize("seed", range(4))
def test_masking_equals_slicing(seed):
  rng = np.random.default_rng(seed)
  n_valid, n_pad = int(rng.integers(1, 9)), int(rng.integers(1, 6))
  size = n_valid + n_pad
  # Integer-valued scores create ties, so the tie rule must survive interleaved padding.
  scores = rng.integers(0, 4, n_valid).astype(np.float32)
  teacher = rng.normal(size=n_valid).astype(np.float32)
  labels = rng.integers(0, 3, n_valid).astype(np.float32)
  # Interleave masked slots at random positions, keeping the valid order.
  where = np.zeros(size, bool)
  where[np.sort(rng.choice(size, n_valid, replace=False))] = True
  garbage = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 7.0], np.float32)

  def pad(x):
    out = rng.choice(garbage, size).astype(np.float32)
    out[where] = x
    return jnp.asarray(out)

  p_scores, p_teacher, p_labels = pad(scores), pad(teacher), pad(labels)
  for k, m in ((1, 1), (2, 3), (5, 2), (20, 20)):
    sliced = _all_metrics(jnp.asarray(scores), jnp.asarray(teacher), jnp.asarray(labels),
                          None, k, m)
    padded = _all_metrics(p_scores, p_teacher, p_labels, jnp.asarray(where), k, m)
    for name in sliced:
      assert np.all(np.isfinite(np.asarray(padded[name], np.float64))), name
      np.testing.assert_allclose(np.asarray(padded[name]), np.asarray(sliced[name]),
                                 rtol=1e-6, err_msg=f"{name} k={k} m={m}")
    np.testing.assert_array_equal(
        np.asarray(top_m_mask(p_scores, where=jnp.asarray(where), m=m))[where],
        top_m_mask(jnp.asarray(scores), m=m))
  padded_ranks = np.asarray(ranks(p_scores, where=jnp.asarray(where)))
  np.testing.assert_array_equal(padded_ranks[where], ranks(jnp.asarray(scores)))
  np.testing.assert_array_equal(padded_ranks[~where], np.arange(n_valid + 1, size + 1))


def test_all_masked_lists_are_finite():
  size = 5
  where = jnp.zeros((2, size), bool)
  nan = jnp.full((2, size), jnp.nan)
  values = _all_metrics(nan, nan, nan, where, 3, 2)
  for name, value in values.items():
    assert value.shape == (2,), name
    assert np.all(np.isfinite(np.asarray(value, np.float64))), name
  for name in ("dcg_exp2", "ndcg_exp2", "ndcg_linear", "recall", "consistency", "rr",
               "retention"):
    _close(values[name], [0.0, 0.0])
  np.testing.assert_array_equal(values["has_relevant"], [False, False])
  np.testing.assert_array_equal(values["keep"], [1, 1])
  np.testing.assert_array_equal(ranks(nan, where=where), [[1, 2, 3, 4, 5]] * 2)
  assert not np.asarray(top_m_mask(nan, where=where, m=3)).any()
  _close(mean_over_lists(values["ndcg_exp2"], where=values["has_relevant"]), 0.0)


# ----------------------------------------------------------------------------- vmap / jit


def _random_batch(seed, batch=6, size=7):
  rng = np.random.default_rng(seed)
  scores = jnp.asarray(rng.normal(size=(batch, size)), jnp.float32)
  teacher = jnp.asarray(rng.normal(size=(batch, size)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 4, (batch, size)), jnp.float32)
  where = jnp.asarray(rng.random((batch, size)) < 0.8)
  k = jnp.asarray(rng.integers(1, size + 1, batch), jnp.int32)
  m = jnp.asarray(rng.integers(1, size + 1, batch), jnp.int32)
  return scores, teacher, labels, where, k, m


def _per_list_metrics(scores, teacher, labels, where, k, m):
  return jnp.stack([
      ndcg_at_k(scores, labels, where=where, k=k),
      ndcg_at_k(scores, labels, where=where, k=k, gain="linear"),
      recall_at_k(scores, labels > 0, where=where, k=k),
      teacher_consistency_recall(scores, teacher, where=where, k=k, m=m),
      keep_size(where, keep_ratio=0.5).astype(jnp.float32),
      reciprocal_rank(scores, labels > 1, where=where),
      positive_retention(scores, labels, exposed=teacher > 0, where=where, keep_ratio=0.5),
  ], axis=-1)


def test_vmap_and_batched_equal_python_loop():
  args = _random_batch(0)
  one_list = jax.jit(_per_list_metrics)  # compiled once, called per list
  loop = np.stack([one_list(*(a[i] for a in args)) for i in range(args[0].shape[0])])
  vmapped = jax.vmap(_per_list_metrics)(*args)
  batched = _per_list_metrics(*args)  # per-list k, m of shape [B] broadcast natively
  _close(vmapped, loop)
  _close(batched, loop)
  # vmap over the cutoff only (a k sweep on one batch).
  scores, _, labels, where, _, _ = args
  ks = jnp.arange(1, 8)
  sweep = jax.vmap(lambda k: ndcg_at_k(scores, labels, where=where, k=k))(ks)
  for i in (0, 3, 6):
    _close(sweep[i], ndcg_at_k(scores, labels, where=where, k=i + 1))
  # A [K, 1] cutoff array broadcasts the same sweep without vmap.
  _close(ndcg_at_k(scores, labels, where=where, k=ks[:, None]), sweep)


def test_jit_traced_k_and_m_do_not_recompile():
  traces = []

  def evaluate(scores, teacher, labels, where, k, m):
    traces.append(1)  # Python side effect: runs once per trace
    return _per_list_metrics(scores, teacher, labels, where, k, m)

  jitted = jax.jit(evaluate)
  scores, teacher, labels, where, _, _ = _random_batch(1)
  for k, m in ((1, 1), (3, 5), (7, 2)):
    k_arr, m_arr = jnp.asarray(k, jnp.int32), jnp.asarray(m, jnp.int32)
    _close(jitted(scores, teacher, labels, where, k_arr, m_arr),
           _per_list_metrics(scores, teacher, labels, where, k, m), tol=1e-5)
  assert len(traces) == 1  # one trace, hence one compilation, for every (k, m)
  # Per-list k and m arrays are traced too.
  single = jax.jit(lambda s, l, w, k: (traces.append(2), ndcg_at_k(s, l, where=w, k=k))[1])
  single(scores, labels, where, jnp.full(scores.shape[0], 2, jnp.int32))
  single(scores, labels, where, jnp.full(scores.shape[0], 5, jnp.int32))
  assert traces.count(2) == 1


# ----------------------------------------------------------------------------- references


def test_ndcg_linear_matches_pytrec_eval():
  rng = np.random.default_rng(42)
  cutoffs = (1, 3, 5, 10)
  num_lists, max_size = 30, 15
  scores = np.zeros((num_lists, max_size), np.float32)
  labels = np.zeros((num_lists, max_size), np.float32)
  where = np.zeros((num_lists, max_size), bool)
  qrels, run = {}, {}
  for q in range(num_lists):
    n = int(rng.integers(2, max_size + 1))
    rel = rng.integers(0, 4, n)
    rel[rng.integers(n)] = max(1, rel.max())  # at least one relevant (trec_eval skips none)
    # Distinct scores, well separated so float32 keeps the order of trec_eval's doubles.
    s = rng.permutation(n).astype(np.float64) / n + rng.uniform(0, 0.1 / n, n)
    scores[q, :n], labels[q, :n], where[q, :n] = s, rel, True
    qrels[f"q{q}"] = {f"d{i}": int(rel[i]) for i in range(n)}
    run[f"q{q}"] = {f"d{i}": float(scores[q, i]) for i in range(n)}
  measure = "ndcg_cut." + ",".join(map(str, cutoffs))
  trec = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(run)
  for k in cutoffs:
    ours = np.asarray(ndcg_at_k(jnp.asarray(scores), jnp.asarray(labels),
                                where=jnp.asarray(where), k=k, gain="linear"))
    expected = [trec[f"q{q}"][f"ndcg_cut_{k}"] for q in range(num_lists)]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6, err_msg=f"k={k}")


def test_pytrec_eval_example_fact():
  trec = pytrec_eval.RelevanceEvaluator({"q": {"d1": 2, "d2": 0, "d3": 1}}, {"ndcg_cut.10"})
  value = trec.evaluate({"q": {"d1": 0.1, "d2": 0.9, "d3": 0.5}})["q"]["ndcg_cut_10"]
  _close(value, 0.6199, tol=1e-4)
  _close(ndcg_at_k(SCORES, LABELS, k=10, gain="linear"), value, tol=1e-6)


def _rax_batch(seed):
  rng = np.random.default_rng(seed)
  shape = (40, 9)
  scores = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)  # distinct
  labels = rng.integers(0, 4, shape).astype(np.float32)
  labels[:5] = 0.0  # lists without a relevant candidate
  where = rng.random(shape) < 0.7
  where[5:8] = False  # all-masked lists
  return jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(where)


@pytest.mark.parametrize("k", [1, 3, 9])
def test_ndcg_exp2_matches_rax(k):
  scores, labels, where = _rax_batch(k)
  expected = rax.ndcg_metric(scores, labels, where=where, topn=k, reduce_fn=None)
  _close(ndcg_at_k(scores, labels, where=where, k=k), expected, tol=1e-5)
  expected_dcg = rax.dcg_metric(scores, labels, where=where, topn=k, reduce_fn=None)
  _close(dcg_at_k(scores, labels, where=where, k=k), expected_dcg, tol=1e-5)
  # rax's mean skips all-masked lists; ours selects lists explicitly.
  _close(mean_over_lists(ndcg_at_k(scores, labels, where=where, k=k),
                         where=jnp.any(where, axis=-1)),
         rax.ndcg_metric(scores, labels, where=where, topn=k), tol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 9])
def test_recall_matches_rax_for_binary_labels(k):
  scores, labels, where = _rax_batch(10 + k)
  relevant = labels >= 2
  expected = rax.recall_metric(scores, relevant.astype(jnp.float32), where=where, topn=k,
                               reduce_fn=None)
  _close(recall_at_k(scores, relevant, where=where, k=k), expected, tol=1e-6)
  # rax binarises graded labels at label >= 1; the same threshold passed explicitly agrees.
  expected = rax.recall_metric(scores, labels, where=where, topn=k, reduce_fn=None)
  _close(recall_at_k(scores, labels >= 1, where=where, k=k), expected, tol=1e-6)


def test_neg_inf_scores_differ_from_rax_on_purpose():
  """rax treats a valid -inf score as not retrieved; here only ``where`` removes items."""
  scores = jnp.array([2.0, -jnp.inf, 1.0])
  labels = jnp.array([0.0, 1.0, 1.0])
  # Ours: d2 is ranked 3rd and retrieved at k=3.
  _close(recall_at_k(scores, labels > 0, k=3), 1.0)
  _close(rax.recall_metric(scores, labels, topn=3, reduce_fn=None), 0.5)
  ours = dcg_at_k(scores, labels, k=3)
  _close(ours, 1 / math.log2(3) + 1 / math.log2(4))
  _close(rax.dcg_metric(scores, labels, topn=3, reduce_fn=None), 1 / math.log2(3))
  # Masking the -inf candidate instead gives the same answer in both.
  where = jnp.isfinite(scores)
  _close(recall_at_k(scores, labels > 0, where=where, k=3),
         rax.recall_metric(scores, labels, where=where, topn=3, reduce_fn=None))


def test_graded_threshold_differs_from_rax_on_purpose():
  """has_relevant uses label > 0; rax.recall_metric binarises at label >= 1."""
  scores = jnp.array([2.0, 1.0])
  labels = jnp.array([0.0, 0.5])
  assert bool(has_relevant(labels))
  _close(recall_at_k(scores, labels > 0, k=1), 0.0)
  _close(recall_at_k(scores, labels > 0, k=2), 1.0)
  _close(rax.recall_metric(scores, labels, topn=2, reduce_fn=None), 0.0)  # nothing relevant


def _trec_lists(seed, num_lists=30, max_size=15, num_empty=5):
  """Random lists with distinct scores; the first ``num_empty`` have no relevant item."""
  rng = np.random.default_rng(seed)
  scores = np.zeros((num_lists, max_size), np.float32)
  labels = np.zeros((num_lists, max_size), np.float32)
  where = np.zeros((num_lists, max_size), bool)
  qrels, run = {}, {}
  for q in range(num_lists):
    n = int(rng.integers(2, max_size + 1))
    rel = rng.integers(0, 4, n)
    if q < num_empty:
      rel[:] = 0
    else:
      rel[rng.integers(n)] = max(1, rel.max())
    s = rng.permutation(n).astype(np.float64) / n + rng.uniform(0, 0.1 / n, n)
    scores[q, :n], labels[q, :n], where[q, :n] = s, rel, True
    qrels[f"q{q}"] = {f"d{i}": int(rel[i]) for i in range(n)}
    run[f"q{q}"] = {f"d{i}": float(scores[q, i]) for i in range(n)}
  return jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(where), qrels, run


def test_mrr_matches_pytrec_eval_recip_rank():
  """trec_eval relevance is ``label >= 1``; a query with no relevant document scores 0."""
  scores, labels, where, qrels, run = _trec_lists(3)
  trec = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run)
  expected = np.array([trec[f"q{q}"]["recip_rank"] for q in range(scores.shape[0])])
  ours = reciprocal_rank(scores, labels >= 1, where=where)
  _close(ours, expected, tol=1e-6)
  defined = jnp.any(where & (labels >= 1), axis=-1)
  # trec_eval's mean counts the empty queries as 0: our "zero"; "exclude" drops them.
  mean, excluded = mean_over_defined(ours, defined, empty="zero")
  _close(mean, expected.mean(), tol=1e-6)
  assert int(excluded) == 5
  mean, _ = mean_over_defined(ours, defined)
  _close(mean, expected[5:].mean(), tol=1e-6)


def test_ndcg_empty_lists_vs_pytrec_eval_on_purpose():
  """trec_eval ndcg_cut gives an empty query 0 (our ``empty="zero"``) with linear gain;
  the default here excludes it, and the default gain is exp2 (so values differ)."""
  scores, labels, where, qrels, run = _trec_lists(4)
  trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
  expected = np.array([trec[f"q{q}"]["ndcg_cut_10"] for q in range(scores.shape[0])])
  assert np.all(expected[:5] == 0.0)
  defined = has_relevant(labels, where=where)
  linear = ndcg_at_k(scores, labels, where=where, k=10, gain="linear")
  mean, excluded = mean_over_defined(linear, defined, empty="zero")
  _close(mean, expected.mean(), tol=1e-5)
  assert int(excluded) == 5
  mean, _ = mean_over_defined(linear, defined)  # default: exclude
  _close(mean, expected[5:].mean(), tol=1e-5)
  mean, _ = mean_over_defined(linear, defined, empty="one")
  _close(mean, (expected[5:].sum() + 5) / len(expected), tol=1e-5)
  exp2 = mean_over_defined(ndcg_at_k(scores, labels, where=where, k=10), defined)[0]
  assert abs(float(exp2) - expected[5:].mean()) > 1e-3  # graded labels: gains differ


# ------------------------------------------------------- fast paths equal the general path


def _hostile_lists(seed: int, dtype, shape=(6, 5, 13)):
  """Scores with ties, ±0.0, ±inf, NaN, extremes and masks, in ``dtype``."""
  rng = np.random.default_rng(seed)
  scores = rng.choice(np.array([-2.0, -0.0, 0.0, 0.5, 0.5, 1.0, 3.0, np.inf, -np.inf, np.nan,
                                1e4, -1e4], np.float32), size=shape)
  scores = np.where(rng.random(shape) < 0.4, rng.normal(size=shape), scores)
  where = rng.random(shape) < 0.7
  where[0, 0] = False  # an all-masked list
  labels = rng.integers(0, 4, size=shape).astype(np.float32)
  return jnp.asarray(scores, dtype), jnp.asarray(where), jnp.asarray(labels)


def _reference_ranks(scores: np.ndarray, where: np.ndarray) -> np.ndarray:
  """np.lexsort over (valid, not NaN, descending score, index): independent of the code."""
  out = np.zeros(scores.shape, np.int64)
  for idx in np.ndindex(scores.shape[:-1]):
    s, w = scores[idx].astype(np.float64), where[idx]
    nan = w & np.isnan(s)
    desc = np.where(w & ~nan, -s, 0.0)
    desc = np.where(desc == 0, 0.0, desc)
    order = np.lexsort((np.arange(len(s)), desc, nan, ~w))  # last key is the primary one
    out[idx][order] = np.arange(1, len(s) + 1)
  return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("seed", range(3))
def test_ranks_match_lexsort_reference(dtype, seed):
  scores, where, _ = _hostile_lists(seed, dtype)
  expected = _reference_ranks(np.asarray(scores.astype(jnp.float32)), np.asarray(where))
  np.testing.assert_array_equal(jax.jit(lambda s, w: ranks(s, where=w))(scores, where), expected)


@pytest.mark.parametrize("k", [1, 3, 13, 20])
@pytest.mark.parametrize("seed", range(3))
def test_static_cutoff_top_k_path_equals_traced_sort_path(k, seed):
  """A Python-int cutoff uses lax.top_k; a jnp cutoff uses the ranks. Same results."""
  scores, where, labels = _hostile_lists(seed, jnp.float32)
  traced = jnp.asarray(k)
  np.testing.assert_array_equal(top_m_mask(scores, where=where, m=k),
                                top_m_mask(scores, where=where, m=traced))
  for gain in ("exp2", "linear"):
    _close(dcg_at_k(scores, labels, where=where, k=k, gain=gain),
           dcg_at_k(scores, labels, where=where, k=traced, gain=gain))
    _close(ndcg_at_k(scores, labels, where=where, k=k, gain=gain),
           ndcg_at_k(scores, labels, where=where, k=traced, gain=gain))
  teacher = jnp.asarray(np.random.default_rng(seed + 7).normal(size=scores.shape), jnp.float32)
  _close(teacher_consistency_recall(scores, teacher, where=where, k=k, m=3),
         teacher_consistency_recall(scores, teacher, where=where, k=traced, m=jnp.asarray(3)))
