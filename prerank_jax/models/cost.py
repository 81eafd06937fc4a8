"""Cost accounting from XLA's own analysis of the compiled scoring function."""

from __future__ import annotations

from typing import Any

import jax

from prerank_jax.batch import Batch
from prerank_jax.models import PureModel


def flops_per_candidate(model: PureModel, params: Any, batch: Batch) -> float:
  """FLOPs to score one candidate, from ``compiled.cost_analysis()`` (not hand arithmetic).

  Args:
    model: the model.
    params: its (unstacked) parameters.
    batch: a representative batch; the cost is divided by its R·N candidate slots.
  """
  compiled = jax.jit(model.apply).lower(params, batch).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
    analysis = analysis[0]
  return float(analysis["flops"]) / (batch.num_requests * batch.list_size)
