"""Distillation terms: the student learns from the frozen teacher's logits.

The teacher sees every candidate, so these terms use the whole valid list (``where`` is
``valid``), unlike the ground-truth terms, which see only exposed candidates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from prerank_jax.reduce import ReduceFn, masked, safe_reduce

_NEG = -1e30  # a finite "minus infinity": keeps softmax and its gradient NaN-free


def _masked_log_softmax(logits: jnp.ndarray, where: jnp.ndarray) -> jnp.ndarray:
  logits = jnp.where(where, logits, _NEG)
  return jax.nn.log_softmax(logits, axis=-1)


# Taylor coefficients 1/(k+2)! of g(u) = (e^u − 1 − u)/u², highest first (Horner); ten
# terms keep the truncation below 1e-9 relative on |u| ≤ 1.
_G_COEFFS = tuple(1.0 / math.factorial(k + 2) for k in range(10, -1, -1))
_EXP_CAP = 80.0  # exp(80) ≈ 5.5e34: summing a list of these stays finite in float32


def _log_h_large(u: jnp.ndarray) -> jnp.ndarray:
  """log(e^u − 1 − u) for |u| ≥ 1, without overflow (two branches, clamped inputs)."""
  u_pos = jnp.maximum(u, 1.0)
  log_pos = u_pos + jnp.log1p(-(1.0 + u_pos) * jnp.exp(-u_pos))
  u_neg = jnp.minimum(u, -1.0)
  log_neg = jnp.log(-1.0 - u_neg + jnp.exp(u_neg))
  return jnp.where(u > 0, log_pos, log_neg)


def kl_divergence_nonnegative(
    log_p: jnp.ndarray,
    delta: jnp.ndarray,
    *,
    where: jnp.ndarray,
) -> jnp.ndarray:
  """KL(p ‖ q) for q_i ∝ p_i·e^{δ_i}, as a sum of non-negative terms (per list).

  Definition:
    δ̄ = Σ_i p_i δ_i,   u_i = δ_i − δ̄                  (so Σ_i p_i u_i = 0)
    h(u) = e^u − 1 − u ≥ 0
    KL(p ‖ q) = Σ_i p_i (log p_i − log q_i) = log Σ_i p_i e^{u_i}
              = log1p( Σ_i p_i · h(u_i) )

  Every term p_i·h(u_i) is ≥ 0 and log1p of a non-negative number is ≥ 0, so the value
  is non-negative by construction, with no clamping. It is also accurate where the
  textbook form Σ p (log p − log q) cancels catastrophically (near-equal distributions,
  e.g. any T ≫ 1): h(u) = u²·Σ_k u^k/(k+2)! is evaluated by its Taylor series for
  |u| ≤ 1, so a KL of 1e-9 keeps float32 relative precision. For |u| > 1 the term is
  exp(log p_i + log h(u_i)); if any such exponent exceeds 80 (KL of tens of nats), the
  sum is taken in log space instead (``softplus(logsumexp(...))``), which stays finite.

  Args:
    log_p: ``[..., N]`` log-probabilities of p (masked slots arbitrary but finite).
    delta: ``[..., N]`` δ = log-odds of q against p up to a per-list constant, e.g.
      (s − t)/T for q = softmax(s/T), p = softmax(t/T) (masked slots arbitrary, finite).
    where: ``[..., N]`` bool, the support of p and q.

  Returns:
    ``[...]`` KL per list, ≥ 0 (0 for a list with nothing valid).

  Reference:
    The identity KL = log E_p[e^{u}] with E_p[u] = 0 is the log-moment-generating form;
    h(u) = e^u − 1 − u is the Bregman divergence of exp (Banerjee et al., JMLR 2005).
  """
  p = jnp.where(where, jnp.exp(log_p), 0.0)
  delta = jnp.where(where, delta, 0.0)
  u = delta - jnp.sum(p * delta, axis=-1, keepdims=True)
  u = jnp.where(where, u, 0.0)
  small = jnp.abs(u) <= 1.0
  u_small = jnp.clip(u, -1.0, 1.0)
  g = jnp.zeros_like(u_small)
  for c in _G_COEFFS:
    g = g * u_small + c
  log_term_large = jnp.where(where, log_p, _NEG) + _log_h_large(u)
  too_big = jnp.any(where & ~small & (log_term_large > _EXP_CAP), axis=-1)
  term = jnp.where(small, p * jnp.square(u_small) * g,
                   jnp.exp(jnp.minimum(log_term_large, _EXP_CAP)))
  term = jnp.where(where, term, 0.0)
  linear = jnp.log1p(jnp.sum(term, axis=-1))
  # Log-space fallback for huge terms only; u = 0 is a −∞ log-term, kept finite so
  # neither branch's gradient can be NaN.
  u_nz = jnp.where(u_small == 0.0, 1.0, u_small)
  log_small = jnp.where(u_small == 0.0, _NEG,
                        2.0 * jnp.log(jnp.abs(u_nz)) + jnp.log(g))
  log_terms = jnp.where(where, jnp.where(small, jnp.where(where, log_p, _NEG) + log_small,
                                         log_term_large), _NEG)
  logspace = jax.nn.softplus(jax.nn.logsumexp(log_terms, axis=-1))
  return jnp.where(too_big, logspace, linear)


def hinton_listwise_kd(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    kd_temperature_squared: bool = True,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Listwise soft-target distillation with temperature (Hinton et al., 2015).

  Definition:
    p = softmax(t / T), q = softmax(s / T), both over the valid candidates of a list
    loss_list = T² · KL(p ‖ q) = T² · Σ_i p_i (log p_i − log q_i)
                (× 1 instead of T² when ``kd_temperature_squared=False``)
    loss = mean over lists with at least one valid candidate      (``jnp.mean``)

  T divides both teacher and student logits. The gradient of the KL w.r.t. ``s`` scales
  like 1/T², so the T² factor keeps the term's gradient magnitude comparable across
  temperatures (Hinton et al., Sec. 2), which is what makes mixing it with a
  ground-truth term at a fixed α meaningful while T is swept.

  Numerics: the KL is computed by :func:`kl_divergence_nonnegative` as
  log1p(Σ_i p_i·h(u_i)) with h(u) = e^u − 1 − u ≥ 0 and u_i = (s_i − t_i)/T centred
  under p, so it is ≥ 0 by construction and keeps float32 relative accuracy for T up
  to 100 and beyond (the textbook Σ p (log p − log q) cancels to a few 1e-7 absolute
  there and could come out negative). The value is the same function, so the gradient
  is the usual T·(q − p) (T²·(q − p)/T).

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen; no gradient flows to them).
      Assumes logits: softmax(t/T) reads only their differences within a list, and their
      scale sets the target's sharpness; a logged probability enters as its logit, a rank as
      −rank (``teacher.score_kind``).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, a traced scalar.
    kd_temperature_squared: static; ``False`` drops the T² factor (for the "with and
      without T² scaling" comparison).
    reduce_fn: reduction over lists (``jnp.mean``, ``jnp.sum``) or ``None`` for ``[...]``.

  Returns:
    The reduced loss, or per-list losses ``[...]`` (0 for lists with nothing valid).

  Reference:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network." 2015.
  """
  teacher_scores = jax.lax.stop_gradient(masked(teacher_scores, where))
  student_scores = masked(student_scores, where)
  log_p = _masked_log_softmax(teacher_scores / temperature, where)
  delta = (student_scores - teacher_scores) / temperature
  per_list = kl_divergence_nonnegative(log_p, delta, where=where)
  per_list = _temperature_factor(temperature, kd_temperature_squared) * per_list
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)


