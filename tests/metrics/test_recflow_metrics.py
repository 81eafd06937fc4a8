"""prerank_jax.metrics.recflow against NumPy transcriptions of the published code.

The transcriptions below follow RecFlow-ICLR/RecFlow ``coarse/metrics.py::evaluate_recall``
and kwai/LCRON ``deep_components/metrics.py`` (``two_stage_recall``, ``calc_set_recall``,
``calc_ndcg_sklearn``, ``calc_kdt_mask``) line by line, with the model forward passes
replaced by given logits. Scores are continuous (no ties), as the published sorts break
ties arbitrarily.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from prerank_jax.metrics import recflow as rf

# The metrics under test, jit-compiled once per shape (eager dispatch compiles every
# primitive separately: several times slower on this CPU).
_STATIC = {"recflow_target_sums": ("ks",), "recflow_recall_at_k": ("k",),
           "recflow_ndcg_at_k": ("k",), "set_recall": ("m", "gt_num"),
           "joint_recall": ("first_keep", "second_keep", "gt_num"),
           "lcron_ndcg_at_k": ("k",), "lcron_kendall_tau": (), "protocol_metrics": ()}
J = type("Jitted", (), {name: staticmethod(jax.jit(getattr(rf, name), static_argnames=static))
                        for name, static in _STATIC.items()})


# --------------------------------------------------------------- transcriptions (NumPy)

def recflow_evaluate_recall(logits, labels, n_photos, target_top_k=(50, 100, 200)):
  """RecFlow's evaluate_recall over one loader pass: [B, 500] logits/labels, [B] counts."""
  total_target_cnt = 0.0
  target_recall_lst = [0.0 for _ in target_top_k]
  target_ndcg_lst = [0.0 for _ in target_top_k]
  for i in range(n_photos.shape[0]):
    n_photo = n_photos[i]
    logit = logits[i, :n_photo]
    label = labels[i, :n_photo]
    logit_descending_index = np.argsort(logit * -1.0)
    logit_descending_rank = np.argsort(logit_descending_index)
    if np.sum(label) > 0 and np.sum(label) != n_photo:
      target_pos_index = np.nonzero(label)[0]
      target_pos_rank = logit_descending_rank[target_pos_index]
      for j in range(len(target_top_k)):
        target_recall_lst[j] += np.sum(target_pos_rank < target_top_k[j])
        target_ndcg_lst[j] += np.sum((1.0 / np.log2(target_pos_rank + 2))
                                     * (target_pos_rank < target_top_k[j]))
      total_target_cnt += np.sum(label)
  recall = [target_recall_lst[j] / total_target_cnt for j in range(len(target_top_k))]
  ndcg = [target_ndcg_lst[j] / total_target_cnt for j in range(len(target_top_k))]
  return recall, ndcg


def lcron_two_stage_recall(recall_logits, prerank_logits, rank_index, mask,
                           recall_topk=30, prerank_topk=20, gt_num=10):
  labels = rank_index * mask
  recall_indices = np.argpartition(recall_logits, -recall_topk, axis=-1)[:, -recall_topk:]
  optimal_indices = np.argpartition(labels, -gt_num, axis=-1)[:, -gt_num:]
  set_recall = []
  for i in range(recall_logits.shape[0]):
    prerank_logits_in_recall = prerank_logits[i, recall_indices[i]]
    prerank_indices_in_recall = np.argpartition(prerank_logits_in_recall,
                                                -prerank_topk)[-prerank_topk:]
    final_indices = recall_indices[i][prerank_indices_in_recall]
    right_num = len(set(final_indices) & set(optimal_indices[i]))
    set_recall.append(float(right_num) / float(gt_num))
  set_recall = np.array(set_recall)
  return np.mean(set_recall), set_recall


def lcron_calc_set_recall(logits, rank_index, topk, support_m, mask):
  labels = rank_index * mask
  optimal_indices = np.argpartition(labels, -topk, axis=-1)[:, -topk:]
  select_indices = np.argpartition(logits, -support_m, axis=-1)[:, -support_m:]
  set_recall = []
  for pred, gt in zip(select_indices, optimal_indices):
    right_num = sum(1 for y in gt if y in pred)
    set_recall.append(float(right_num) / float(len(gt)))
  set_recall = np.array(set_recall)
  return np.mean(set_recall), set_recall


