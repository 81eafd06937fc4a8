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
      Assumes only an order: the loss reads the teacher's top-K set, unchanged by any
      increasing transform (a logged rank included).
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


SOFT_RECALL_FORMS = ("lcron", "arf", "linear")
_ROW_BLOCK = 128  # NeuralSort rows per block: memory O(R·128·N), whatever N and m are
_LOG_EPS = 1e-6   # the reference code's guard in −log(x + 1e-6)


def neuralsort_row_term(scores: jnp.ndarray, *, where: jnp.ndarray) -> jnp.ndarray:
  """NeuralSort's b_i = Σ_j |s_i − s_j| over the valid j, in O(N log N): no N×N matrix.

  Definition:
    sort the n valid scores descending, v_0 ≥ v_1 ≥ … ≥ v_{n−1}, P_k = Σ_{j<k} v_j,
    S = Σ_j v_j; then for the candidate at sorted place k
    b = (P_k − k·v_k) + ((n − k − 1)·v_k − (S − P_k − v_k))
      = Σ_{j<k} (v_j − v_k) + Σ_{j>k} (v_k − v_j)

  Args:
    scores: ``[..., N]`` scores.
    where: ``[..., N]`` bool, valid candidates.

  Returns:
    ``[..., N]`` b_i for valid i, 0 for masked slots.
  """
  s = masked(scores, where)
  order = jnp.argsort(jnp.where(where, -s, jnp.inf), axis=-1, stable=True)
  v = jnp.take_along_axis(s, order, axis=-1)
  valid_sorted = jnp.take_along_axis(where, order, axis=-1)
  v = jnp.where(valid_sorted, v, 0.0)
  before = jnp.cumsum(v, axis=-1) - v                       # P_k
  total = jnp.sum(v, axis=-1, keepdims=True)                # S
  n = jnp.sum(where, axis=-1, keepdims=True).astype(s.dtype)
  k = jnp.arange(s.shape[-1], dtype=s.dtype)
  b_sorted = (before - k * v) + ((n - k - 1.0) * v - (total - before - v))
  inverse = jnp.argsort(order, axis=-1)
  b = jnp.take_along_axis(b_sorted, inverse, axis=-1)
  return jnp.where(where, b, 0.0)


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

  This materialises the full ``[..., N, N]`` matrix (4·R·N² bytes in float32). The
  losses do not call it: :func:`soft_top_m` and :func:`soft_recall_loss` build the rows
  in blocks from :func:`neuralsort_row_term` (O(N log N)), with O(R·128·N) memory; this
  function is the readable reference they are tested against.

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