def _temperature_factor(temperature, squared: bool):
  """T² (Hinton's gradient-scale correction) or 1 (``kd_temperature_squared=False``)."""
  if not isinstance(squared, bool):
    raise ValueError(f"loss.options.kd_temperature_squared: must be True or False, got "
                     f"{squared!r}")
  return jnp.square(temperature) if squared else 1.0


def hinton_pointwise_kd(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    kd_temperature_squared: bool = True,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Pointwise (binary / CTR) soft-target distillation with temperature.

  Definition:
    p_i = σ(t_i / T),  ℓ_i = T² · BCE(p_i, σ(s_i / T)) = T² · (softplus(s_i/T) − p_i·s_i/T)
    loss = mean of ℓ_i over valid candidates                       (``jnp.mean``)
    (× 1 instead of T² when ``kd_temperature_squared=False``)

  This is the cross-entropy form; it differs from T²·KL(p ‖ σ(s/T)) by the teacher's
  entropy, a constant, so the gradients are identical. T² as in
  :func:`hinton_listwise_kd`.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes calibrated logits (log-odds): each σ(t_i/T) is a target probability, so their
      level matters; a logged probability enters as its logit (clipped), a rank as −rank,
      which is not calibrated (prefer an order-only loss for ranks).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, a traced scalar.
    kd_temperature_squared: static; ``False`` drops the T² factor.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss or per-candidate losses ``[..., N]``.
  """
  teacher_scores = jax.lax.stop_gradient(masked(teacher_scores, where))
  p = jax.nn.sigmoid(teacher_scores / temperature)
  s = masked(student_scores, where) / temperature
  factor = _temperature_factor(temperature, kd_temperature_squared)
  per_item = factor * (jax.nn.softplus(s) - p * s)
  return safe_reduce(per_item, where=where, reduce_fn=reduce_fn)


def logit_mse(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Logit regression onto the teacher (Ba & Caruana, 2014).

  Definition:
    ℓ_i = ½ (s_i − t_i)²,  loss = mean of ℓ_i over valid candidates

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes logits on the student's scale: their values are regressed, level and scale
      included; a rank enters as −rank.
    where: ``[..., N]`` bool, valid candidates.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss or per-candidate losses ``[..., N]``.

  Reference:
    Ba, Caruana. "Do Deep Nets Really Need to be Deep?" NeurIPS 2014.
  """
  teacher_scores = jax.lax.stop_gradient(masked(teacher_scores, where))
  per_item = 0.5 * jnp.square(masked(student_scores, where) - teacher_scores)
  return safe_reduce(per_item, where=where, reduce_fn=reduce_fn)
