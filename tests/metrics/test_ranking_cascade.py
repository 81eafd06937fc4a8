"""precision@k (trec_eval's P_k) and the cascade (system) metrics, against independent NumPy
implementations written here and pytrec_eval; short lists are scored over their length."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytrec_eval

from prerank_jax.metrics import (cascade_ndcg_at_k, cascade_recall_at_k, cascade_top_k,
                                 ndcg_at_k, precision_at_k, recall_at_k)


# --------------------------------------------------------------- independent NumPy references

def np_order(scores, valid):
  """Valid indices by descending score, ties by the lower index (a Python sort)."""
  idx = [i for i in range(len(scores)) if valid[i]]
  return sorted(idx, key=lambda i: (-float(scores[i]), i))


def np_precision(scores, relevant, valid, k):
  top = np_order(scores, valid)[:k]
  return sum(bool(relevant[i]) for i in top) / k if k > 0 else 0.0


def np_dcg(order, labels, k, gain):
  g = (lambda y: 2.0 ** y - 1.0) if gain == "exp2" else (lambda y: y)
  return sum(g(float(labels[i])) / math.log2(r + 2) for r, i in enumerate(order[:k]))


def np_cascade(student, teacher, labels, relevant, valid, m, k, gain):
  survivors = np_order(student, valid)[:m]
  mask = np.zeros(len(student), bool)
  mask[survivors] = True
  final = np_order(teacher, mask)[:k]
  ideal_order = np_order(labels, valid)
  ideal = np_dcg(ideal_order, labels, k, gain)
  ndcg = np_dcg(final, labels, k, gain) / ideal if ideal > 0 else 0.0
  rel = [i for i in range(len(student)) if valid[i] and relevant[i]]
  recall = sum(i in final for i in rel) / len(rel) if rel else 0.0
  return ndcg, recall, set(final)


# --------------------------------------------------------------------------- closed forms

def test_precision_closed_form_and_short_list_denominator():
  scores = jnp.array([0.1, 0.9, 0.5])
  relevant = jnp.array([True, False, True])
  # Order d2, d3, d1: top-1 {d2}: 0; top-2 {d2, d3}: 1/2; top-5 of a 3-list: 2/5 (not 2/3).
  np.testing.assert_allclose(precision_at_k(scores, relevant, k=1), 0.0)
  np.testing.assert_allclose(precision_at_k(scores, relevant, k=2), 0.5)
  np.testing.assert_allclose(precision_at_k(scores, relevant, k=5), 0.4)
  np.testing.assert_allclose(precision_at_k(scores, relevant, k=0), 0.0)
  # Masked candidates neither count as retrieved nor as relevant: with d3 masked the
  # top 2 are d2, d1 (one relevant); with d1 masked too, 0 of 2.
  where = jnp.array([True, True, False])
  np.testing.assert_allclose(precision_at_k(scores, relevant, where=where, k=2), 0.5)
  where = jnp.array([False, True, False])
  np.testing.assert_allclose(precision_at_k(scores, relevant, where=where, k=2), 0.0)
  with pytest.raises(TypeError, match="bool"):
    precision_at_k(scores, jnp.array([1, 0, 1]), k=2)


def test_precision_matches_pytrec_eval_P_on_short_lists():
  rng = np.random.default_rng(0)
  Q, N = 12, 8
  lengths = rng.integers(1, N + 1, Q)  # many lists shorter than k = 5 and 10
  labels = rng.integers(0, 4, (Q, N))
  scores = np.stack([rng.permutation(N) for _ in range(Q)]).astype(np.float32)  # no ties
  valid = np.arange(N)[None, :] < lengths[:, None]
  qrels = {f"q{q}": {f"d{i}": int(labels[q, i]) for i in range(lengths[q])} for q in range(Q)}
  run = {f"q{q}": {f"d{i}": float(scores[q, i]) for i in range(lengths[q])} for q in range(Q)}
  res = pytrec_eval.RelevanceEvaluator(qrels, {"P_5", "P_10"}, relevance_level=2).evaluate(run)
  for k in (5, 10):
    got = np.asarray(precision_at_k(jnp.asarray(scores), jnp.asarray(labels >= 2),
                                    where=jnp.asarray(valid), k=k))
    want = [res[f"q{q}"][f"P_{k}"] for q in range(Q)]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_short_lists_are_scored_over_their_length():
  # A 3-candidate list at k = 10 equals the same list at k = 3 (NDCG over min(k, n)).
  scores, labels = jnp.array([0.1, 0.9, 0.5]), jnp.array([2.0, 0.0, 1.0])
  for gain in ("exp2", "linear"):
    np.testing.assert_allclose(ndcg_at_k(scores, labels, k=10, gain=gain),
                               ndcg_at_k(scores, labels, k=3, gain=gain), rtol=1e-6)
  relevant = labels >= 1
  np.testing.assert_allclose(recall_at_k(scores, relevant, k=10), 1.0)


def test_cascade_closed_form():
  # 5 candidates; truth y; the student keeps m = 3 of them, the teacher picks k = 2.
  y = jnp.array([3.0, 0.0, 2.0, 1.0, 0.0])
  student = jnp.array([0.1, 0.9, 0.8, 0.7, 0.0])   # keeps d1, d2, d3 (drops d0, the best)
  teacher = jnp.array([5.0, 0.0, 4.0, 3.0, 1.0])   # among survivors: d2, d3, d1
  final = cascade_top_k(student, teacher, m=3, k=2)
  np.testing.assert_array_equal(final, [False, False, True, True, False])
  dcg = (2 ** 2 - 1) / math.log2(2) + (2 ** 1 - 1) / math.log2(3)
  ideal = (2 ** 3 - 1) / math.log2(2) + (2 ** 2 - 1) / math.log2(3)
  np.testing.assert_allclose(cascade_ndcg_at_k(student, teacher, y, m=3, k=2), dcg / ideal,
                             rtol=1e-6)
  relevant = y >= 2
  np.testing.assert_allclose(cascade_recall_at_k(student, teacher, relevant, m=3, k=2), 0.5)
  # Keeping everything is the teacher on the full list.
  np.testing.assert_allclose(cascade_ndcg_at_k(student, teacher, y, m=5, k=2),
                             ndcg_at_k(teacher, y, k=2), rtol=1e-6)
  np.testing.assert_allclose(cascade_recall_at_k(student, teacher, relevant, m=5, k=2),
                             recall_at_k(teacher, relevant, k=2), rtol=1e-6)


@functools.partial(jax.jit, static_argnames=("k", "gain"))
def _all_cascade(student, teacher, labels, relevant, valid, m, *, k, gain):
  return (cascade_ndcg_at_k(student, teacher, labels, where=valid, m=m, k=k, gain=gain),
          cascade_recall_at_k(student, teacher, relevant, where=valid, m=m, k=k),
          cascade_top_k(student, teacher, where=valid, m=m, k=k),
          cascade_ndcg_at_k(student, teacher, labels, where=valid, m=3, k=k, gain=gain),
          cascade_ndcg_at_k(student, teacher, labels, where=valid, m=jnp.int32(3),
                            k=jnp.int32(k), gain=gain))


@pytest.mark.parametrize("seed, gain", [(0, "exp2"), (1, "linear")])
def test_cascade_matches_numpy_reference(seed, gain):
  rng = np.random.default_rng(seed)
  R, N = 16, 12
  student = rng.normal(size=(R, N)).astype(np.float32)
  student[:, ::3] = np.round(student[:, ::3])  # ties, resolved by the lower index
  teacher = rng.normal(size=(R, N)).astype(np.float32)
  teacher[:, 1::4] = 0.0
  labels = rng.integers(0, 4, (R, N)).astype(np.float32)
  valid = rng.random((R, N)) < 0.8
  valid[0] = False                                 # an all-masked list
  valid[1, 3:] = False                             # a list shorter than k
  relevant = labels >= 2
  m = rng.integers(1, N + 1, R).astype(np.int32)   # one keep size per list (traced path)
  for k in (3, 5):
    got_ndcg, got_rec, got_top, static, traced = jax.device_get(_all_cascade(
        student, teacher, labels, relevant, valid, m, k=k, gain=gain))
    for r in range(R):
      ndcg, rec, final = np_cascade(student[r], teacher[r], labels[r], relevant[r], valid[r],
                                    int(m[r]), k, gain)
      assert float(got_ndcg[r]) == pytest.approx(ndcg, abs=1e-6), (r, k)
      assert float(got_rec[r]) == pytest.approx(rec, abs=1e-6), (r, k)
      assert set(np.flatnonzero(got_top[r])) == final, (r, k)
    # Static (lax.top_k) cutoffs give the same values as traced ones.
    np.testing.assert_allclose(static, traced, atol=1e-6)


def test_cascade_masked_slots_cannot_leak_and_system_never_beats_ideal():
  rng = np.random.default_rng(7)
  student = rng.normal(size=(6, 9)).astype(np.float32)
  teacher = rng.normal(size=(6, 9)).astype(np.float32)
  labels = rng.integers(0, 3, (6, 9)).astype(np.float32)
  valid = np.ones((6, 9), bool)
  valid[:, -2:] = False
  junk = lambda x: np.where(valid, x, np.nan).astype(np.float32)
  a = cascade_ndcg_at_k(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(labels),
                        where=jnp.asarray(valid), m=4, k=3)
  b = cascade_ndcg_at_k(jnp.asarray(junk(student)), jnp.asarray(junk(teacher)),
                        jnp.asarray(junk(labels)), where=jnp.asarray(valid), m=4, k=3)
  np.testing.assert_array_equal(a, b)
  assert np.all(np.asarray(a) <= 1.0 + 1e-6) and np.all(np.isfinite(np.asarray(a)))
  # A perfect student (the truth) loses nothing against a perfect teacher.
  perfect = cascade_ndcg_at_k(jnp.asarray(labels), jnp.asarray(labels), jnp.asarray(labels),
                              where=jnp.asarray(valid), m=3, k=3)
  defined = (labels * valid).max(-1) > 0
  np.testing.assert_allclose(np.asarray(perfect)[defined], 1.0, rtol=1e-6)
