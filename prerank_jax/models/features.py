"""Model inputs: feature-group selection and the per-candidate input vector.

Every model scores each candidate from the request's context features (broadcast over the
list) and the candidate's own feature groups. A student may read only some columns of a
group (``context_features`` / ``item_features`` options, COLD-style feature selection); the
others never enter the computation, so changing them cannot change a score.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import Batch


def resolve_columns(columns: Sequence[int], size: int) -> tuple[int, ...]:
  """The selected column indices of a group with ``size`` columns; ``()`` means all."""
  return tuple(int(i) for i in columns) if columns else tuple(range(size))


def select(x: jnp.ndarray, columns: tuple[int, ...], size: int) -> jnp.ndarray:
  """``x[..., columns]``; no gather when every column is selected in order."""
  if columns == tuple(range(size)):
    return x
  return jnp.take(x, np.asarray(columns, np.int32), axis=-1)


def column_labels(inputs: Sequence[str], columns: Mapping[str, tuple[int, ...]]) -> tuple[str, ...]:
  """Names of the input vector's entries, in order, e.g. ``("context[0]", "items[3]")``."""
  return tuple(f"{g}[{i}]" for g in inputs for i in columns[g])


class Inputs:
  """Selects and concatenates the feature groups a model reads.

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}`` of the data.
    inputs: the groups read, in order, e.g. ``("context", "items")``.
    columns: optional ``{group: column indices}``; a missing group or ``()`` = all columns.
  """

  def __init__(self, feature_sizes: Mapping[str, int], inputs: Sequence[str],
               columns: Mapping[str, Sequence[int]] | None = None):
    columns = dict(columns or {})
    self.inputs = tuple(inputs)
    self.sizes = {g: int(feature_sizes[g]) for g in self.inputs}
    self.columns = {g: resolve_columns(columns.get(g, ()), self.sizes[g]) for g in self.inputs}
    self.width = sum(len(c) for c in self.columns.values())
    self.labels = column_labels(self.inputs, self.columns)

  def take(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
    """The selected columns of group ``name`` from its raw array: ``[R, Fc']`` or ``[R, N, F']``."""
    return select(jnp.asarray(x), self.columns[name], self.sizes[name])

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """The per-candidate input ``[R, N, F]``, context broadcast over the list."""
    list_size = batch.items.shape[-2]
    parts = []
    for name in self.inputs:
      x = self.take(getattr(batch, name), name)
      if name == "context":
        x = jnp.broadcast_to(x[..., None, :], (*x.shape[:-1], list_size, x.shape[-1]))
      parts.append(x)
    return jnp.concatenate(parts, axis=-1)
