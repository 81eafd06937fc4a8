"""ListNet distillation: top-one softmax cross-entropy against the teacher, with T."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from prerank_jax.losses.distill import _masked_log_softmax, _temperature_factor
from prerank_jax.reduce import ReduceFn, masked, safe_reduce


def listnet_distill(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    temperature: float | jnp.ndarray = 1.0,
    kd_temperature_squared: bool = True,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """ListNet (top-one probability) cross-entropy against the teacher's softmax.

  Definition:
    p = softmax(t / T), q = softmax(s / T), both over the valid candidates of a list
    loss_list = T² · CE(p, q) = −T² · Σ_i p_i log q_i
                (× 1 instead of T² when ``kd_temperature_squared=False``)
    loss = mean over lists with at least one valid candidate              (``jnp.mean``)

  Where T enters: it divides both the teacher's and the student's logits, and the loss
  is multiplied by T².

  Why T²: the gradient of CE(p, q) w.r.t. ``s`` is (q − p)/T, whose size shrinks like
  1/T² as T grows (Hinton et al. 2015, Sec. 2); the T² factor keeps the gradient's
  magnitude comparable across a temperature sweep, so α means the same thing at every
  T. At T = 1 this is exactly Cao et al.'s ListNet loss with the teacher's top-one
  probabilities as targets.

  Relation to ``hinton_listwise``: CE(p, q) = KL(p ‖ q) + H(p), so this loss equals
  ``hinton_listwise_kd`` plus T²·H(p), the teacher's (tempered) entropy. That term does
  not depend on the student: the GRADIENTS ARE IDENTICAL, only the value is offset (it is
  not 0 when the student matches the teacher). It is registered for fidelity to the
  ListNet literature and to log the cross-entropy that ListNet papers report.

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes logits: softmax(t/T) reads only their differences within a list, and their
      scale sets the target's sharpness; a rank enters as −rank.
    where: ``[..., N]`` bool, valid candidates.
    temperature: T > 0, a traced scalar.
    kd_temperature_squared: static; ``False`` drops the T² factor.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per-list losses ``[...]``).

  Returns:
    The reduced loss, or per-list losses ``[...]`` (0 for lists with nothing valid).

  Reference:
    Cao, Qin, Liu, Tsai, Li. "Learning to Rank: From Pairwise Approach to Listwise
    Approach." ICML 2007 (ListNet, top-one probability). Hinton, Vinyals, Dean.
    "Distilling the Knowledge in a Neural Network." 2015 (T and T²).
  """
  t = jax.lax.stop_gradient(masked(teacher_scores, where))
  s = masked(student_scores, where)
  log_p = _masked_log_softmax(t / temperature, where)
  log_q = _masked_log_softmax(s / temperature, where)
  p = jnp.where(where, jnp.exp(log_p), 0.0)
  factor = _temperature_factor(temperature, kd_temperature_squared)
  per_list = -factor * jnp.sum(jnp.where(where, p * log_q, 0.0), axis=-1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)
