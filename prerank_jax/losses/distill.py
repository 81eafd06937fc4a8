"""Distillation terms: the student learns from the frozen teacher's logits.

The teacher sees every candidate, so these terms use the whole valid list (``where`` is
``valid``), unlike the ground-truth terms, which see only exposed candidates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prerank_jax.reduce import ReduceFn, masked, safe_reduce

_NEG = -1e30  # a finite "minus infinity": keeps softmax and its gradient NaN-free


def _masked_log_softmax(logits: jnp.ndarray, where: jnp.ndarray) -> jnp.ndarray:
  logits = jnp.where(where, logits, _NEG)
  return jax.nn.log_softmax(logits, axis=-1)


def hinton_listwise_kd(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Listwise soft-target distillation with temperature (Hinton et al., 2015).

  Definition:
    p = softmax(t / T), q = softmax(s / T), both over the valid candidates of a list
    loss_list = T² · KL(p ‖ q) = T² · Σ_i p_i (log p_i − log q_i)
    loss = mean over lists with at least one valid candidate      (``jnp.mean``)

  T divides both teacher and student logits. The gradient of the KL w.r.t. ``s`` scales
  like 1/T², so the T² factor keeps the term's gradient magnitude comparable across
  temperatures (Hinton et al., Sec. 2), which is what makes mixing it with a
  ground-truth term at a fixed α meaningful while T is swept.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen; no gradient flows to them).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, a traced scalar.
    reduce_fn: reduction over lists (``jnp.mean``, ``jnp.sum``) or ``None`` for ``[...]``.

  Returns:
    The reduced loss, or per-list losses ``[...]`` (0 for lists with nothing valid).

  Reference:
    Hinton, Vinyals, Dean. "Distilling the Knowledge in a Neural Network." 2015.
  """
  teacher_scores = jax.lax.stop_gradient(teacher_scores)
  log_p = _masked_log_softmax(teacher_scores / temperature, where)
  log_q = _masked_log_softmax(student_scores / temperature, where)
  p = jnp.where(where, jnp.exp(log_p), 0.0)
  per_list = temperature**2 * jnp.sum(jnp.where(where, p * (log_p - log_q), 0.0), axis=-1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)


def hinton_pointwise_kd(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Pointwise (binary / CTR) soft-target distillation with temperature.

  Definition:
    p_i = σ(t_i / T),  ℓ_i = T² · BCE(p_i, σ(s_i / T)) = T² · (softplus(s_i/T) − p_i·s_i/T)
    loss = mean of ℓ_i over valid candidates                       (``jnp.mean``)

  This is the cross-entropy form; it differs from T²·KL(p ‖ σ(s/T)) by the teacher's
  entropy, a constant, so the gradients are identical. T² as in
  :func:`hinton_listwise_kd`.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, a traced scalar.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss or per-candidate losses ``[..., N]``.
  """
  teacher_scores = jax.lax.stop_gradient(masked(teacher_scores, where))
  p = jax.nn.sigmoid(teacher_scores / temperature)
  s = masked(student_scores, where) / temperature
  per_item = temperature**2 * (jax.nn.softplus(s) - p * s)
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
