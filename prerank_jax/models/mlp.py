"""Per-candidate MLP scorers: the light student and the heavy teacher.

Both score each candidate independently from the concatenation of the request's context
features (broadcast over the list) and the candidate's own feature groups, so a model is
invariant to padding and to the order of the list.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx


class CandidateMLP(nnx.Module):
  """An MLP over ``inputs`` feature groups that returns one logit per candidate.

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}``.
    inputs: the feature groups it reads, e.g. ``("context", "items")`` for a student.
    hidden: widths of the hidden ReLU layers.
    rngs: flax ``nnx.Rngs`` for initialisation.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str],
               hidden: Sequence[int], *, rngs: nnx.Rngs):
    self.inputs = tuple(inputs)
    widths = [sum(feature_sizes[name] for name in self.inputs), *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    self.head = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, context: jnp.ndarray, items: jnp.ndarray,
               cross: jnp.ndarray) -> jnp.ndarray:
    """Scores ``[R, N]`` from context ``[R, Fc]``, items ``[R, N, Fi]``, cross ``[R, N, Fx]``."""
    groups = {"context": context, "items": items, "cross": cross}
    list_size = items.shape[-2]
    parts = []
    for name in self.inputs:
      x = groups[name]
      if name == "context":
        x = jnp.broadcast_to(x[..., None, :], (*x.shape[:-1], list_size, x.shape[-1]))
      parts.append(x)
    x = jnp.concatenate(parts, axis=-1)
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)[..., 0]