def lcron_calc_ndcg_sklearn(y_score, y_true, k=None):
  """calc_ndcg_sklearn with ignore_ties=False (scikit-learn's tie-averaged DCG)."""
  def tie_averaged_dcg(y_t, y_s, discount_cumsum):
    _, inv, counts = np.unique(-y_s, return_inverse=True, return_counts=True)
    ranked = np.zeros(len(counts))
    np.add.at(ranked, inv, y_t)
    ranked /= counts
    groups = np.cumsum(counts) - 1
    discount_sums = np.empty(len(counts))
    discount_sums[0] = discount_cumsum[groups[0]]
    discount_sums[1:] = np.diff(discount_cumsum[groups])
    return (ranked * discount_sums).sum()

  def dcg_sample_scores(y_t, y_s, k, ignore_ties):
    discount = 1 / (np.log(np.arange(y_t.shape[1]) + 2) / np.log(2))
    if k is not None:
      discount[k:] = 0
    if ignore_ties:
      ranking = np.argsort(y_s)[:, ::-1]
      ranked = y_t[np.arange(ranking.shape[0])[:, np.newaxis], ranking]
      return discount.dot(ranked.T)
    discount_cumsum = np.cumsum(discount)
    return np.asarray([tie_averaged_dcg(a, b, discount_cumsum) for a, b in zip(y_t, y_s)])

  gain = dcg_sample_scores(y_true, y_score, k, ignore_ties=False)
  normalizing_gain = dcg_sample_scores(y_true, y_true, k, ignore_ties=True)
  all_irrelevant = normalizing_gain == 0
  gain[all_irrelevant] = 0
  gain[~all_irrelevant] /= normalizing_gain[~all_irrelevant]
  return gain  # per request (LCRON returns the mean)


def lcron_calc_kdt_mask(logits, labels, mask):
  all_rst = []
  mask_bool = mask.astype(bool)
  for i in range(len(logits)):
    kdt, _ = stats.kendalltau(logits[i][mask_bool[i]], labels[i][mask_bool[i]])
    if not np.isnan(kdt):
      all_rst.append(kdt)
  return sum(all_rst) / len(all_rst) if all_rst else 0.0


# -------------------------------------------------------------------------------- worlds

def coarse_world(seed, requests=40, width=470):
  """RecFlow-style padded test lists: random lengths (some < 50), random targets, and some
  requests whose candidates are all targets or none."""
  rng = np.random.default_rng(seed)
  n_photos = rng.integers(5, width + 1, size=requests)
  n_photos[:3] = (7, 30, width)
  logits = rng.normal(size=(requests, width)).astype(np.float32)
  labels = (rng.random((requests, width)) < rng.uniform(0.02, 0.4, (requests, 1))).astype(
      np.float64)
  labels[3, :] = 1.0                      # all targets
  labels[4, :] = 0.0                      # no target
  labels[5, :n_photos[5]] = 1.0           # all targets among the valid, none in padding
  labels[6, :n_photos[6]] = 0.0
  labels[6, n_photos[6]:] = 1.0           # targets in the padding only
  valid = np.arange(width)[None, :] < n_photos[:, None]
  return logits, labels, n_photos, valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recflow_recall_and_ndcg_equal_the_transcription(seed):
  logits, labels, n_photos, valid = coarse_world(seed)
  recall, ndcg = recflow_evaluate_recall(logits, labels, n_photos)
  targets = jnp.asarray(labels > 0)
  for j, k in enumerate(rf.RECFLOW_KS):
    got_r = J.recflow_recall_at_k(jnp.asarray(logits), targets, where=jnp.asarray(valid), k=k)
    got_n = J.recflow_ndcg_at_k(jnp.asarray(logits), targets, where=jnp.asarray(valid), k=k)
    np.testing.assert_allclose(float(got_r), recall[j], rtol=1e-6)
    np.testing.assert_allclose(float(got_n), ndcg[j], rtol=1e-5)
  # The padding's garbage scores (NaN, inf) change nothing.
  dirty = np.where(valid, logits, np.nan)
  got = J.recflow_recall_at_k(jnp.asarray(dirty), targets, where=jnp.asarray(valid), k=50)
  np.testing.assert_allclose(float(got), recall[0], rtol=1e-6)


def test_recflow_skips_all_target_and_no_target_requests():
  logits, labels, n_photos, valid = coarse_world(0)
  _, _, count, kept = J.recflow_target_sums(jnp.asarray(logits), jnp.asarray(labels > 0),
                                             where=jnp.asarray(valid))
  kept = np.asarray(kept)
  assert not kept[3] and not kept[4] and not kept[5] and not kept[6]
  expected = [(0 < labels[i, :n].sum() < n) for i, n in enumerate(n_photos)]
  np.testing.assert_array_equal(kept, expected)
  assert float(np.asarray(count)[~kept].sum()) == 0.0
  # Nothing kept: 0, not NaN.
  none = J.recflow_recall_at_k(jnp.zeros((2, 4)), jnp.zeros((2, 4), bool), k=2)
  assert float(none) == 0.0


