"""Cascade-aware distillation terms: the pre-ranker is judged by the set it passes on.

These terms are called like every distillation term, ``fn(student, teacher, *, where=valid,
...)``, and read the teacher (the downstream ranker) and, for FS-LTR, what the production
cascade did (exposure and clicks).

* :func:`fsltr_priority_loss`: pairwise logistic loss over cascade priority tiers.
* :func:`soft_recall_loss`: a differentiable Recall@(k, m) through NeuralSort.
* :func:`rankflow_loss`: RankFlow's student (upstream-stage) term.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from prerank_jax.metrics.ranking import keep_size, top_m_mask
from prerank_jax.reduce import ReduceFn, masked, safe_reduce

_NEG = -1e30  # a finite "minus infinity" (see distill._NEG)

# RankFlow's released code: ``torch.logit(p, eps=1e-6)`` clamps p to [1e-6, 1 − 1e-6],
# i.e. logits to ±log((1 − 1e-6)/1e-6); ``TopKLoss`` guards its log with γ = 1e-10.
RANKFLOW_LOGIT_CLIP = math.log((1.0 - 1e-6) / 1e-6)
RANKFLOW_TOPK_GAMMA = 1e-10


def fsltr_priority_loss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    labels: jnp.ndarray,
    exposed: jnp.ndarray,
    fsltr_topk: float | jnp.ndarray = 10.0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Pairwise logistic loss over the cascade's priority tiers (FS-LTR style).

  Definition:
    priority_i = 3 if clicked (exposed, y_i > 0)
                 2 elif exposed
                 1 elif in the teacher's top-K (K = ``fsltr_topk``, over valid candidates)
                 0 otherwise
    pairs = {(i, j) valid : priority_i > priority_j}
    ℓ_list = Σ_{(i,j) ∈ pairs} log(1 + exp(−(s_i − s_j))) / |pairs|
    loss = mean of ℓ_list over lists with at least one pair        (``jnp.mean``)

  The tiers encode how far a candidate got through the cascade (clicked > shown >
  would have been passed on by the ranker > dropped), so the pre-ranker learns from the
  whole stage-wise outcome rather than only the exposed labels. Ties within a tier are
  not trained. Memory: one ``[..., N, N]`` pair matrix per list, O(R·N²).

  Unlike the FS-RankNet baseline in the LCRON code, which averages each tier's pairs
  separately and sums the tier losses, this averages over all pairs of a list at once.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen; only their top-K is used).
    where: ``[..., N]`` bool, valid candidates.
    labels: ``[..., N]`` graded labels (0 where not exposed).
    exposed: ``[..., N]`` bool, candidates the cascade showed.
    fsltr_topk: K ≥ 0, traced (0: no teacher tier).
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Zheng, Wang, Qin, et al. "Full Stage Learning to Rank: A Unified Framework for
    Multi-Stage Systems." WWW 2024. Burges et al. "Learning to Rank using Gradient
    Descent" (RankNet), ICML 2005.
  """
  exposed = exposed & where
  clicked = exposed & (masked(labels, exposed) > 0)
  teacher = jax.lax.stop_gradient(masked(teacher_scores, where))
  top = top_m_mask(teacher, where=where, m=fsltr_topk)
  priority = jnp.where(clicked, 3, jnp.where(exposed, 2, jnp.where(top, 1, 0)))
  s = masked(student_scores, where)
  pairs = (where[..., :, None] & where[..., None, :]
           & (priority[..., :, None] > priority[..., None, :]))
  diff = s[..., :, None] - s[..., None, :]
  num_pairs = jnp.sum(pairs, axis=(-2, -1))
  total = jnp.sum(jnp.where(pairs, jax.nn.softplus(-diff), 0.0), axis=(-2, -1))
  per_list = total / jnp.maximum(num_pairs, 1)
  return safe_reduce(per_list, where=num_pairs > 0, reduce_fn=reduce_fn)