def neuralsort_split_columns(
    scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    m: float | jnp.ndarray,
    tau: float | jnp.ndarray = 1.0,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Column sums of NeuralSort's rows above and below place m, without an N×N matrix.

  Definition (P̂ as in :func:`neuralsort`, n valid candidates):
    up_i   = Σ_{r=1}^{min(m, n)} P̂[r, i]
    down_i = Σ_{r=m+1}^{n}       P̂[r, i]

  The rows are built 128 at a time from b = :func:`neuralsort_row_term` inside a
  rematerialised (``jax.checkpoint``) scan, so memory is O(R·128·N) in the forward and
  the backward pass whatever N and m are, and m may be traced; compute stays O(R·N²).

  Args:
    scores: ``[..., N]`` scores.
    where: ``[..., N]`` bool, valid candidates.
    m: the place split, a traced scalar or per list ``[...]``.
    tau: τ > 0, traced.

  Returns:
    ``(up, down)``, each ``[..., N]`` (0 at masked slots).
  """
  s = masked(scores, where)
  b = neuralsort_row_term(s, where=where)
  n = jnp.sum(where, axis=-1).astype(s.dtype)               # [...]
  m = jnp.broadcast_to(jnp.asarray(m, s.dtype), n.shape)
  size = s.shape[-1]
  block = min(size, _ROW_BLOCK)
  num_blocks = -(-size // block)

  @jax.checkpoint
  def block_sums(start):
    place = start + jnp.arange(1, block + 1, dtype=s.dtype)            # [C]
    coef = n[..., None] + 1.0 - 2.0 * place                            # [..., C]
    logits = (coef[..., :, None] * s[..., None, :] - b[..., None, :]) / tau
    p_hat = jax.nn.softmax(jnp.where(where[..., None, :], logits, _NEG), axis=-1)
    live = place <= n[..., None]                                       # [..., C]
    upper = live & (place <= m[..., None])
    lower = live & (place > m[..., None])
    up = jnp.sum(jnp.where(upper[..., :, None], p_hat, 0.0), axis=-2)
    down = jnp.sum(jnp.where(lower[..., :, None], p_hat, 0.0), axis=-2)
    return up, down

  def step(carry, start):
    up, down = block_sums(start)
    return (carry[0] + up, carry[1] + down), None

  zeros = jnp.zeros_like(s)
  starts = jnp.arange(num_blocks, dtype=s.dtype) * block
  (up, down), _ = jax.lax.scan(step, (zeros, zeros), starts)
  return jnp.where(where, up, 0.0), jnp.where(where, down, 0.0)


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
  ``r <= m`` and may be traced, a scalar or per list ``[...]``. Memory O(R·128·N)
  (:func:`neuralsort_split_columns`).

  Returns:
    ``[..., N]`` soft memberships; Σ_i = min(m, N) (P̂'s columns need not sum to 1, so a
    single entry can exceed 1 at large τ).
  """
  return neuralsort_split_columns(scores, where=where, m=m, tau=tau)[0]


def soft_recall_loss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    recall_k: float | jnp.ndarray = 10.0,
    recall_keep_ratio: float | jnp.ndarray = 0.25,
    neuralsort_tau: float | jnp.ndarray = 50.0,
    soft_recall_form: str = "lcron",
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """A differentiable Recall@(k, m) of the teacher's top-k in the student's top-m.

  Definition (shared):
    n = number of valid candidates, m = clip(ceil(recall_keep_ratio · n), 1, n)
    T_k = teacher's top-k valid candidates (ties by lower index), k = ``recall_k``
    P̂ = NeuralSort(s; τ) over the valid candidates (:func:`neuralsort`)
    up_i = Σ_{r ≤ m} P̂[r, i],  down_i = Σ_{m < r ≤ n} P̂[r, i]
    loss = mean of ℓ_list over lists with a valid candidate        (``jnp.mean``)

  ``soft_recall_form="lcron"`` (default; LCRON's per-stage loss L_single, identical to
  ARF-v2's L_relax, ``LsingleLoss`` in github.com/kwai/LCRON
  ``deep_components/loss/two_stage/lcron.py``):
    c_i = stop_gradient(up_i + down_i)                       (column normalisation)
    ℓ_list = [n > m] · (1/n) · ( Σ_{i ∈ T_k} −log(up_i/(c_i + ε) + ε)
                               + Σ_{i valid ∉ T_k} −log(down_i/(c_i + ε) + ε) ),  ε = 1e-6

  ``soft_recall_form="arf"`` (ARF's L_relax, ``LRelaxLoss`` in the same repository,
  ``arf.py``; no column normalisation, no second term):
    ℓ_list = [n > m] · (1/n) · Σ_{i ∈ T_k} −log(up_i/m + ε)

  ``soft_recall_form="linear"`` (this project's earlier form, kept as a mode):
    ℓ_list = −Σ_{i ∈ T_k} up_i / |T_k|,   |T_k| = min(⌊k⌋, n)
    As τ → 0, −ℓ_list is exactly ``teacher_consistency_recall(s, t, k=k, m=m)``.

  Reference temperatures: LCRON's released scripts train with τ = 50 (``lcron.sh``;
  the default here), ARF with τ = 200 (``compute_arf_metrics``). In the reference the
  ground-truth order is a near-hard NeuralSort (τ = 1e-4) of the cascade's rank index;
  here it is the teacher's hard top-k. Memory: O(R·128·N), no N×N matrix
  (:func:`neuralsort_split_columns`); compute O(R·N²).

  Remaining differences from the reference code (README, "Where we differ"): the
  reference's relaxed sort runs over the padded list (padding takes part in b and n,
  then is masked) and ``torch.mean`` divides by the padded length; here both use the
  valid candidates only, which agrees exactly when lists are full. In LCRON, k = m
  (``gt_num``); here k and m are separate hyperparameters.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen; only their top-k is used).
      Assumes only an order: the loss reads the teacher's top-k set, unchanged by any
      increasing transform (a logged rank included).
    where: ``[..., N]`` bool, valid candidates.
    recall_k: k ≥ 1, traced.
    recall_keep_ratio: in (0, 1], traced.
    neuralsort_tau: τ > 0, traced.
    soft_recall_form: ``"lcron"``, ``"arf"`` or ``"linear"`` (static).
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Grover et al. ICLR 2019 (NeuralSort). Wang et al. "Learning Cascade Ranking as One
    Network" (LCRON), ICML 2025, and its ARF baseline ("Adaptive Recall Field"), code
    github.com/kwai/LCRON.
  """
  if soft_recall_form not in SOFT_RECALL_FORMS:
    raise ValueError(f"loss.options.soft_recall_form: must be one of "
                     f"{list(SOFT_RECALL_FORMS)}, got {soft_recall_form!r}")
  teacher = jax.lax.stop_gradient(masked(teacher_scores, where))
  target = top_m_mask(teacher, where=where, m=recall_k)
  m = keep_size(where, keep_ratio=recall_keep_ratio)
  up, down = neuralsort_split_columns(student_scores, where=where, m=m, tau=neuralsort_tau)
  n = jnp.sum(where, axis=-1)
  if soft_recall_form == "linear":
    count = jnp.sum(target, axis=-1)
    per_list = -jnp.sum(jnp.where(target, up, 0.0), axis=-1) / jnp.maximum(count, 1)
  else:
    if soft_recall_form == "lcron":
      column = jax.lax.stop_gradient(up + down)
      up_terms = -jnp.log(up / (column + _LOG_EPS) + _LOG_EPS)
      down_terms = -jnp.log(down / (column + _LOG_EPS) + _LOG_EPS)
      terms = jnp.where(target, up_terms, jnp.where(where, down_terms, 0.0))
    else:
      terms = jnp.where(target, -jnp.log(up / m[..., None].astype(up.dtype) + _LOG_EPS),
                        0.0)
    per_list = jnp.sum(terms, axis=-1) / jnp.maximum(n, 1).astype(terms.dtype)
    per_list = jnp.where(n > m, per_list, 0.0)
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
      Assumes logits: the top-k term reads only their order, the MSE term their values
      (through σ with ``rankflow_space="prob"``, i.e. calibrated logits); a rank enters as
      −rank.
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