def test_recflow_ndcg_closed_form_is_not_ndcg():
  # Two targets ranked first and second of three: Σ 1/log2(r+2) over r = 0, 1, divided
  # by 2 targets; an NDCG would be 1.
  scores = jnp.array([[3.0, 2.0, 1.0]])
  targets = jnp.array([[True, True, False]])
  expected = (1.0 + 1.0 / math.log2(3.0)) / 2.0
  assert float(J.recflow_ndcg_at_k(scores, targets, k=50)) == pytest.approx(expected)
  assert float(J.recflow_recall_at_k(scores, targets, k=1)) == pytest.approx(0.5)


def test_recflow_pools_targets_not_requests():
  # Request A: 1 of 1 target in the top 1; request B: 0 of 3 targets in the top 1.
  # Pooled recall = 1 / 4 (a per-request mean would be 1/2).
  scores = jnp.array([[2.0, 1.0, 0.0, -1.0], [0.0, 1.0, 2.0, 3.0]])
  targets = jnp.array([[True, False, False, False], [True, True, True, False]])
  assert float(J.recflow_recall_at_k(scores, targets, k=1)) == pytest.approx(0.25)


def test_recflow_masking_equals_slicing_and_vmap_equals_loop():
  logits, labels, n_photos, valid = coarse_world(3, requests=8, width=60)
  t = jnp.asarray(labels > 0)
  sums = J.recflow_target_sums(jnp.asarray(logits), t, where=jnp.asarray(valid))
  for i in (0, 7):  # one compile per list length: two lists are enough
    n = int(n_photos[i])
    one = J.recflow_target_sums(jnp.asarray(logits[i, :n]), t[i, :n])
    for a, b in zip(sums, one):
      np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b), rtol=1e-6)
  batched = jax.jit(jax.vmap(lambda s: rf.recflow_recall_at_k(s, t, where=jnp.asarray(valid),
                                                               k=50)))
  stacked = jnp.stack([jnp.asarray(logits), -jnp.asarray(logits)])
  loop = [J.recflow_recall_at_k(s, t, where=jnp.asarray(valid), k=50) for s in stacked]
  np.testing.assert_allclose(np.asarray(batched(stacked)), np.asarray(loop), rtol=1e-6)


def lcron_world(seed, requests=64, short=True):
  """LCRON's 40 candidates: 10 rank_pos (labels 30 - rank_index, rank_index 0..9), then
  rank_neg / coarse_neg / prerank_neg with LCRON's labels 7 / 6 / 5, plus continuous noise
  so that no two labels tie (argpartition would break ties arbitrarily). Some requests
  miss a few non-ground-truth candidates (masked, label 0 as rank_index * mask)."""
  rng = np.random.default_rng(seed)
  n = 40
  labels = np.concatenate([30.0 - rng.permutation(10)[None].repeat(requests, 0),
                           np.full((requests, 10), 7.0), np.full((requests, 10), 6.0),
                           np.full((requests, 10), 5.0)], axis=1)
  labels = labels + rng.uniform(0, 0.5, labels.shape)
  mask = np.ones((requests, n), np.int8)
  if short:
    for i in range(0, requests, 3):
      missing = rng.integers(1, 11)   # at least 30 valid: the first stage keeps only real rows
      mask[i, n - missing:] = 0
  first = rng.normal(size=(requests, n)) + 0.05 * labels
  second = rng.normal(size=(requests, n)) + 0.2 * labels
  return labels, mask, first, second


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_recall_equals_lcron_two_stage_recall(seed):
  labels, mask, first, second = lcron_world(seed)
  valid = mask.astype(bool)
  # LCRON scores its padding rows too; a pre-ranker that masks them scores them lowest.
  lo = -1e9
  _, expected = lcron_two_stage_recall(np.where(valid, first, lo), np.where(valid, second, lo),
                                       labels, mask)
  got = J.joint_recall(jnp.asarray(first), jnp.asarray(second), jnp.asarray(labels),
                        where=jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)
  # The same after LCRON's shuffle of the last axis (a permutation changes nothing).
  perm = np.random.default_rng(seed).permutation(40)
  got_p = J.joint_recall(jnp.asarray(first[:, perm]), jnp.asarray(second[:, perm]),
                          jnp.asarray(labels[:, perm]), where=jnp.asarray(valid[:, perm]))
  np.testing.assert_allclose(np.asarray(got_p), expected, rtol=1e-6)


