"""The one safe masked reducer shared by every loss and metric.

Convention (after rax): a loss or metric computes per-item or per-list values, then calls
:func:`safe_reduce`. Masked entries never contribute, and an all-masked input reduces to 0
instead of NaN, so ``sum(f(..., reduce_fn=None)) == f(..., reduce_fn=jnp.sum)`` holds and
gradients stay finite.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax.numpy as jnp

ReduceFn = Optional[Callable[..., jnp.ndarray]]


def safe_reduce(
    values: jnp.ndarray,
    *,
    where: Optional[jnp.ndarray] = None,
    weights: Optional[jnp.ndarray] = None,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Reduces ``values`` over the entries selected by the bool mask ``where``.

  Definition:
    ``jnp.sum``:  Σ_i w_i·v_i·[where_i]
    ``jnp.mean``: Σ_i w_i·v_i·[where_i] / Σ_i [where_i]   (0 if nothing is selected)
    ``None``:     v_i·w_i where selected and 0 elsewhere (same shape as ``values``)

  The mean divides by the *count* of selected entries, not the weight sum, so
  importance weights rescale the objective instead of being normalised away.

  Args:
    values: ``[...]`` values to reduce.
    where: optional bool mask broadcastable to ``values``.
    weights: optional weights broadcastable to ``values``.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None``.

  Returns:
    A scalar, or ``values`` with masked entries zeroed when ``reduce_fn`` is ``None``.
  """
  if weights is not None:
    values = values * weights
  if where is not None:
    if where.dtype != jnp.bool_:
      raise TypeError(f"where must be a bool mask, got dtype {where.dtype}")
    where = jnp.broadcast_to(where, values.shape)
    # jnp.where (not multiplication) so a NaN/inf in a masked slot cannot leak into
    # the value or, through 0 * inf, into the gradient.
    values = jnp.where(where, values, jnp.zeros_like(values))
  if reduce_fn is None:
    return values
  if reduce_fn is jnp.sum:
    return jnp.sum(values)
  if reduce_fn is jnp.mean:
    count = values.size if where is None else jnp.sum(where)
    return jnp.sum(values) / jnp.maximum(count, 1)
  raise ValueError(f"reduce_fn must be jnp.mean, jnp.sum or None, got {reduce_fn!r}")


def masked(x: jnp.ndarray, where: jnp.ndarray, fill: float = 0.0) -> jnp.ndarray:
  """``x`` with masked slots replaced by ``fill`` *before* any arithmetic.

  Masking only the output is not enough: the gradient of ``jnp.where`` still multiplies
  the unselected branch's derivative by 0, and 0·NaN = NaN. Losses call this on their
  inputs so garbage in padded slots can reach neither the value nor the gradient.
  """
  return jnp.where(where, x, jnp.asarray(fill, x.dtype))
