"""Pairwise distillation on the teacher's order: RankNet on teacher pairs and soft pairs.

Pairs are built between "rows" i and "columns" j of a list. With ``pairwise_top = 0``
the rows are all N candidates (``[..., N, N]`` pair tensors). With ``pairwise_top = P > 0``
the rows are only the teacher's top P, gathered with ``lax.top_k`` (``[..., P, N]``), and
the kept pairs are exactly those whose teacher-preferred member is in the teacher's top
P. This keeps memory linear in N for lists of ~1,000 candidates
(``benchmarks/pairwise_memory.py`` measures it).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from prerank_jax.metrics.ranking import ranks
from prerank_jax.reduce import ReduceFn, masked, safe_reduce

PAIR_WEIGHTINGS = ("uniform", "teacher_gap", "delta_ndcg")


class _Pairs(NamedTuple):
  """Row (i) and column (j) views, broadcastable to ``[..., P, N]``."""

  s_i: jnp.ndarray
  s_j: jnp.ndarray
  t_i: jnp.ndarray
  t_j: jnp.ndarray
  rank_i: jnp.ndarray    # teacher rank ρ (1-based, ties by lower index)
  rank_j: jnp.ndarray
  valid_i: jnp.ndarray
  valid_j: jnp.ndarray
  index_i: jnp.ndarray   # list index of the row candidate, for gathering row features


def _pairs(s: jnp.ndarray, t: jnp.ndarray, where: jnp.ndarray, top: int) -> _Pairs:
  """Builds the row/column views; ``s`` and ``t`` are already masked."""
  if isinstance(top, bool) or not isinstance(top, int) or top < 0:
    raise ValueError(f"pairwise_top: must be an int >= 0, got {top!r}")
  n = where.shape[-1]
  rank = ranks(t, where=where)
  col = lambda x: x[..., None, :]
  if top == 0 or top >= n:
    index = jnp.broadcast_to(jnp.arange(n), where.shape)
    row = lambda x: x[..., :, None]
    return _Pairs(row(s), col(s), row(t), col(t), row(rank), col(rank), row(where),
                  col(where), index)
  # The teacher's top P by score (ties by lower index, as ``ranks``): top_k over −ρ.
  _, index = jax.lax.top_k(-rank, top)                                # [..., P]
  take = lambda x: jnp.take_along_axis(x, index, axis=-1)[..., :, None]
  return _Pairs(take(s), col(s), take(t), col(t), take(rank), col(rank), take(where),
                col(where), index)


def _inv_log2(rank: jnp.ndarray) -> jnp.ndarray:
  """1 / log2(1 + r): the teacher-rank gain and the DCG discount of a 1-based rank."""
  return 1.0 / jnp.log2(1.0 + rank.astype(jnp.float32))


def _per_list_weighted_mean(values, weights, reduce_fn):
  """Σ w·v / Σ w per list (0 where Σ w = 0), then reduced over lists with Σ w > 0."""
  num = jnp.sum(values * weights, axis=(-2, -1))
  den = jnp.sum(weights, axis=(-2, -1))
  has = den > 0
  per_list = jnp.where(has, num / jnp.where(has, den, 1.0), 0.0)
  return safe_reduce(per_list, where=has, reduce_fn=reduce_fn)


def ranknet_distill(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    pairwise_weighting: str = "uniform",
    pairwise_top: int = 0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """RankNet on the pairs the teacher orders, with pair weights and a temperature.

  Definition:
    pairs  Π = {(i, j) : i, j valid, t_i > t_j}   (teacher ties give no pair)
           with ``pairwise_top = P > 0``: only pairs with ρ_i ≤ P (ρ = teacher rank,
           ties by lower index), i.e. pairs between the teacher's top P and all others
    ℓ_ij = log(1 + exp(−(s_i − s_j) / T)) = softplus(−(s_i − s_j) / T)
    loss_list = Σ_Π w_ij · ℓ_ij / Σ_Π w_ij          (0 if Σ_Π w_ij = 0)
    loss = mean of loss_list over lists with Σ_Π w_ij > 0                 (``jnp.mean``)

  Where T enters: ONLY the student's score difference is divided by T (RankNet's
  σ = 1/T); the teacher defines the pairs (and, for ``teacher_gap``, weights that are
  not divided by T). There is no T or T² factor, so the gradient w.r.t. the scores is
  bounded by 1/T: a large T weakens the term. T is never silently ignored.

  Pair weights w_ij (``pairwise_weighting``, static), all stop-gradient:
    ``uniform``:     1
    ``teacher_gap``: |t_i − t_j|
    ``delta_ndcg``:  LambdaRank |ΔNDCG_ij| = |g_i − g_j| · |D(σ_i) − D(σ_j)|, with
                     gains from the TEACHER'S RANK g_i = 1 / log2(1 + ρ_i) (scale-free:
                     independent of the teacher's logit scale and of T), discount
                     D(r) = 1/log2(1 + r) at the STUDENT's current ranks σ (over the
                     whole valid list, ties by lower index), and no cutoff. The 1/IDCG
                     factor is a per-list constant that the normalisation by Σ w
                     cancels, so it is left out.

  Normalising by Σ w (not the pair count) makes every weighting a weighted mean of
  ℓ per list, so the loss scale does not depend on the list length or on the weighting.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes logits: the targets σ((t_i − t_j)/T) read pairwise differences (shift-
      invariant, scale matters); a rank enters as −rank, so a target is σ((r_j − r_i)/T).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, traced.
    pairwise_weighting: ``"uniform"``, ``"teacher_gap"`` or ``"delta_ndcg"`` (static).
    pairwise_top: P ≥ 0 (static); 0 = all pairs (``[..., N, N]``), 0 < P < N =
      ``[..., P, N]``; P ≥ N is the same as 0.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per-list losses ``[...]``).

  Returns:
    The reduced loss, or per-list losses ``[...]``.

  Reference:
    Burges et al. "Learning to Rank using Gradient Descent." ICML 2005 (RankNet);
    Burges, Ragno, Le. "Learning to Rank with Nonsmooth Cost Functions." NeurIPS 2006
    (LambdaRank |ΔNDCG|); ``rax.pairwise_logistic_loss``, ``rax.dcg_lambdaweight``.
  """
  if pairwise_weighting not in PAIR_WEIGHTINGS:
    raise ValueError(f"pairwise_weighting: must be one of {list(PAIR_WEIGHTINGS)}, "
                     f"got {pairwise_weighting!r}")
  s = masked(student_scores, where)
  t = jax.lax.stop_gradient(masked(teacher_scores, where))
  p = _pairs(s, t, where, pairwise_top)
  in_pair = p.valid_i & p.valid_j & (p.t_i > p.t_j)
  if pairwise_weighting == "uniform":
    w = jnp.ones(in_pair.shape, s.dtype)
  elif pairwise_weighting == "teacher_gap":
    w = jnp.abs(p.t_i - p.t_j)
  else:
    student_rank = ranks(jax.lax.stop_gradient(s), where=where)
    discount = _inv_log2(student_rank)
    d_i = jnp.take_along_axis(discount, p.index_i, axis=-1)[..., :, None]
    w = (jnp.abs(_inv_log2(p.rank_i) - _inv_log2(p.rank_j))
         * jnp.abs(d_i - discount[..., None, :]))
  w = jax.lax.stop_gradient(jnp.where(in_pair, w, 0.0))
  loss = jax.nn.softplus(-(p.s_i - p.s_j) / temperature)
  return _per_list_weighted_mean(loss, w, reduce_fn)


def soft_pairwise_distill(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    pairwise_top: int = 0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Soft pairwise distillation: BCE between teacher and student pair probabilities.

  Definition:
    pairs  Π = {(i, j) : i, j valid, ρ_i < ρ_j}  (every unordered valid pair once,
           ρ = teacher rank, ties by lower index); with ``pairwise_top = P > 0`` only
           pairs with ρ_i ≤ P
    p_ij = σ((t_i − t_j) / T),  d_ij = s_i − s_j
    ℓ_ij = BCE(p_ij, σ(d_ij)) = −p_ij log σ(d_ij) − (1 − p_ij) log σ(−d_ij)
         = softplus(d_ij) − p_ij · d_ij
    loss_list = mean of ℓ_ij over Π;  loss = mean over lists with |Π| > 0   (``jnp.mean``)

  Where T enters: ONLY the teacher's difference is divided by T (softer targets); the
  student's difference is not, so the student learns s_i − s_j → (t_i − t_j)/T and no
  T² factor is needed. BCE is symmetric under (i, j) ↔ (j, i), so counting each
  unordered pair once equals the mean over all ordered pairs. This is the cross-entropy
  form: it differs from the KL form by the teacher's pair entropy (a constant), so the
  value is not 0 at the optimum but the gradients are identical.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes logits: the targets σ((t_i − t_j)/T) read pairwise differences (shift-
      invariant, scale matters); a rank enters as −rank, so a target is σ((r_j − r_i)/T).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, traced.
    pairwise_top: P ≥ 0 (static); 0 = all pairs.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per-list losses ``[...]``).

  Returns:
    The reduced loss, or per-list losses ``[...]``.

  Reference:
    Burges et al. ICML 2005 (RankNet's cross-entropy with soft target probabilities
    P̄_ij); here the targets come from the teacher's scores.
  """
  s = masked(student_scores, where)
  t = jax.lax.stop_gradient(masked(teacher_scores, where))
  p = _pairs(s, t, where, pairwise_top)
  in_pair = p.valid_i & p.valid_j & (p.rank_i < p.rank_j)
  target = jax.nn.sigmoid((p.t_i - p.t_j) / temperature)
  d = p.s_i - p.s_j
  loss = jax.nn.softplus(d) - target * d
  return _per_list_weighted_mean(loss, in_pair.astype(s.dtype), reduce_fn)