@pytest.mark.parametrize("m", [20, 30])
def test_set_recall_equals_lcron_calc_set_recall(m):
  labels, mask, first, _ = lcron_world(2)
  valid = mask.astype(bool)
  _, expected = lcron_calc_set_recall(np.where(valid, first, -1e9), labels, topk=10,
                                      support_m=m, mask=mask)
  got = J.set_recall(jnp.asarray(first), jnp.asarray(labels), where=jnp.asarray(valid), m=m)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_joint_recall_closed_forms():
  labels = jnp.arange(40.0)[::-1][None]            # candidate i has label 39 - i: gt = 0..9
  perfect = jnp.arange(40.0)[::-1][None]
  assert float(J.joint_recall(perfect, perfect, labels)[0]) == 1.0
  # The first stage keeps 30 candidates 10..39 only: nothing of the ground truth survives.
  worst = jnp.arange(40.0)[None]
  assert float(J.joint_recall(worst, perfect, labels)[0]) == 0.0
  # The first stage is perfect, the second keeps 20 of the 30 survivors in reverse: the
  # survivors are 0..29, the second keeps 10..29: none of 0..9.
  assert float(J.joint_recall(perfect, worst, labels)[0]) == 0.0
  # First keeps 0..29; second ranks 5..24 highest: 5 of the 10 ground-truth items survive.
  second = jnp.where((jnp.arange(40) >= 5) & (jnp.arange(40) < 25), 1.0, 0.0)[None]
  assert float(J.joint_recall(perfect, second, labels)[0]) == pytest.approx(0.5)


@pytest.mark.parametrize("ties", [False, True])
def test_lcron_ndcg_equals_calc_ndcg_sklearn(ties):
  labels, mask, first, _ = lcron_world(4, short=False)
  if ties:  # sklearn's tie averaging, which the transcription keeps
    first = np.round(first, 0)
    labels = np.floor(labels)
  expected = lcron_calc_ndcg_sklearn(first, labels, k=10)
  got = J.lcron_ndcg_at_k(jnp.asarray(first), jnp.asarray(labels), k=10)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)


def test_lcron_ndcg_masking_equals_slicing():
  labels, mask, first, _ = lcron_world(5)
  valid = mask.astype(bool)
  got = np.asarray(J.lcron_ndcg_at_k(jnp.asarray(first), jnp.asarray(labels),
                                      where=jnp.asarray(valid)))
  for i in range(len(first)):
    n = int(valid[i].sum())
    expected = lcron_calc_ndcg_sklearn(first[i:i + 1, :n], labels[i:i + 1, :n], k=10)
    np.testing.assert_allclose(got[i], expected[0], rtol=1e-5)


def test_lcron_kendall_tau_equals_calc_kdt_mask():
  labels, mask, first, _ = lcron_world(6)
  labels = np.floor(labels)                      # ties in the labels: τ-b
  first[1] = 0.5                                 # a constant row: scipy's NaN is dropped
  expected = lcron_calc_kdt_mask(first, labels, mask)
  got = J.lcron_kendall_tau(jnp.asarray(first), jnp.asarray(labels),
                             where=jnp.asarray(mask.astype(bool)))
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_protocol_metrics_columns_and_values():
  labels, mask, first, second = lcron_world(7)
  valid = jnp.asarray(mask.astype(bool))
  targets = jnp.asarray(labels >= 20) & valid
  out = J.protocol_metrics(jnp.asarray(first), targets=targets, graded=jnp.asarray(labels),
                            second_scores=jnp.asarray(second), where=valid)
  assert sorted(out) == sorted(rf.protocol_metric_names("recflow"))  # jit sorts dict keys
  assert rf.protocol_metric_names("") == []
  with pytest.raises(ValueError, match="eval.protocol"):
    rf.protocol_metric_names("lcron_typo")
  assert all(np.isfinite(float(v)) for v in out.values())
  # Lists of 40: recall@50 keeps everything.
  assert float(out["recflow_recall@50"]) == pytest.approx(1.0)
  np.testing.assert_allclose(float(out["joint_recall@10@20"]),
                             float(jnp.mean(J.joint_recall(first, second, labels,
                                                            where=valid))))
