"""Tests for prerank_jax.metrics.classification: AUC, GAUC, Kendall τ-b.

Closed forms, masking equals slicing, vmap equals a loop, and cross-checks against
sklearn.metrics.roc_auc_score and scipy.stats.kendalltau (with ties).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as sklearn_metrics

from prerank_jax.metrics import auc
from prerank_jax.metrics import gauc
from prerank_jax.metrics import has_both_classes
from prerank_jax.metrics import kendall_tau_b
from prerank_jax.metrics import kendall_tau_defined
from prerank_jax.metrics import per_list_auc


def _close(actual, expected, tol=1e-6):
  np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- closed forms


def test_auc_closed_form_with_ties():
  scores = jnp.array([0.9, 0.8, 0.5, 0.5, 0.1])
  positive = jnp.array([True, False, True, False, False])
  # Positive 0.9 beats all 3 negatives; positive 0.5 loses to 0.8, ties 0.5, beats 0.1.
  _close(auc(scores, positive), (3 + 0 + 0.5 + 1) / 6)
  _close(per_list_auc(scores, positive), 0.75)
  _close(gauc(scores, positive), 0.75)
  # Perfect, reversed and all-tied rankings.
  _close(auc(jnp.array([3.0, 2.0, 1.0]), jnp.array([True, True, False])), 1.0)
  _close(auc(jnp.array([1.0, 2.0, 3.0]), jnp.array([True, True, False])), 0.0)
  _close(auc(jnp.zeros(4), jnp.array([True, False, True, False])), 0.5)


def test_auc_pooled_differs_from_gauc():
  # Each list is ranked perfectly, but list 0's scores sit below list 1's: pooling
  # compares a positive of list 0 (1.0) with a negative of list 1 (5.0).
  scores = jnp.array([[1.0, 0.0, 0.0], [6.0, 5.0, 5.0]])
  positive = jnp.array([[True, False, False], [True, False, False]])
  _close(per_list_auc(scores, positive), [1.0, 1.0])
  _close(gauc(scores, positive), 1.0)
  # Pairs: 2 positives × 4 negatives; only 1.0 < 5.0 (twice) is wrong.
  _close(auc(scores, positive), 6 / 8)


def test_gauc_weights_by_labelled_count_and_skips_one_class_lists():
  scores = jnp.array([[0.9, 0.1, 0.5, 0.0], [0.1, 0.9, 0.0, 0.0], [0.3, 0.2, 0.1, 0.0]])
  positive = jnp.array([[True, False, False, False], [True, False, False, False],
                        [False, False, False, False]])
  where = jnp.array([[True, True, True, True], [True, True, False, False],
                     [True, True, True, False]])
  # List 0: AUC 1 over 4 labelled; list 1: AUC 0 over 2 labelled; list 2: one class.
  _close(per_list_auc(scores, positive, where=where), [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(has_both_classes(positive, where=where), [True, True, False])
  _close(gauc(scores, positive, where=where), (4 * 1.0 + 2 * 0.0) / 6)
  _close(gauc(scores, positive, where=where, weights=jnp.ones(3)), 0.5)
  # The one-class list's weight is ignored even when given explicitly.
  _close(gauc(scores, positive, where=where, weights=jnp.array([1.0, 1.0, 100.0])), 0.5)


def test_undefined_auc_is_zero_never_nan():
  only_pos = jnp.array([True, True])
  _close(auc(jnp.array([1.0, 2.0]), only_pos), 0.0)
  _close(per_list_auc(jnp.array([1.0, 2.0]), only_pos), 0.0)
  _close(gauc(jnp.array([1.0, 2.0]), only_pos), 0.0)
  assert not bool(has_both_classes(only_pos))
  where = jnp.zeros(3, bool)
  nan = jnp.full(3, jnp.nan)
  for value in (auc(nan, jnp.ones(3, bool), where=where),
                per_list_auc(nan, jnp.ones(3, bool), where=where),
                gauc(nan, jnp.ones(3, bool), where=where)):
    assert np.isfinite(float(value)) and float(value) == 0.0


def test_auc_score_conventions():
  positive = jnp.array([True, False, True, False])
  # A valid NaN counts as -inf: it ties with a -inf negative and loses to everything else.
  _close(auc(jnp.array([jnp.nan, -jnp.inf, 1.0, 0.0]), positive), (0.5 + 0 + 1 + 1) / 4)
  _close(auc(jnp.array([jnp.inf, jnp.inf, -jnp.inf, -jnp.inf]), positive), 0.5)
  # -0.0 ties with +0.0.
  _close(auc(jnp.array([-0.0, 0.0, 0.0, -0.0]), positive), 0.5)
  # Integer (including extreme) and bool scores compare exactly.
  big = np.iinfo(np.int32).max
  _close(auc(jnp.array([big, big, -big, 0], jnp.int32), positive), (0.5 + 1 + 0 + 0) / 4)
  _close(auc(jnp.array([True, False, False, True]), positive), (1 + 0.5 + 0.5 + 0) / 4)


def test_class_mask_dtype_validation():
  with pytest.raises(TypeError, match="bool"):
    auc(jnp.zeros(3), jnp.array([1, 0, 1]))
  with pytest.raises(TypeError, match="bool"):
    gauc(jnp.zeros(3), jnp.array([True, False, True]), where=jnp.array([1, 1, 1]))


def test_kendall_tau_b_closed_forms():
  x = jnp.array([1.0, 2.0, 3.0])
  _close(kendall_tau_b(x, x), 1.0)
  _close(kendall_tau_b(x, -x), -1.0)
  # Pairs (0,1) and (0,2) concordant, (1,2) discordant: (2 - 1) / 3.
  _close(kendall_tau_b(x, jnp.array([1.0, 3.0, 2.0])), 1 / 3)
  # Ties: x ties pair (0,1); n0 = 3, n_x = 1, n_y = 0; S = 2.
  _close(kendall_tau_b(jnp.array([1.0, 1.0, 2.0]), x), 2 / math.sqrt(2 * 3))
  # The same weak order (monotone transform with ties) gives exactly 1.
  _close(kendall_tau_b(jnp.array([0.0, 0.0, 5.0, 7.0]), jnp.array([-3.0, -3.0, 1.0, 2.0])), 1.0)


def test_kendall_tau_undefined_lists():
  x = jnp.array([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  y = jnp.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
  where = jnp.array([[True] * 3, [True] * 3, [True] * 3, [True, False, False]])
  # Constant x, constant y, and a single valid candidate are undefined: 0.
  _close(kendall_tau_b(x, y, where=where), [-1.0, 0.0, 0.0, 0.0])
  np.testing.assert_array_equal(kendall_tau_defined(x, y, where=where),
                                [True, False, False, False])
  # Constant over the VALID candidates only: a masked outlier does not make it vary.
  where = jnp.array([True, True, False])
  assert not bool(kendall_tau_defined(jnp.array([1.0, 1.0, 9.0]), jnp.array([1.0, 2.0, 3.0]),
                                      where=where))
  nan = jnp.full((2, 3), jnp.nan)
  _close(kendall_tau_b(nan, nan, where=jnp.zeros((2, 3), bool)), [0.0, 0.0])
  # NaN counts as -inf: [nan, 1, 2] orders like [-inf, 1, 2].
  _close(kendall_tau_b(jnp.array([jnp.nan, 1.0, 2.0]), jnp.array([0.0, 1.0, 2.0])), 1.0)
  _close(kendall_tau_b(jnp.array([jnp.nan, -jnp.inf, 2.0]), jnp.array([0.0, 1.0, 2.0])),
         2 / math.sqrt(2 * 3))


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize("seed", range(4))
def test_masking_equals_slicing(seed):
  rng = np.random.default_rng(seed)
  n_valid, n_pad = int(rng.integers(2, 10)), int(rng.integers(1, 6))
  size = n_valid + n_pad
  scores = rng.integers(0, 4, n_valid).astype(np.float32)  # ties on purpose
  other = rng.integers(0, 3, n_valid).astype(np.float32)
  positive = rng.random(n_valid) < 0.5
  positive[0], positive[1] = True, False  # both classes
  where = np.zeros(size, bool)
  where[np.sort(rng.choice(size, n_valid, replace=False))] = True
  garbage = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 7.0], np.float32)

  def pad(x, fill):
    out = fill(size)
    out[where] = x
    return jnp.asarray(out)

  p_scores = pad(scores, lambda n: rng.choice(garbage, n).astype(np.float32))
  p_other = pad(other, lambda n: rng.choice(garbage, n).astype(np.float32))
  p_positive = pad(positive, lambda n: rng.random(n) < 0.5)
  w = jnp.asarray(where)
  s, o, pos = jnp.asarray(scores), jnp.asarray(other), jnp.asarray(positive)
  pairs = [
      (auc(p_scores, p_positive, where=w), auc(s, pos)),
      (per_list_auc(p_scores, p_positive, where=w), per_list_auc(s, pos)),
      (gauc(p_scores, p_positive, where=w), gauc(s, pos)),
      (kendall_tau_b(p_scores, p_other, where=w), kendall_tau_b(s, o)),
      (kendall_tau_defined(p_scores, p_other, where=w), kendall_tau_defined(s, o)),
      (has_both_classes(p_positive, where=w), has_both_classes(pos)),
  ]
  for i, (padded, sliced) in enumerate(pairs):
    assert np.all(np.isfinite(np.asarray(padded, np.float64))), i
    np.testing.assert_allclose(np.asarray(padded), np.asarray(sliced), rtol=1e-6, err_msg=i)


# ----------------------------------------------------------------------------- vmap / jit


def _random_lists(seed, batch=6, size=12, levels=5):
  rng = np.random.default_rng(seed)
  scores = jnp.asarray(rng.integers(0, levels, (batch, size)), jnp.float32)
  other = jnp.asarray(rng.normal(size=(batch, size)), jnp.float32)
  positive = jnp.asarray(rng.random((batch, size)) < 0.4)
  where = jnp.asarray(rng.random((batch, size)) < 0.8)
  return scores, other, positive, where


def _per_list(scores, other, positive, where):
  return jnp.stack([per_list_auc(scores, positive, where=where),
                    kendall_tau_b(scores, other, where=where),
                    has_both_classes(positive, where=where).astype(jnp.float32),
                    kendall_tau_defined(scores, other, where=where).astype(jnp.float32)],
                   axis=-1)


def test_vmap_and_batched_equal_python_loop():
  args = _random_lists(0)
  one_list = jax.jit(_per_list)
  loop = np.stack([one_list(*(a[i] for a in args)) for i in range(args[0].shape[0])])
  _close(jax.vmap(_per_list)(*args), loop)
  _close(_per_list(*args), loop)
  # Pooled metrics vmapped over a leading model axis equal one call per model.
  scores, _, positive, where = args
  models = jnp.stack([scores, -scores, jnp.zeros_like(scores), scores * 2 + 1])
  pooled = jax.jit(jax.vmap(lambda s: jnp.stack([auc(s, positive, where=where),
                                                 gauc(s, positive, where=where)])))(models)
  for i in range(models.shape[0]):
    _close(pooled[i], [auc(models[i], positive, where=where),
                       gauc(models[i], positive, where=where)])


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("seed, levels", [(0, 3), (1, 10), (2, 1000)])
def test_auc_matches_sklearn_pooled_with_ties(seed, levels):
  scores, _, positive, where = _random_lists(seed, batch=40, size=30, levels=levels)
  s, p, w = map(np.asarray, (scores, positive, where))
  expected = sklearn_metrics.roc_auc_score(p[w], s[w])
  _close(auc(scores, positive, where=where), expected, tol=1e-6)


def test_auc_matches_sklearn_on_a_large_pool():
  rng = np.random.default_rng(7)
  shape = (500, 100)  # the quickstart's test split
  positive = rng.random(shape) < 0.1
  scores = (rng.normal(size=shape) + positive).astype(np.float32)
  scores = np.round(scores, 2)  # many ties
  where = rng.random(shape) < 0.9
  expected = sklearn_metrics.roc_auc_score(positive[where], scores[where])
  _close(auc(jnp.asarray(scores), jnp.asarray(positive), where=jnp.asarray(where)),
         expected, tol=1e-5)


def test_gauc_matches_weighted_sklearn_loop():
  scores, _, positive, where = _random_lists(3, batch=60, size=15, levels=4)
  positive = positive.at[0].set(False).at[1].set(True)  # one-class lists
  s, p, w = map(np.asarray, (scores, positive, where))
  num, den, skipped = 0.0, 0.0, 0
  for i in range(s.shape[0]):
    labels = p[i][w[i]]
    if labels.all() or not labels.any():
      skipped += 1
      continue
    num += w[i].sum() * sklearn_metrics.roc_auc_score(labels, s[i][w[i]])
    den += w[i].sum()
  assert skipped >= 2
  _close(gauc(scores, positive, where=where), num / den, tol=1e-6)
  _close(int(jnp.sum(~has_both_classes(positive, where=where))), skipped)


@pytest.mark.parametrize("seed, levels", [(0, 3), (1, 6), (2, 10_000)])
def test_kendall_tau_b_matches_scipy_with_ties(seed, levels):
  rng = np.random.default_rng(seed)
  batch, size = 30, 20
  x = rng.integers(0, levels, (batch, size)).astype(np.float32)
  y = rng.integers(0, levels, (batch, size)).astype(np.float32)
  where = rng.random((batch, size)) < 0.8
  x[0], where[1, 2:] = 1.0, False  # a constant list and a 2-candidate list
  where[2, 1:] = False  # a single candidate
  ours = np.asarray(kendall_tau_b(jnp.asarray(x), jnp.asarray(y), where=jnp.asarray(where)))
  defined = np.asarray(kendall_tau_defined(jnp.asarray(x), jnp.asarray(y),
                                           where=jnp.asarray(where)))
  for i in range(batch):
    xi, yi = x[i][where[i]], y[i][where[i]]
    if len(xi) < 2 or len(set(xi)) < 2 or len(set(yi)) < 2:
      assert not defined[i] and ours[i] == 0.0, i  # scipy returns NaN here
      continue
    assert defined[i], i
    expected = stats.kendalltau(xi, yi, variant="b").statistic
    np.testing.assert_allclose(ours[i], expected, rtol=1e-5, atol=1e-6, err_msg=i)
  assert not defined[0] and not defined[2]


def test_kendall_tau_b_long_lists_match_scipy():
  """N = 1000: O(N²) time, O(N) memory per list (no [N, N] temporary)."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 1000)).astype(np.float32)
  y = (x + rng.normal(size=(2, 1000))).astype(np.float32)
  y[1] = np.round(y[1])  # heavy ties in one list
  ours = kendall_tau_b(jnp.asarray(x), jnp.asarray(y))
  expected = [stats.kendalltau(x[i], y[i]).statistic for i in range(2)]
  _close(ours, expected, tol=1e-5)
