"""One sort per score vector (metrics.rank_list, ranking=) gives what every metric's own
sort gives; and the common-reference cascade metric oracle_sys_ndcg@k@r."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax import evaluate, metrics
from prerank_jax.batch import Batch

K, RATIOS, GRADE = 5, (0.1, 0.25, 0.5, 1.0), 2.0


def _random_batch(seed: int, *, R: int = 40, N: int = 24) -> tuple[Batch, np.ndarray, np.ndarray]:
  """Lists of 0..N valid candidates (some empty, some shorter than K), integer-valued scores
  (many ties), NaN and inf in masked slots, labels only where exposed."""
  rng = np.random.default_rng(seed)
  n = rng.integers(0, N + 1, R)
  n[:3] = (0, 1, K - 1)
  valid = np.zeros((R, N), bool)
  for q in range(R):  # valid candidates at random positions, not a prefix
    valid[q, rng.permutation(N)[:n[q]]] = True
  exposed = valid & (rng.random((R, N)) < 0.5)
  label = np.where(exposed, rng.integers(0, 3, (R, N)), 0).astype(np.float32)
  truth = rng.integers(0, 4, (R, N)).astype(np.float32)
  truth[~valid] = np.nan
  batch = Batch(context=np.zeros((R, 1), np.float32), items=np.zeros((R, N, 1), np.float32),
                cross=np.zeros((R, N, 1), np.float32), label=label, exposed=exposed,
                valid=valid, true_relevance=truth)
  scores = rng.integers(-3, 4, (3, R, N)).astype(np.float32)  # ties on purpose
  scores[0] += rng.normal(size=(R, N)).astype(np.float32)     # one model without ties
  scores[:, ~valid] = np.nan
  scores[2, ~valid] = np.inf
  teacher = rng.integers(0, 5, (R, N)).astype(np.float32) + 0.5 * rng.normal(size=(R, N))
  teacher = np.where(valid, teacher, np.nan).astype(np.float32)
  return batch, scores, teacher


@pytest.mark.parametrize("seed,gain,ndcg_empty", [(0, "exp2", "exclude"), (1, "linear", "one")])
def test_shared_sort_equals_the_per_metric_path(seed, gain, ndcg_empty):
  """Every column and count of the shared-sort evaluation equals the path where each
  metric sorts for itself, on lists with ties, masks, NaN/inf padding and padded lists."""
  batch, scores, teacher = _random_batch(seed)
  lists = np.arange(batch.num_requests) < batch.num_requests - 5  # 5 padding lists
  kw = dict(teacher_scores=teacher, k=K, keep_ratios=RATIOS, relevant_grade=GRADE, gain=gain,
            ndcg_empty=ndcg_empty, lists=lists, return_excluded=True)
  shared, shared_ex = jax.device_get(evaluate.evaluate_stacked(scores, batch, **kw))
  alone, alone_ex = jax.device_get(evaluate.evaluate_stacked(scores, batch, share_sorts=False,
                                                             **kw))
  assert set(shared) == set(alone) == set(evaluate.metric_names(k=K, keep_ratios=RATIOS))
  for name in shared:
    assert np.all(np.isfinite(shared[name])), name
    np.testing.assert_allclose(shared[name], alone[name], rtol=0, atol=1e-6, err_msg=name)
  for key in shared_ex:
    np.testing.assert_array_equal(shared_ex[key], alone_ex[key], err_msg=key)
  if seed:
    return
  # Without the truth: the same, and no truth columns.
  no_truth = batch._replace(true_relevance=None)
  a = jax.device_get(evaluate.evaluate_stacked(scores, no_truth, **{**kw, "return_excluded": False}))
  b = jax.device_get(evaluate.evaluate_stacked(scores, no_truth, share_sorts=False,
                                               **{**kw, "return_excluded": False}))
  assert set(a) == set(evaluate.metric_names(k=K, keep_ratios=RATIOS, has_truth=False))
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6, err_msg=name)


def test_each_metric_with_a_ranking_equals_its_own_sort():
  """The public metrics stay usable alone; with ranking= they give the same values (counts
  exactly, DCG to float32 rounding), for a static k and a traced per-list m."""
  batch, scores, teacher = _random_batch(3)
  s, valid, truth = scores[1], batch.valid, batch.true_relevance
  s = np.where(valid & (np.arange(s.shape[-1]) % 7 == 0), np.nan, s)  # valid NaN scores too
  relevant = valid & (np.nan_to_num(truth) >= GRADE)
  m = metrics.keep_size(valid, keep_ratio=0.3)
  rs, rt = metrics.rank_list(s, where=valid), metrics.rank_list(teacher, where=valid)
  ry = metrics.rank_list(truth, where=valid)
  np.testing.assert_array_equal(rs.ranks, metrics.ranks(s, where=valid))
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(rs.ranks), np.asarray(rs.order), -1),
                                np.broadcast_to(np.arange(1, s.shape[-1] + 1), s.shape))
  np.testing.assert_array_equal(rs.count, valid.sum(-1))
  exact = [
      (metrics.top_m_mask, (s,), dict(m=m), dict(ranking=rs)),
      (metrics.top_m_mask, (s,), dict(m=K), dict(ranking=rs)),
      (metrics.recall_at_k, (s, relevant), dict(k=K), dict(ranking=rs)),
      (metrics.recall_at_k, (s, relevant), dict(k=m), dict(ranking=rs)),
      (metrics.precision_at_k, (s, relevant), dict(k=K), dict(ranking=rs)),
      (metrics.reciprocal_rank, (s, relevant), {}, dict(ranking=rs)),
      (metrics.positive_retention, (s, batch.label), dict(exposed=batch.exposed, keep_ratio=0.5),
       dict(ranking=rs)),
      (metrics.cascade_top_k, (s, teacher), dict(m=m, k=K),
       dict(student_ranking=rs, teacher_ranking=rt)),
      (metrics.cascade_recall_at_k, (s, teacher, relevant), dict(m=m, k=K),
       dict(student_ranking=rs, teacher_ranking=rt)),
      (metrics.teacher_consistency_recall, (s, teacher), dict(k=K, m=m),
       dict(student_ranking=rs, teacher_ranking=rt)),
  ]
  for fn, args, kw, ranked in exact:
    np.testing.assert_array_equal(fn(*args, where=valid, **kw, **ranked),
                                  fn(*args, where=valid, **kw), err_msg=fn.__name__)
  rounded = [
      (metrics.dcg_at_k, (s, truth), dict(k=K), dict(ranking=rs)),
      (metrics.dcg_at_k, (s, truth), dict(k=m), dict(ranking=rs)),
      (metrics.ndcg_at_k, (s, truth), dict(k=K), dict(ranking=rs, ideal_ranking=ry)),
      (metrics.cascade_ndcg_at_k, (s, teacher, truth), dict(m=m, k=K),
       dict(student_ranking=rs, teacher_ranking=rt, ideal_ranking=ry)),
      (metrics.oracle_cascade_ndcg_at_k, (s, truth), dict(m=m, k=K),
       dict(student_ranking=rs, ideal_ranking=ry)),
  ]
  for fn, args, kw, ranked in rounded:
    np.testing.assert_allclose(fn(*args, where=valid, **kw, **ranked),
                               fn(*args, where=valid, **kw), rtol=0, atol=1e-6,
                               err_msg=fn.__name__)


def test_restrict_is_the_ranking_of_the_subset():
  batch, scores, _ = _random_batch(4)
  s, valid = scores[1], batch.valid
  subset = batch.exposed | (~valid & (np.arange(s.shape[-1]) % 2 == 0))  # stray bits outside
  got = metrics.restrict(metrics.rank_list(s, where=valid), subset)
  want = metrics.rank_list(s, where=subset & valid)
  for field in ("order", "ranks", "count"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def _np_oracle_sys_ndcg(s, truth, valid, r, k, gain):
  """Independent NumPy: keep the model's top ⌈r·n⌉ (ties by lower index), sort them by the
  truth, NDCG@k against the whole list's ideal; None where no valid candidate has grade > 0."""
  g = (lambda y: 2.0 ** y - 1.0) if gain == "exp2" else (lambda y: y)
  idx = np.flatnonzero(valid)
  n = len(idx)
  y = truth[idx]
  ideal = sorted(y, reverse=True)[:k]
  idcg = sum(g(v) / math.log2(j + 2) for j, v in enumerate(ideal))
  if idcg <= 0:
    return None
  m = int(np.clip(math.ceil(r * n - 1e-5 * max(r * n, 1.0)), 1, max(n, 1)))
  kept = sorted(range(n), key=lambda j: (-s[idx][j], j))[:m]
  final = sorted((y[j] for j in kept), reverse=True)[:k]
  return sum(g(v) / math.log2(j + 2) for j, v in enumerate(final)) / idcg