def neuralsort(
    scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    tau: float | jnp.ndarray = 1.0,
) -> jnp.ndarray:
  """NeuralSort's relaxed permutation matrix of descending sort (Grover et al. 2019).

  Definition (over the n valid candidates of a list):
    A_ij = |s_i − s_j|,   b_i = Σ_j A_ij
    P̂[r, i] = softmax_i( ((n + 1 − 2r) · s_i − b_i) / τ ),   r = 1..N

  Row r is a distribution over which candidate sits at place r; as τ → 0 it tends to the
  hard permutation matrix (P̂[r, i] = [rank(s_i) = r]) for distinct scores. Masked
  candidates get probability 0 in every row; rows r > n are meaningless and must be
  ignored by the caller. The logits scale like n·Δs/τ, so for a fixed softness τ should
  grow with the list length and the score spread.

  Memory: the result and the ``[..., N, N]`` distance matrix are O(R·N²) floats per
  evaluation (4·R·N² bytes each in float32; e.g. R = 32, N = 100: 1.3 MB, N = 1000:
  128 MB), with a few such intermediates kept for the backward pass, and the sweep's vmap
  multiplies this by the number of points.

  Args:
    scores: ``[..., N]`` scores.
    where: ``[..., N]`` bool, valid candidates.
    tau: τ > 0, traced.

  Returns:
    ``[..., N, N]`` row-stochastic matrix, rows = places, columns = candidates.

  Reference:
    Grover, Wang, Zweig, Ermon. "Stochastic Optimization of Sorting Networks via
    Continuous Relaxations." ICLR 2019.
  """
  s = masked(scores, where)
  pair_valid = where[..., :, None] & where[..., None, :]
  b = jnp.sum(jnp.where(pair_valid, jnp.abs(s[..., :, None] - s[..., None, :]), 0.0),
              axis=-1)
  n = jnp.sum(where, axis=-1, keepdims=True).astype(s.dtype)  # [..., 1]
  place = jnp.arange(1, s.shape[-1] + 1, dtype=s.dtype)
  coef = n + 1.0 - 2.0 * place  # [..., N] over places
  logits = (coef[..., :, None] * s[..., None, :] - b[..., None, :]) / tau
  logits = jnp.where(where[..., None, :], logits, _NEG)
  return jax.nn.softmax(logits, axis=-1)


def soft_top_m(
    scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    m: float | jnp.ndarray,
    tau: float | jnp.ndarray = 1.0,
) -> jnp.ndarray:
  """Soft membership of each candidate in the top ``m``: the first m rows of P̂ summed.

  Definition:
    soft_top_m_i = Σ_{r ≤ m} P̂[r, i]   (0 for masked candidates)

  As τ → 0 this tends to ``top_m_mask`` (for distinct scores). ``m`` is applied as
  ``r <= m`` and may be traced, a scalar or per list ``[...]``.

  Returns:
    ``[..., N]`` soft memberships; Σ_i = min(m, N) (P̂'s columns need not sum to 1, so a
    single entry can exceed 1 at large τ).
  """
  p_hat = neuralsort(scores, where=where, tau=tau)
  place = jnp.arange(1, scores.shape[-1] + 1, dtype=jnp.float32)
  rows = place <= jnp.asarray(m, jnp.float32)[..., None]  # [..., N] over places
  return jnp.where(where, jnp.sum(jnp.where(rows[..., :, None], p_hat, 0.0), axis=-2), 0.0)


