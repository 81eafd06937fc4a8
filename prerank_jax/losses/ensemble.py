"""Teacher ensembles: combine M teachers' logits into one target before distillation.

Every function maps ``teacher_scores [..., N, M]`` to one combined teacher ``[..., N]``,
with optional per-teacher weights (a static config value, ``loss.ensemble_weights``;
empty means uniform) and an optional bool ``where [..., N]`` of valid candidates. Masked
slots are replaced before any arithmetic, so garbage there cannot reach the valid
candidates' combined scores; the combined value of a masked slot is 0. An ensemble of M
identical teachers equals the same function applied to one of them, for every function
and any weights.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from prerank_jax import checks
from prerank_jax.metrics.ranking import ranks
from prerank_jax.reduce import masked


def normalized_weights(weights: Optional[Sequence[float]], num_teachers: int, *,
                       field: str = "loss.ensemble_weights") -> jnp.ndarray:
  """Per-teacher weights ``[M]`` that sum to 1; ``None`` or ``()`` means uniform.

  Checked at trace time (weights are static config values) by the one rule of
  :func:`prerank_jax.checks.ensemble_weights`: the length must be M, every weight finite
  and ≥ 0, and their sum > 0. The error names ``field``.
  """
  if weights is None or len(weights) == 0:
    return jnp.full((num_teachers,), 1.0 / num_teachers, jnp.float32)
  values = checks.ensemble_weights(tuple(weights), field, num_teachers=num_teachers,
                                   teachers=f"M={num_teachers} in batch.teacher_scores")
  total = sum(values)
  return jnp.asarray([w / total for w in values], jnp.float32)


def _prepare(teacher_scores: jnp.ndarray, where: Optional[jnp.ndarray]):
  teacher_scores = jnp.asarray(teacher_scores)
  valid = (jnp.ones(teacher_scores.shape[:-1], jnp.bool_) if where is None
           else jnp.broadcast_to(where, teacher_scores.shape[:-1]))
  return masked(teacher_scores, valid[..., None]), valid


def mean_logits(
    teacher_scores: jnp.ndarray,
    *,
    where: Optional[jnp.ndarray] = None,
    weights: Optional[Sequence[float]] = None,
) -> jnp.ndarray:
  """(Weighted) mean of the teachers' logits.

  Definition:
    t_i = Σ_m w_m t_{i,m},   w_m ≥ 0, Σ_m w_m = 1 (uniform by default)

  Args:
    teacher_scores: ``[..., N, M]`` logits of M teachers.
    where: optional ``[..., N]`` bool, valid candidates (masked slots give 0).
    weights: optional per-teacher weights (length M; normalised to sum 1).

  Returns:
    ``[..., N]`` combined logits. With M = 1 this is the single teacher exactly.
  """
  t, valid = _prepare(teacher_scores, where)
  w = normalized_weights(weights, t.shape[-1])
  return jnp.where(valid, jnp.sum(t * w, axis=-1), 0.0)


def logit_mean_prob(
    teacher_scores: jnp.ndarray,
    *,
    where: Optional[jnp.ndarray] = None,
    weights: Optional[Sequence[float]] = None,
) -> jnp.ndarray:
  """Logit of the (weighted) mean of the teachers' click probabilities.

  Definition:
    p_i = Σ_m w_m σ(t_{i,m}),   t_i = logit(p_i) = log p_i − log(1 − p_i)

  Computed in log space, log p_i = logsumexp_m(log w_m + log σ(t_{i,m})) and
  log(1 − p_i) = logsumexp_m(log w_m + log σ(−t_{i,m})), so logits of ±1e4 (σ = 0 or 1 in
  float32) stay finite. Averaging probabilities is the usual ensemble of calibrated CTR
  models; unlike :func:`mean_logits` it lets one confident teacher dominate less.

  Args:
    teacher_scores: ``[..., N, M]`` logits of M teachers.
    where: optional ``[..., N]`` bool, valid candidates (masked slots give 0).
    weights: optional per-teacher weights (length M; normalised to sum 1).

  Returns:
    ``[..., N]`` combined logits; with identical teachers, that teacher (up to rounding).
  """
  t, valid = _prepare(teacher_scores, where)
  w = normalized_weights(weights, t.shape[-1])
  log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
  log_p = jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(t), axis=-1)
  log_q = jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(-t), axis=-1)
  return jnp.where(valid, log_p - log_q, 0.0)


def mean_rank(
    teacher_scores: jnp.ndarray,
    *,
    where: Optional[jnp.ndarray] = None,
    weights: Optional[Sequence[float]] = None,
) -> jnp.ndarray:
  """Minus the (weighted) mean rank over teachers: a rank-level (Borda) ensemble.

  Definition:
    t_i = −Σ_m w_m rank_m(i),   rank_m = 1-based rank by descending t_{·,m} among the
    valid candidates (ties by lower index, :func:`prerank_jax.metrics.ranking.ranks`)

  Higher is better, so the result is used like logits; a list's combined scores are
  −1 … −n_valid, one unit per rank position (so at T = 1 a softmax over them is sharp;
  sweep T accordingly). It ignores the teachers' score scales entirely.

  Args:
    teacher_scores: ``[..., N, M]`` logits of M teachers.
    where: optional ``[..., N]`` bool, valid candidates (masked slots give 0 and never
      change the valid candidates' ranks).
    weights: optional per-teacher weights (length M; normalised to sum 1).

  Returns:
    ``[..., N]`` float combined scores.
  """
  t, valid = _prepare(teacher_scores, where)
  w = normalized_weights(weights, t.shape[-1])
  per_teacher = jnp.moveaxis(t, -1, 0)  # [M, ..., N]
  r = ranks(per_teacher, where=jnp.broadcast_to(valid, per_teacher.shape))
  r = jnp.moveaxis(r, 0, -1).astype(jnp.float32)  # [..., N, M]
  return jnp.where(valid, -jnp.sum(r * w, axis=-1), 0.0)


def teacher_present(valid: jnp.ndarray, teacher_mask: Optional[jnp.ndarray]) -> jnp.ndarray:
  """Where the combined teacher is defined: valid candidates that every teacher scored.

  Definition:
    present_i = valid_i ∧ ∀m: mask_{i,m}

  A logged ranker often scores only part of a list (its own top-k); its missing scores
  (``teacher_mask`` False, :mod:`prerank_jax.data.logged_teacher`) are left out of every
  distillation term by passing ``where=present`` to the combiner and to the loss, which is
  the loss on the list with those slots sliced out. An ensemble combines a candidate only
  when every member scored it, so no member's absence is read as a score.

  Args:
    valid: ``[..., N]`` bool, real candidates.
    teacher_mask: ``[..., N, M]`` bool, teacher m scored candidate n; ``None`` = all did.

  Returns:
    ``[..., N]`` bool.
  """
  if teacher_mask is None:
    return valid
  return valid & jnp.all(teacher_mask, axis=-1)


ENSEMBLES = {"mean_logits": mean_logits, "logit_mean_prob": logit_mean_prob,
             "mean_rank": mean_rank}
