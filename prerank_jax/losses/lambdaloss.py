"""FS-LambdaLoss: LambdaLoss's NDCG-weighted pairwise logistic loss on the stage labels.

* :func:`lambdaloss`: LambdaLoss (NDCG lambda weights with a smooth fraction and a top-n
  truncation) on graded labels, exactly as kwai/LCRON's ``compute_lambda_loss``.
* :func:`fs_lambdaloss`: the same on the cascade's graded stage labels
  (``batch.true_relevance``), callable in the distillation slot of the objective (it reads
  no teacher: FS-LTR learns from what the cascade did, not from a model).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prerank_jax.reduce import ReduceFn, masked, safe_reduce

_NEG = -1e30  # a finite "minus infinity": padded candidates sort last
# LCRON's ``if smooth_fraction > 0.001``: below this the pair discount is u alone.
SMOOTH_FRACTION_FLOOR = 1e-3


def _discount(rank: jnp.ndarray) -> jnp.ndarray:
  """LCRON's (TF-Ranking's) ``rank_discount_fn``: 1 / ln(rank + 1), rank ≥ 1."""
  return 1.0 / jnp.log(rank + 1.0)


def lambdaloss(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray | None = None,
    lambdaloss_topn: float | jnp.ndarray = 30.0,
    lambdaloss_smooth_fraction: float | jnp.ndarray = 0.8,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """LambdaLoss with NDCG lambda weights on graded labels (LCRON's FS-LambdaLoss).

  Definition (per list, over valid candidates; D(r) = 1 / ln(r + 1)):
    r_i    = rank of s_i in descending order (1-based; ties by position)
    g_i    = y_i / IDCG,  IDCG = Σ_r y_(r) · D(r) over the labels sorted descending
             (the gain is the label itself, LCRON's ``use_rank_idx``; g = 0 if IDCG = 0)
    u_ij   = |D(|r_i − r_j|) − D(|r_i − r_j| + 1)|  if r_i ≠ r_j and min(r_i, r_j) ≤ n
    v_ij   = |D̃(r_i) − D̃(r_j)|,  D̃(r) = D(r) if r ≤ n else 0          (n = topn)
    δ_ij   = (1 − f)·u_ij + f·v_ij   (f = smooth fraction; u_ij alone when f ≤ 0.001)
    w_ij   = |g_i − g_j| · δ_ij                                  (no gradient)
    ℓ_ij   = BCE(s_i − s_j, [y_i > y_j]) = softplus(s_j − s_i) if y_i > y_j
                                           else softplus(s_i − s_j)
    ℓ_list = Σ over ORDERED pairs (i, j) of w_ij · ℓ_ij
    loss   = mean of ℓ_list over lists with a valid candidate       (``jnp.mean``)

  As LCRON's code: the sum runs over ordered pairs, so each pair with different labels
  counts twice (w and ℓ are symmetric), and pairs with equal labels have w = 0; σ = 1
  (no scale on s_i − s_j); lists are summed over pairs, then averaged over lists. Padded
  candidates (``where`` False) rank after every valid one and enter no pair or IDCG, so
  a masked list gives the loss of the list sliced to its valid candidates. Labels are
  expected ≥ 0 (a negative label would count as a gain below 0). Memory: O(R·N²).

  Args:
    scores: ``[..., N]`` logits.
    labels: ``[..., N]`` graded labels (the gain is the label itself).
    where: ``[..., N]`` bool, valid candidates (``None``: all).
    lambdaloss_topn: n ≥ 1, traced: ranks beyond n get no discount (LCRON: 30; the
      function's default there is 20).
    lambdaloss_smooth_fraction: f in [0, 1], traced (LCRON: 0.8; TF-Ranking's
      NDCGLambdaWeightV2 ``smooth_fraction``).
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Wang, Li, Golbandi, Bendersky, Najork. "The LambdaLoss Framework for Ranking Metric
    Optimization." CIKM 2018; Jagerman, Qin, Wang, Bendersky, Najork. "On Optimizing Top-K
    Metrics for Neural Ranking Models." SIGIR 2022 (the smooth fraction and top-n);
    Zheng et al. "Full Stage Learning to Rank." WWW 2024 (FS-LTR); kwai/LCRON
    ``deep_components/loss/two_stage/fs_lambdaloss.py`` (``compute_lambda_loss``), called
    with ``smooth_fraction=0.8, topn=30`` in ``run_train2.py``.
  """
  if where is None:
    where = jnp.ones(scores.shape, bool)
  labels = masked(labels, where).astype(scores.dtype)
  s = jnp.where(where, scores, _NEG)
  # 1-based ranks; a stable sort breaks ties by position and puts padding last.
  order = jnp.argsort(-jax.lax.stop_gradient(s), axis=-1, stable=True)
  ranks = (jnp.argsort(order, axis=-1, stable=True) + 1).astype(scores.dtype)

  ideal = -jnp.sort(-jnp.where(where, labels, _NEG), axis=-1)
  positions = jnp.arange(1, scores.shape[-1] + 1, dtype=scores.dtype)
  idcg = jnp.sum(jnp.where(ideal > _NEG / 2, ideal, 0.0) * _discount(positions), axis=-1,
                 keepdims=True)
  gain = labels * jnp.where(idcg > 0, 1.0 / jnp.where(idcg > 0, idcg, 1.0), 0.0)
  pair_gain = gain[..., :, None] - gain[..., None, :]

  topn = jnp.asarray(lambdaloss_topn, scores.dtype)
  f = jnp.asarray(lambdaloss_smooth_fraction, scores.dtype)
  rank_diff = jnp.abs(ranks[..., :, None] - ranks[..., None, :])
  in_top = (ranks[..., :, None] <= topn) | (ranks[..., None, :] <= topn)
  safe_diff = jnp.maximum(rank_diff, 1.0)
  u = jnp.where((rank_diff > 0) & in_top,
                jnp.abs(_discount(safe_diff) - _discount(safe_diff + 1.0)), 0.0)
  top_discount = jnp.where(ranks > topn, 0.0, _discount(ranks))
  v = jnp.abs(top_discount[..., :, None] - top_discount[..., None, :])
  pair_discount = jnp.where(f > SMOOTH_FRACTION_FLOOR, (1.0 - f) * u + f * v, u)

  pairs = where[..., :, None] & where[..., None, :]
  weight = jax.lax.stop_gradient(jnp.where(pairs, jnp.abs(pair_gain) * pair_discount, 0.0))
  diff = masked(scores, where)[..., :, None] - masked(scores, where)[..., None, :]
  above = labels[..., :, None] > labels[..., None, :]
  pair_loss = jnp.where(above, jax.nn.softplus(-diff), jax.nn.softplus(diff))
  per_list = jnp.sum(weight * pair_loss, axis=(-2, -1))
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)


def fs_lambdaloss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray | None = None,
    *,
    where: jnp.ndarray,
    relevance: jnp.ndarray | None,
    lambdaloss_topn: float | jnp.ndarray = 30.0,
    lambdaloss_smooth_fraction: float | jnp.ndarray = 0.8,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """FS-LambdaLoss: :func:`lambdaloss` on the cascade's graded stage labels.

  Definition:
    loss = lambdaloss(s, relevance; where, n, f)      (see :func:`lambdaloss`)

  The stage labels are ``batch.true_relevance`` as the RecFlow loader writes them: in
  the ``coarse`` protocol FS-LTR's priority (click 6 > realshow 5 > rank/rerank_pos 4 >
  rank/rerank_neg 3 > coarse_neg 2 > prerank_neg 1), in ``lcron`` LCRON's
  ``max_rank_index − rank_index``. It sits in the distillation slot of the objective
  (α·this + (1 − α)·GT) because it reads more than the exposed labels; the teacher's
  scores are not read.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ignored (the slot's signature).
    where: ``[..., N]`` bool, valid candidates.
    relevance: ``[..., N]`` graded stage labels ≥ 0.
    lambdaloss_topn, lambdaloss_smooth_fraction: as :func:`lambdaloss`.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None``.

  Raises:
    ValueError: naming ``batch.true_relevance`` when the batch has no stage labels.

  Reference:
    Zheng et al. "Full Stage Learning to Rank: A Unified Framework for Multi-Stage
    Systems." WWW 2024; kwai/LCRON's FS-LambdaLoss baseline (``fs_lambdaloss.py``).
  """
  del teacher_scores
  if relevance is None:
    raise ValueError("batch.true_relevance: loss.kd='fs_lambdaloss' needs the graded stage "
                     "labels (the RecFlow loader writes them in both protocols; the "
                     "simulator writes the graded truth), but the batch has none")
  return lambdaloss(student_scores, relevance, where=where,
                    lambdaloss_topn=lambdaloss_topn,
                    lambdaloss_smooth_fraction=lambdaloss_smooth_fraction,
                    reduce_fn=reduce_fn)