def soft_recall_loss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    recall_k: float | jnp.ndarray = 10.0,
    recall_keep_ratio: float | jnp.ndarray = 0.25,
    neuralsort_tau: float | jnp.ndarray = 1.0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Minus a differentiable Recall@(k, m) of the teacher's top-k in the student's top-m.

  Definition:
    m = clip(ceil(recall_keep_ratio · n_valid), 1, n_valid)    (``keep_size``)
    T_k = teacher's top-k valid candidates (ties by lower index)
    ℓ_list = −Σ_{i ∈ T_k} soft_top_m_i(s; τ) / |T_k|,   |T_k| = min(⌊k⌋, n_valid)
    loss = mean of ℓ_list over lists with a valid candidate    (``jnp.mean``)

  As τ → 0, −ℓ_list is exactly ``teacher_consistency_recall(s, t, k=k, m=m)`` (the
  metric the pre-ranker is judged by), so the loss lies near [−1, 0]. This is the
  "relaxed recall" of ARF / LCRON's per-stage loss without the log (ARF minimises
  −Σ log(soft_top_m_i + ε) over T_k). Memory: an ``[..., N, N]`` NeuralSort matrix,
  see :func:`neuralsort`.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen; only their top-k is used).
    where: ``[..., N]`` bool, valid candidates.
    recall_k: k ≥ 1, traced.
    recall_keep_ratio: in (0, 1], traced.
    neuralsort_tau: τ > 0, traced.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Grover et al. ICLR 2019 (NeuralSort). Wang et al. "Learning Cascade Ranking as One
    Network" (LCRON), 2025, and its ARF baseline.
  """
  teacher = jax.lax.stop_gradient(masked(teacher_scores, where))
  target = top_m_mask(teacher, where=where, m=recall_k)
  m = keep_size(where, keep_ratio=recall_keep_ratio)
  soft = soft_top_m(student_scores, where=where, m=m, tau=neuralsort_tau)
  count = jnp.sum(target, axis=-1)
  per_list = -jnp.sum(jnp.where(target, soft, 0.0), axis=-1) / jnp.maximum(count, 1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)


def rankflow_loss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    rankflow_topk: float | jnp.ndarray = 10.0,
    rankflow_beta: float | jnp.ndarray = 0.5,
    rankflow_space: str = "prob",
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """RankFlow's student term: the upstream stage learns from the downstream stage.

  Definition (f = σ for ``rankflow_space="prob"``; f(x) = clip(x, −L, L) for
  ``"logit"``, L = log((1 − 10⁻⁶)/10⁻⁶) ≈ 13.8155):
    top = the teacher's top-k valid candidates, rest = the other valid candidates
    Δ = mean_{i ∈ top} f(s_i) − mean_{j ∈ rest} f(s_j)
    ℓ_list = β · (−log(γ + σ(Δ))) + (1 − β) · mean_{i valid} (f(s_i) − f(t_i))²,
             γ = 10⁻¹⁰
    loss = mean of ℓ_list over lists with a valid candidate        (``jnp.mean``)

  The top-k term is 0 for lists where top or rest is empty. This is the authors'
  released code (``TopKLoss`` and ``MSELoss`` in ``_student_learning_epoch``,
  github.com/qinjr/RankFlow, ``code/joint_trainer.py`` and ``code/loss.py``): there the
  upstream ("student") stage is trained on its own candidate lists with
  α·TopK + (1 − α)·MSE against the next stage ("teacher"), k is the number of items the
  teacher stage passes on, and ``use_logit: False`` in the shipped configs means both
  terms act on probabilities (our default ``"prob"``). With ``use_logit: True`` the
  reference maps the models' probabilities back by ``torch.logit(p, eps=1e-6)``, which
  clamps p to [10⁻⁶, 1 − 10⁻⁶] first: the logits of both stages are clipped to ±L, and
  the student gets no gradient beyond the clip (``jnp.clip`` does the same). Both are
  reproduced here, as is the released guard γ (computed as −logaddexp(log σ(Δ), log γ),
  exact and overflow-free). Remaining differences (README, "Where we differ"): the
  reference's MSE averages over all items of the batch (equal to ours for equal-length
  lists), its top-k ties follow ``torch.argsort`` (ours: lower index first), and torch
  evaluates the clip in float32 through σ, so its upper bound rounds to about 13.802.
  RankFlow also trains each stage on its own logged data (the "self-learning" half);
  that is this project's ground-truth term, so only the student term is here.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
    where: ``[..., N]`` bool, valid candidates.
    rankflow_topk: k ≥ 1, traced.
    rankflow_beta: β in [0, 1], the weight of the top-k term against the MSE, traced
      (RankFlow's per-stage α; 0.5 for the pre-ranker in the released configs).
    rankflow_space: ``"prob"`` or ``"logit"``, static.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Qin, Zhu, Chen, Liu, Liu, Tang, Zhang, Yu, Zhang. "RankFlow: Joint Optimization of
    Multi-Stage Cascade Ranking Systems as Flows." SIGIR 2022.
  """
  if rankflow_space not in ("prob", "logit"):
    raise ValueError(f"loss.options.rankflow_space: must be 'prob' or 'logit', got "
                     f"{rankflow_space!r}")
  if rankflow_space == "prob":
    f = jax.nn.sigmoid
  else:
    f = lambda x: jnp.clip(x, -RANKFLOW_LOGIT_CLIP, RANKFLOW_LOGIT_CLIP)
  teacher = jax.lax.stop_gradient(masked(teacher_scores, where))
  fs, ft = f(masked(student_scores, where)), f(teacher)
  top = top_m_mask(teacher, where=where, m=rankflow_topk)
  rest = where & ~top
  n_top, n_rest = jnp.sum(top, axis=-1), jnp.sum(rest, axis=-1)
  mean_top = jnp.sum(jnp.where(top, fs, 0.0), axis=-1) / jnp.maximum(n_top, 1)
  mean_rest = jnp.sum(jnp.where(rest, fs, 0.0), axis=-1) / jnp.maximum(n_rest, 1)
  topk_term = jnp.where((n_top > 0) & (n_rest > 0),
                        -jnp.logaddexp(jax.nn.log_sigmoid(mean_top - mean_rest),
                                       math.log(RANKFLOW_TOPK_GAMMA)), 0.0)
  n_valid = jnp.sum(where, axis=-1)
  mse = jnp.sum(jnp.where(where, jnp.square(fs - ft), 0.0), axis=-1) / jnp.maximum(n_valid, 1)
  per_list = rankflow_beta * topk_term + (1.0 - rankflow_beta) * mse
  return safe_reduce(per_list, where=n_valid > 0, reduce_fn=reduce_fn)