@pytest.mark.parametrize("gain", ["exp2", "linear"])
def test_oracle_sys_ndcg_matches_numpy_and_closed_forms(tiny_splits, gain):
  batch = tiny_splits["test"]
  rng = np.random.default_rng(5)
  truth, valid = np.asarray(batch.true_relevance), np.asarray(batch.valid)
  teacher = jnp.asarray(truth + rng.normal(size=valid.shape), jnp.float32)
  models = np.stack([rng.normal(size=valid.shape), truth + rng.normal(size=valid.shape),
                     truth]).astype(np.float32)
  values = jax.device_get(evaluate.evaluate_stacked(
      models, batch, teacher_scores=teacher, k=K, keep_ratios=RATIOS, relevant_grade=GRADE,
      gain=gain))
  for p in range(len(models)):
    for r in RATIOS:
      want = [v for q in range(batch.num_requests)
              if (v := _np_oracle_sys_ndcg(models[p, q], truth[q], valid[q], r, K, gain))
              is not None]
      got = values[f"oracle_sys_ndcg@{K}@{evaluate.keep_label(r)}"][p]
      assert got == pytest.approx(np.mean(want), abs=1e-5), (p, r)
    col = [values[f"oracle_sys_ndcg@{K}@{evaluate.keep_label(r)}"][p] for r in RATIOS]
    assert np.all(np.diff(col) >= -1e-6)  # keeping more never hurts the oracle cascade
    assert col[-1] == pytest.approx(1.0, abs=1e-6)  # keep everything: the ideal ranking
  # The truth as the pre-ranker keeps the best possible set at every keep ratio.
  for r in RATIOS:
    col = values[f"oracle_sys_ndcg@{K}@{evaluate.keep_label(r)}"]
    assert col[2] >= max(col[:2]) - 1e-6
  # A better pre-ranker keeps more of the truth than random noise does.
  assert values[f"oracle_sys_ndcg@{K}@25%"][1] > values[f"oracle_sys_ndcg@{K}@25%"][0]
