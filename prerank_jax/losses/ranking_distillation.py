"""Ranking Distillation (Tang & Wang, KDD 2018), as the authors' reference code computes it.

The teacher's top-K candidates, excluding the ground-truth positives, are treated as
extra positives of a weighted pointwise log loss. Each position gets a static position
weight, and after a warm-up also a dynamic ranking-discrepancy weight that grows when the
student ranks the candidate below the teacher's position.

Reference implementation: github.com/graytowne/rank_distill (``distill_caser.py``,
``losses.weighted_sigmoid_log_loss``). What this module keeps and where it differs:

* w^a: ``exp(-r/λ)`` normalised to sum 1 over ``r = 1..K`` (as ``weight_static``).
* w^b: ``max(0, tanh(μ·(r̂ − r)))`` (as ``weight_dynamic``). The student's rank r̂ is
  taken over the same pool as the teacher's rank r: the list's valid candidates minus
  the ground-truth positives (the reference samples its rank-estimation items from
  "all items minus the user's rated items", the pool its teacher top-K is drawn from).
  The default is the exact rank in that pool (one sort); ``rd_rank_estimate="sampled"``
  is the reference's estimate: n items drawn uniformly with replacement from the pool
  (the candidate itself can be drawn, and never counts as higher),
  ``r̂ − 1 = floor(|pool| · #higher / n)``, compared with the 0-based teacher position
  ``r − 1`` (the reference's ``col``).
* hybrid w = w^a ⊙ w^b with **no renormalisation**: the reference has an L1
  renormalisation behind ``self._weight_renormalize``, which is hard-coded to ``False``.
* the hybrid weight switches on after ``dynamic_start_epoch`` epochs (the reference
  uses it when ``epoch_num > dynamic_start_epoch``, epochs counted from 1; its default
  is 10); here after ``rd_warmup_steps`` optimizer steps (``step >= rd_warmup_steps``,
  ``step`` = updates already made). The two agree for
  ``rd_warmup_steps = dynamic_start_epoch × steps_per_epoch``. Our default is 0 (hybrid
  from the first step), because a step count has no epoch-free default.
* K = 10, λ = 1, μ = 0.1 and n = 100 samples are the reference code's defaults (its
  ``--K``, ``--lamda``, ``--mu``, ``--num_dynamic_samples``) and ours.
* the reference's loss is ``GT + α·Σ_r w_r·(−log σ(s_r))`` (additive, α = ``teach_alpha``,
  default 1). The trainer here mixes ``α·KD + (1 − α)·GT`` instead, so the paper's
  ``α_paper`` corresponds to ``α = α_paper / (1 + α_paper)`` here, up to an overall
  factor ``1 + α_paper`` that rescales the learning rate (Adam is invariant to it);
  the paper's default α_paper = 1 is α = 0.5 here.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from prerank_jax.metrics.ranking import ranks
from prerank_jax.reduce import ReduceFn, masked, safe_reduce

RANK_ESTIMATES = ("exact", "sampled")


def position_weights(
    teacher_rank: jnp.ndarray,
    *,
    topk: float | jnp.ndarray,
    lam: float | jnp.ndarray,
) -> jnp.ndarray:
  """Position importance weights w^a of Ranking Distillation (Eq. 8).

  Definition:
    K = floor(topk)
    w^a_r = exp(−r/λ) / Σ_{r'=1..K} exp(−r'/λ)
          = exp(−(r − 1)/λ) · expm1(−1/λ) / expm1(−K/λ)          (closed form)

    for every position r (the caller keeps r ≤ K). The closed form of the geometric sum
    stays accurate for λ from 1e-3 to 1e6 and lets K be a traced value.

  Args:
    teacher_rank: ``[..., N]`` 1-based positions r in the teacher's order.
    topk: K ≥ 1, a traced scalar (floored).
    lam: λ > 0, a traced scalar.

  Returns:
    ``[..., N]`` float weights; they sum to 1 over positions 1..K.
  """
  k = jnp.floor(jnp.asarray(topk, jnp.float32))
  lam = jnp.asarray(lam, jnp.float32)
  r = teacher_rank.astype(jnp.float32)
  return jnp.exp(-(r - 1.0) / lam) * (jnp.expm1(-1.0 / lam) / jnp.expm1(-k / lam))


def sampled_ranks(
    scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    rng: jax.Array,
    num_samples: int,
) -> jnp.ndarray:
  """The reference code's sampled estimate of each candidate's rank within a pool.

  Definition (``distill_caser.py``, ``predicted_rank``), for each candidate i of a list
  whose pool is ``where``:
    draw n indices j_1..j_n uniformly with replacement from the pool (i itself included)
    c_i = |{m : s_{j_m} > s_i}|
    r̂_i = 1 + floor(|pool| · c_i / n)          (1-based; the reference's is r̂_i − 1)

  E[|pool|·c_i/n] = |{j ∈ pool : s_j > s_i}|, the exact 0-based rank without ties; the
  floor biases the estimate down by less than 1. The product |pool|·c_i is floored by
  integer division, exactly; the reference evaluates floor(N·(c/n)) in float32, which
  can round an exact multiple down by one. Lists with an empty pool get r̂ = 1. Slots
  outside the pool get an estimate against the pool (finite; callers mask them).

  Cost: ``[..., N, n]`` gathers and comparisons. The reference samples because its
  "list" is the whole item catalogue; on pre-ranking lists of a few thousand candidates
  the exact rank (one sort) is cheaper, exact, and the default.

  Args:
    scores: ``[..., N]`` scores (already masked by the caller).
    where: ``[..., N]`` bool, the pool ranked against (and sampled from).
    rng: a PRNG key.
    num_samples: n ≥ 1 (static).

  Returns:
    ``[..., N]`` float32 estimated 1-based ranks.
  """
  n_pool = jnp.sum(where, axis=-1, dtype=jnp.int32)                   # [...]
  # Pool members first, in index order: the u-th draw is order[u].
  order = jnp.argsort(~where, axis=-1, stable=True)                   # [..., N]
  shape = where.shape + (num_samples,)
  upper = jnp.maximum(n_pool, 1)[..., None, None]
  u = jax.random.randint(rng, shape, 0, upper, dtype=jnp.int32)
  picked = jnp.take_along_axis(order, u.reshape(where.shape[:-1] + (-1,)), axis=-1)
  sampled = jnp.take_along_axis(scores, picked, axis=-1).reshape(shape)
  higher = jnp.sum(sampled > scores[..., None], axis=-1, dtype=jnp.int32)
  rank0 = (n_pool[..., None] * higher) // num_samples
  return 1.0 + rank0.astype(jnp.float32)


def ranking_distillation_weights(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    labels: jnp.ndarray,
    exposed: jnp.ndarray,
    step: int | jnp.ndarray = 0,
    rng: Optional[jax.Array] = None,
    rd_topk: float | jnp.ndarray = 10.0,
    rd_lambda: float | jnp.ndarray = 1.0,
    rd_mu: float | jnp.ndarray = 0.1,
    rd_warmup_steps: float | jnp.ndarray = 0.0,
    rd_rank_estimate: str = "exact",
    rd_num_rank_samples: int = 100,
) -> jnp.ndarray:
  """The (stop-gradient) per-candidate weights w of :func:`ranking_distillation`.

  Definition:
    G = {i valid : exposed_i ∧ y_i > 0}            ground-truth positives (excluded)
    r_i = rank of t_i among valid candidates not in G (1-based, ties by lower index)
    C = {i valid, i ∉ G : r_i ≤ K},  K = floor(rd_topk)
    w^a_i = exp(−r_i/λ) / Σ_{r'=1..K} exp(−r'/λ)
    r̂_i = rank of s_i among the same pool (valid, not in G), exact (``ranks``, ties
          by lower index) or the reference's sampled estimate (:func:`sampled_ranks`)
    w^b_i = max(0, tanh(μ · (r̂_i − r_i)))
    w_i = [i ∈ C] · (w^a_i · w^b_i  if step ≥ rd_warmup_steps  else  w^a_i)

  Returns:
    ``[..., N]`` weights, 0 outside C, with no gradient.
  """
  if rd_rank_estimate not in RANK_ESTIMATES:
    raise ValueError(f"rd_rank_estimate: must be one of {list(RANK_ESTIMATES)}, "
                     f"got {rd_rank_estimate!r}")
  s = jax.lax.stop_gradient(masked(student_scores, where))
  t = jax.lax.stop_gradient(masked(teacher_scores, where))
  observed = where & exposed
  gt_positive = observed & (masked(labels, observed) > 0)
  pool = where & ~gt_positive
  teacher_rank = ranks(t, where=pool)
  chosen = pool & (teacher_rank.astype(jnp.float32) <= jnp.floor(
      jnp.asarray(rd_topk, jnp.float32)))
  w_a = position_weights(teacher_rank, topk=rd_topk, lam=rd_lambda)
  if rd_rank_estimate == "exact":
    student_rank = ranks(s, where=pool).astype(jnp.float32)
  else:
    if rng is None:
      raise ValueError("rd_rank_estimate='sampled' needs an rng key")
    student_rank = sampled_ranks(s, where=pool, rng=rng, num_samples=rd_num_rank_samples)
  w_b = jnp.maximum(0.0, jnp.tanh(jnp.asarray(rd_mu, jnp.float32)
                                  * (student_rank - teacher_rank.astype(jnp.float32))))
  hybrid = jnp.asarray(step, jnp.float32) >= jnp.asarray(rd_warmup_steps, jnp.float32)
  w = jnp.where(hybrid, w_a * w_b, w_a)
  return jax.lax.stop_gradient(jnp.where(chosen, w, 0.0))


def ranking_distillation(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    labels: jnp.ndarray,
    exposed: jnp.ndarray,
    step: int | jnp.ndarray = 0,
    rng: Optional[jax.Array] = None,
    rd_topk: float | jnp.ndarray = 10.0,
    rd_lambda: float | jnp.ndarray = 1.0,
    rd_mu: float | jnp.ndarray = 0.1,
    rd_warmup_steps: float | jnp.ndarray = 0.0,
    rd_rank_estimate: str = "exact",
    rd_num_rank_samples: int = 100,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Ranking Distillation: the teacher's top-K become weighted positives (Tang & Wang 2018).

  Definition:
    loss_list = Σ_{i ∈ C} w_i · (−log σ(s_i)) = Σ_i w_i · softplus(−s_i)
    loss = mean of loss_list over lists with at least one valid candidate  (``jnp.mean``)

    with C and the weights w from :func:`ranking_distillation_weights` (teacher top-K
    among valid non-ground-truth-positive candidates; position weight w^a normalised
    to sum 1 over positions 1..K; discrepancy weight w^b = max(0, tanh(μ(r̂ − r)));
    w = w^a·w^b after ``rd_warmup_steps`` steps and w^a before; r̂ ranks the student
    within the teacher's pool; no renormalisation of the hybrid, as in the reference
    code; w is stop-gradient).

    The paper's objective is GT + α_paper·loss; the trainer uses α·loss + (1 − α)·GT,
    so α = α_paper / (1 + α_paper) (module docstring). No temperature enters.

  Notes:
    * μ = 0 makes w^b = 0, so after warm-up the term vanishes; it does not mean
      "no discrepancy weighting" (use a warm-up longer than training for that).
    * With fewer than K candidates in the pool, only the existing positions get weight
      (Σ w^a < 1): the normaliser is over positions 1..K regardless of the list.
    * K, λ, μ and the warm-up are traced (top-K is ``rank <= K``), so a sweep over
      them is one compiled program. Non-integer K is floored.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes only an order: the loss reads the ranks of t, so any increasing transform (a
      logged rank as −rank, a probability as its logit) gives the same loss.
    where: ``[..., N]`` bool, valid candidates.
    labels: ``[..., N]`` graded labels (read only where ``exposed``).
    exposed: ``[..., N]`` bool, the label was observed.
    step: the optimizer step (int32 scalar), compared with ``rd_warmup_steps``.
    rng: PRNG key; needed only for ``rd_rank_estimate="sampled"``.
    rd_topk: K in [1, 1000], traced.
    rd_lambda: λ > 0, sharpness of the position weight, traced.
    rd_mu: μ ≥ 0, sharpness of the discrepancy weight, traced.
    rd_warmup_steps: steps before the discrepancy weight switches on, traced.
    rd_rank_estimate: ``"exact"`` or ``"sampled"`` (static).
    rd_num_rank_samples: n for the sampled estimate (static).
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per-list losses ``[...]``).

  Returns:
    The reduced loss, or per-list losses ``[...]`` (0 for lists with nothing valid).

  Reference:
    Tang, Wang. "Ranking Distillation: Learning Compact Ranking Models With High
    Performance for Recommender System." KDD 2018. Code: github.com/graytowne/rank_distill.
  """
  w = ranking_distillation_weights(
      student_scores, teacher_scores, where=where, labels=labels, exposed=exposed,
      step=step, rng=rng, rd_topk=rd_topk, rd_lambda=rd_lambda, rd_mu=rd_mu,
      rd_warmup_steps=rd_warmup_steps, rd_rank_estimate=rd_rank_estimate,
      rd_num_rank_samples=rd_num_rank_samples)
  s = masked(student_scores, where)
  per_item = jnp.where(w > 0, w * jax.nn.softplus(-s), 0.0)
  per_list = jnp.sum(per_item, axis=-1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)
