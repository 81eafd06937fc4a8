"""Teacher ensembles: combine M teachers' logits into one target before distillation."""

from __future__ import annotations

import jax.numpy as jnp


def mean_logits(teacher_scores: jnp.ndarray) -> jnp.ndarray:
  """Mean of the teachers' logits.

  Definition:
    t_i = (1/M) Σ_m t_{i,m}

  Args:
    teacher_scores: ``[..., N, M]`` logits of M teachers.

  Returns:
    ``[..., N]`` combined logits. With M = 1 this is the single teacher exactly.
  """
  return jnp.mean(teacher_scores, axis=-1)


ENSEMBLES = {"mean_logits": mean_logits}
