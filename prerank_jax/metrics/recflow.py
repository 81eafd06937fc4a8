"""The metrics of the two published pre-ranking protocols on RecFlow, as their code does them.

* **RecFlow's coarse-ranking benchmark** (RecFlow-ICLR/RecFlow, ``coarse/metrics.py``,
  ``evaluate_recall``): per request, the targets are the candidates with
  ``effective_view == 1``; requests whose candidates are all targets or none are skipped;
  the hits within the top k are **pooled over all targets of all kept requests** (not a
  per-request mean). Its "ndcg@k" divides the summed discounts of the targets in the top k
  by the number of targets, with no ideal-DCG normalisation: it is not NDCG, so it is named
  :func:`recflow_ndcg_at_k` here.
* **LCRON's two-stage cascade** (kwai/LCRON, ``deep_components/metrics.py``): the joint
  ``Recall@10@20`` (:func:`joint_recall`: the first stage keeps its top 30, the second its
  top 20 of those; the share of the 10 ground-truth candidates that survive both), each
  model's ``Recall@10@m`` (:func:`set_recall`), NDCG@10 with sklearn's tie averaging
  (:func:`lcron_ndcg_at_k`) and Kendall τ-b per request
  (:func:`prerank_jax.metrics.kendall_tau_b`, averaged over the requests where it is
  defined).

Deviations, all for masked (padding) candidates or ties, and stated in each docstring: the
published code sorts with ``np.argsort``/``np.argpartition``, so ties fall in an arbitrary
order; here ties go to the lower index (:func:`prerank_jax.metrics.ranks`). LCRON's arrays
hold model scores for its padding rows too (the padding is scored and may be selected);
here padding is never selected. On lists without ties whose valid candidates fill the cuts,
the values equal the published code's (tests/metrics/test_recflow_metrics.py compares them
with NumPy transcriptions of that code).

:func:`protocol_metrics` computes every column of both protocols for one model's scores;
the evaluation adds them to ``results.csv`` when ``config.eval.protocol == "recflow"``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from prerank_jax.metrics.classification import kendall_tau_b, kendall_tau_defined
from prerank_jax.metrics.ranking import cascade_top_k, mean_over_lists, ranks, top_m_mask

Array = jax.Array

RECFLOW_KS = (50, 100, 200)       # coarse/metrics.py: target_top_k
LCRON_GT_NUM = 10                 # two_stage_recall: gt_num
LCRON_FIRST_KEEP = 30             # two_stage_recall: recall_topk (the first stage keeps 30)
LCRON_SECOND_KEEP = 20            # two_stage_recall: prerank_topk (the second keeps 20)
LCRON_NDCG_K = 10                 # evaluate: top_k
PROTOCOLS = ("", "recflow")


def _valid(where: Optional[Array], shape) -> Array:
  if where is None:
    return jnp.ones(shape, jnp.bool_)
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"where must be a bool mask, got dtype {where.dtype}")
  return jnp.broadcast_to(where, shape)


def recflow_target_sums(scores: Array, targets: Array, *, where: Optional[Array] = None,
                        ks: Sequence[int] = RECFLOW_KS) -> tuple[Array, Array, Array, Array]:
  """Per-request sums of RecFlow's ``evaluate_recall``, before pooling.

  Definition (per list, over its valid candidates; rank r_i is 0-based by descending
  score, ties by lower index):
    kept    = 0 < |T| < n_valid,   T = {i valid : targets_i}
    hits_k  = kept · |{i ∈ T : r_i < k}|
    dcg_k   = kept · Σ_{i ∈ T, r_i < k} 1 / log2(r_i + 2)
    count   = kept · |T|

  Args:
    scores: ``[..., N]`` model scores.
    targets: bool ``[..., N]``: ``effective_view == 1`` in RecFlow's protocol.
    where: optional bool ``[..., N]`` valid (non-padding) candidates.
    ks: the static cut-offs k.

  Returns:
    ``(hits [..., len(ks)], dcg [..., len(ks)], count [...], kept [...] bool)``; hits and
    count are float32.

  References:
    RecFlow-ICLR/RecFlow, ``coarse/metrics.py::evaluate_recall`` (Liu et al., "RecFlow: An
    Industrial Full Flow Recommendation Dataset", ICLR 2025).
  """
  scores = jnp.asarray(scores)
  valid = _valid(where, scores.shape)
  targets = jnp.asarray(targets)
  if targets.dtype != jnp.bool_:
    raise TypeError(f"targets must be a bool mask, got dtype {targets.dtype}")
  targets = targets & valid
  n_valid = jnp.sum(valid, axis=-1)
  count = jnp.sum(targets, axis=-1)
  kept = (count > 0) & (count < n_valid)
  rank0 = (ranks(scores, where=valid) - 1).astype(jnp.float32)
  discount = 1.0 / jnp.log2(rank0 + 2.0)
  hits, dcg = [], []
  for k in ks:
    top = targets & (rank0 < k)
    hits.append(jnp.sum(top, axis=-1, dtype=jnp.float32))
    dcg.append(jnp.sum(jnp.where(top, discount, 0.0), axis=-1))
  keep = kept.astype(jnp.float32)
  return (jnp.stack(hits, -1) * keep[..., None], jnp.stack(dcg, -1) * keep[..., None],
          count.astype(jnp.float32) * keep, kept)


def _pooled(total: Array, count: Array) -> Array:
  denominator = jnp.sum(count)
  return jnp.where(denominator > 0, jnp.sum(total) / jnp.maximum(denominator, 1.0), 0.0)


def recflow_recall_at_k(scores: Array, targets: Array, *, where: Optional[Array] = None,
                        k: int) -> Array:
  """RecFlow's coarse-ranking recall@k, pooled over every target of every kept request.

  Definition:
    recflow_recall@k = Σ_requests hits_k / Σ_requests count
  with ``hits_k`` and ``count`` of :func:`recflow_target_sums` (requests with no target or
  only targets are skipped); 0 when no request is kept.

  Args:
    scores: ``[..., N]`` scores; every leading axis is pooled.
    targets: bool ``[..., N]`` targets (``effective_view == 1``).
    where: optional bool ``[..., N]`` valid candidates.
    k: the cut-off (static).

  Returns:
    A scalar in [0, 1].

  References:
    RecFlow-ICLR/RecFlow, ``coarse/metrics.py::evaluate_recall`` ("recall@k").

  >>> import jax.numpy as jnp
  >>> float(recflow_recall_at_k(jnp.array([[3., 2., 1.]]), jnp.array([[False, True, True]]),
  ...                           k=2))
  0.5
  """
  hits, _, count, _ = recflow_target_sums(scores, targets, where=where, ks=(k,))
  return _pooled(hits[..., 0], count)


def recflow_ndcg_at_k(scores: Array, targets: Array, *, where: Optional[Array] = None,
                      k: int) -> Array:
  """RecFlow's coarse-ranking "ndcg@k": discounted hits divided by the number of targets.

  Definition:
    recflow_ndcg@k = Σ_requests Σ_{i ∈ T, r_i < k} 1/log2(r_i + 2)  /  Σ_requests |T|
  (0-based ranks r_i; kept requests only, as :func:`recflow_target_sums`). There is no
  division by an ideal DCG, so a request with 5 targets can score at most
  Σ_{r<5} 1/log2(r+2) / 5 ≈ 0.59: this is not NDCG, and not comparable with it.

  Args:
    scores: ``[..., N]`` scores; every leading axis is pooled.
    targets: bool ``[..., N]`` targets.
    where: optional bool ``[..., N]`` valid candidates.
    k: the cut-off (static).

  Returns:
    A scalar in [0, 1].

  References:
    RecFlow-ICLR/RecFlow, ``coarse/metrics.py::evaluate_recall`` (its "ndcg@k").

  >>> import jax.numpy as jnp
  >>> round(float(recflow_ndcg_at_k(jnp.array([[3., 2., 1.]]),
  ...                               jnp.array([[True, True, False]]), k=2)), 4)
  0.8155
  """
  _, dcg, count, _ = recflow_target_sums(scores, targets, where=where, ks=(k,))
  return _pooled(dcg[..., 0], count)


def ground_truth_top(labels: Array, *, where: Optional[Array] = None,
                     gt_num: int = LCRON_GT_NUM) -> Array:
  """LCRON's ground-truth set: the ``gt_num`` valid candidates with the largest labels.

  Definition:
    gt(i) = [i valid] · [rank(labels_i) <= gt_num]   (ties by lower index)

  LCRON takes ``np.argpartition(rank_index * mask, -gt_num)``: the same set when the
  ``gt_num``-th and ``gt_num+1``-th largest labels differ and at least ``gt_num``
  candidates are valid (otherwise LCRON fills the set with padding rows, whose label is 0).

  Args:
    labels: ``[..., N]`` graded labels (LCRON: ``max_rank_index - rank_index``).
    where: optional bool ``[..., N]`` valid candidates.
    gt_num: the size of the set (static).

  Returns:
    bool ``[..., N]``.

  References:
    kwai/LCRON, ``deep_components/metrics.py::calc_set_recall``, ``two_stage_recall``.
  """
  labels = jnp.asarray(labels, jnp.float32)
  return top_m_mask(labels, where=_valid(where, labels.shape), m=gt_num)


def set_recall(scores: Array, labels: Array, *, where: Optional[Array] = None, m: int,
               gt_num: int = LCRON_GT_NUM) -> Array:
  """LCRON's per-model ``Recall@gt_num@m``, per list.

  Definition:
    set_recall = |top_m(scores) ∩ gt| / gt_num
  with ``gt`` of :func:`ground_truth_top`; the denominator is ``gt_num`` even when fewer
  candidates are valid (as LCRON's).

  Args:
    scores: ``[..., N]`` model scores.
    labels: ``[..., N]`` graded labels.
    where: optional bool ``[..., N]`` valid candidates (padding is never selected; LCRON
      ranks its padding rows' scores too).
    m: how many the model keeps (static; LCRON: 30 for the first stage, 20 for the second).
    gt_num: the size of the ground truth (static).

  Returns:
    ``[...]`` values in [0, 1].

  References:
    kwai/LCRON, ``deep_components/metrics.py::calc_set_recall``.
  """
  scores = jnp.asarray(scores)
  valid = _valid(where, scores.shape)
  kept = top_m_mask(scores, where=valid, m=m)
  gt = ground_truth_top(labels, where=valid, gt_num=gt_num)
  return jnp.sum(kept & gt, axis=-1, dtype=jnp.float32) / gt_num


def joint_recall(first_scores: Array, second_scores: Array, labels: Array, *,
                 where: Optional[Array] = None, first_keep: int = LCRON_FIRST_KEEP,
                 second_keep: int = LCRON_SECOND_KEEP,
                 gt_num: int = LCRON_GT_NUM) -> Array:
  """LCRON's joint ``Recall@gt_num@second_keep`` of a two-stage cascade, per list.

  Definition:
    S1 = top_{first_keep}(first_scores),  S2 = top_{second_keep} of second_scores within S1
    joint_recall = |S2 ∩ gt| / gt_num
  with ``gt`` of :func:`ground_truth_top` (LCRON: the 10 ``rank_pos`` candidates).

  Args:
    first_scores: ``[..., N]`` the first stage (here the trained pre-ranker; LCRON's
      ``recall_logits``).
    second_scores: ``[..., N]`` the second stage (here the fixed ranker, the teacher;
      LCRON's ``prerank_logits``).
    labels: ``[..., N]`` graded labels.
    where: optional bool ``[..., N]`` valid candidates.
    first_keep, second_keep, gt_num: LCRON's 30, 20 and 10 (static).

  Returns:
    ``[...]`` values in [0, 1].

  References:
    kwai/LCRON, ``deep_components/metrics.py::two_stage_recall``; Wang et al., "Learning
    Cascade Ranking as One Network" (LCRON, ICML 2025).
  """
  first_scores = jnp.asarray(first_scores)
  valid = _valid(where, first_scores.shape)
  final = cascade_top_k(first_scores, second_scores, where=valid, m=first_keep,
                        k=second_keep)
  gt = ground_truth_top(labels, where=valid, gt_num=gt_num)
  return jnp.sum(final & gt, axis=-1, dtype=jnp.float32) / gt_num


def lcron_ndcg_at_k(scores: Array, labels: Array, *, where: Optional[Array] = None,
                    k: int = LCRON_NDCG_K) -> Array:
  """NDCG@k with linear gain and tie-averaged DCG, as LCRON's ``calc_ndcg_sklearn``.

  Definition (valid candidates only; discount d_p = 1/log2(p + 2) for 0-based positions
  p < k, else 0):
    DCG  = Σ_i y_i · mean_{p ∈ [a_i, a_i + c_i)} d_p,
           a_i = |{j : s_j > s_i}|,  c_i = |{j : s_j = s_i}|
    NDCG = DCG / IDCG,  IDCG = Σ_{p<k} d_p · y_(p)  (labels sorted descending); 0 if IDCG = 0
  Averaging the discounts over a tied group is McSherry & Najork's (2008) tie handling, as
  in scikit-learn's ``ndcg_score`` (``ignore_ties=False``). O(N log N) per list.

  Args:
    scores: ``[..., N]`` scores.
    labels: ``[..., N]`` graded labels (the gain).
    where: optional bool ``[..., N]`` valid candidates (LCRON scores every row).
    k: the cut-off (static).

  Returns:
    ``[...]`` NDCG values.

  References:
    kwai/LCRON, ``deep_components/metrics.py::calc_ndcg_sklearn``; McSherry & Najork,
    "Computing Information Retrieval Performance Measures Efficiently in the Presence of
    Tied Scores" (ECIR 2008).
  """
  scores = jnp.asarray(scores, jnp.float32)
  valid = _valid(where, scores.shape)
  labels = jnp.where(valid, jnp.asarray(labels, jnp.float32), 0.0)
  n = scores.shape[-1]
  position = jnp.arange(n + 1, dtype=jnp.float32)
  discount = jnp.where(position < k, 1.0 / jnp.log2(position + 2.0), 0.0)
  cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(discount)])  # [N + 2]
  # a_i and a_i + c_i by binary search in the sorted keys: O(N log N), no N x N.
  key = jnp.where(valid, -scores, jnp.inf)
  flat = key.reshape(-1, n)
  ordered = jnp.sort(flat, axis=-1)
  left = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))
  right = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))
  above = left(ordered, flat).reshape(key.shape)
  tied = right(ordered, flat).reshape(key.shape) - above
  tied = jnp.maximum(tied, 1)
  mean_discount = (cumulative[above + tied] - cumulative[above]) / tied
  dcg = jnp.sum(jnp.where(valid, labels * mean_discount, 0.0), axis=-1)
  ideal_order = ranks(labels, where=valid) - 1
  ideal = jnp.sum(jnp.where(valid, labels * discount[jnp.minimum(ideal_order, n)], 0.0),
                  axis=-1)
  return jnp.where(ideal != 0, dcg / jnp.where(ideal != 0, ideal, 1.0), 0.0)


def lcron_kendall_tau(scores: Array, labels: Array, *, where: Optional[Array] = None
                      ) -> Array:
  """LCRON's Kendall τ: τ-b per request over the valid candidates, averaged over the
  requests where it is defined (scipy gives NaN when either side is constant; LCRON drops
  those); 0 when none is.

  Args:
    scores: ``[..., N]`` scores.
    labels: ``[..., N]`` graded labels.
    where: optional bool ``[..., N]`` valid candidates.

  Returns:
    A scalar.

  References:
    kwai/LCRON, ``deep_components/metrics.py::calc_kdt_mask`` (``scipy.stats.kendalltau``).
  """
  scores = jnp.asarray(scores)
  valid = _valid(where, scores.shape)
  labels = jnp.asarray(labels, jnp.float32)
  return mean_over_lists(kendall_tau_b(scores, labels, where=valid),
                         where=kendall_tau_defined(scores, labels, where=valid))


def protocol_metric_names(protocol: str) -> list[str]:
  """The extra result columns of ``config.eval.protocol`` (``""``: none)."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"eval.protocol: must be one of {PROTOCOLS}, got {protocol!r}")
  if not protocol:
    return []
  names = [f"recflow_recall@{k}" for k in RECFLOW_KS]
  names += [f"recflow_ndcg@{k}" for k in RECFLOW_KS]
  names += [f"joint_recall@{LCRON_GT_NUM}@{LCRON_SECOND_KEEP}",
            f"lcron_recall@{LCRON_GT_NUM}@{LCRON_FIRST_KEEP}",
            f"lcron_recall@{LCRON_GT_NUM}@{LCRON_SECOND_KEEP}",
            f"lcron_ndcg@{LCRON_NDCG_K}", "lcron_kendall_tau"]
  return names


def protocol_metrics(scores: Array, *, targets: Array, graded: Array, second_scores: Array,
                     where: Array) -> dict[str, Array]:
  """Every column of :func:`protocol_metric_names` ("recflow") for one model's scores.

  Args:
    scores: ``[R, N]`` the model's scores (the first stage of the cascade).
    targets: bool ``[R, N]``: RecFlow's targets (``label > 0``: ``effective_view`` in the
      coarse protocol, membership of the ``rank_pos`` items in LCRON's).
    graded: ``[R, N]`` LCRON's graded labels (``batch.true_relevance``).
    second_scores: ``[R, N]`` the fixed second stage (the teacher).
    where: bool ``[R, N]`` valid candidates.

  Returns:
    ``{name: scalar}``: RecFlow's pooled recall and "ndcg" at 50/100/200; LCRON's joint
    recall (this model keeps 30, the second stage 20 of them), this model's Recall@10@30
    and Recall@10@20, NDCG@10 (means over requests) and Kendall τ against ``graded``.
  """
  hits, dcg, count, _ = recflow_target_sums(scores, targets, where=where, ks=RECFLOW_KS)
  out = {}
  for j, k in enumerate(RECFLOW_KS):
    out[f"recflow_recall@{k}"] = _pooled(hits[..., j], count)
  for j, k in enumerate(RECFLOW_KS):
    out[f"recflow_ndcg@{k}"] = _pooled(dcg[..., j], count)
  g = LCRON_GT_NUM
  out[f"joint_recall@{g}@{LCRON_SECOND_KEEP}"] = jnp.mean(
      joint_recall(scores, second_scores, graded, where=where))
  for m in (LCRON_FIRST_KEEP, LCRON_SECOND_KEEP):
    out[f"lcron_recall@{g}@{m}"] = jnp.mean(set_recall(scores, graded, where=where, m=m))
  out[f"lcron_ndcg@{LCRON_NDCG_K}"] = jnp.mean(lcron_ndcg_at_k(scores, graded, where=where))
  out["lcron_kendall_tau"] = lcron_kendall_tau(scores, graded, where=where)
  return out

