"""Embedding tables for categorical IDs: one table per ID field, row 0 reserved.

Every ID column of the batch (``context_ids [R, Cc]``, ``item_ids [R, N, Ci]``,
``sequence_ids [R, L, Cs]``) indexes a table of ``vocab`` rows × ``d`` columns. Row 0 is the
padding and out-of-vocabulary row (:mod:`prerank_jax.batch`); an ID ``>= vocab`` that slips
past :func:`~prerank_jax.batch.validate_batch` is mapped to row 0 inside the model, never
to another row (``jnp.take`` would otherwise clamp it onto the last real row silently).
Behaviour column ``j`` reads item table ``j``, as in DIN: a clicked item and a candidate
item share their embedding.

Tables are ordinary parameters, so a vmapped sweep of ``K`` points holds ``K`` copies of
every table and its Adam moments; :func:`table_bytes` states that memory before a run.
The gradient of a lookup is row-sparse, but the optimizer applied here is dense Adam over
the whole table (``docs/guides/id_features.md`` gives the measurement of dense against a
row-sparse update).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx


def lookup(table: jnp.ndarray, ids: jnp.ndarray) -> jnp.ndarray:
  """Rows of ``table`` ``[V, d]`` at ``ids`` ``[...]`` → ``[..., d]``; ids outside
  ``[0, V)`` read the reserved row 0.

  Definition: ``out[...] = table[ids[...]]`` if ``0 <= ids < V`` else ``table[0]``.
  """
  rows = table.shape[0]
  safe = jnp.where((ids >= 0) & (ids < rows), ids, 0)
  return jnp.take(table, safe, axis=0)


class IdEmbeddings(nnx.Module):
  """Per-field embedding tables for the context and item ID columns.

  Args:
    context_vocab: rows of each context ID table, ``[Cc]`` (reserved row 0 included).
    item_vocab: rows of each item ID table, ``[Ci]``; behaviour column ``j`` uses table ``j``.
    dim: d, the width of every table.
    rngs: flax ``nnx.Rngs``; entries are drawn from ``N(0, 0.05²)`` (small, so a fresh
      table adds little next to the float features).
  """

  def __init__(self, context_vocab: Sequence[int], item_vocab: Sequence[int], dim: int, *,
               rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.05)
    self.dim = int(dim)
    self.context = nnx.List([nnx.Embed(int(v), dim, embedding_init=init, rngs=rngs)
                             for v in context_vocab])
    self.items = nnx.List([nnx.Embed(int(v), dim, embedding_init=init, rngs=rngs)
                           for v in item_vocab])

  @property
  def context_width(self) -> int:
    """``Cc·d``, the width of :meth:`embed_context`."""
    return len(self.context) * self.dim

  @property
  def item_width(self) -> int:
    """``Ci·d``, the width of :meth:`embed_items`."""
    return len(self.items) * self.dim

  def embed_context(self, ids: jnp.ndarray) -> jnp.ndarray:
    """``[R, Cc]`` IDs → ``[R, Cc·d]``, the fields' embeddings concatenated."""
    return jnp.concatenate([lookup(t.embedding[...], ids[..., j])
                            for j, t in enumerate(self.context)], axis=-1)

  def embed_items(self, ids: jnp.ndarray) -> jnp.ndarray:
    """``[..., Ci]`` IDs → ``[..., Ci·d]`` (candidates ``[R, N, Ci]`` or behaviour slots)."""
    return jnp.concatenate([lookup(t.embedding[...], ids[..., j])
                            for j, t in enumerate(self.items[:ids.shape[-1]])], axis=-1)


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of ``x`` ``[R, L, D]`` over the slots where ``mask`` ``[R, L]`` (bool) is True.

  Definition: ``Σ_l mask_l x_l / max(1, Σ_l mask_l)``; a row with no slot gives 0 (not NaN).
  """
  weights = mask.astype(x.dtype)[..., None]
  return jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=-2) / jnp.maximum(
      jnp.sum(weights, axis=-2), 1.0)


def table_bytes(vocab: Sequence[int], dim: int, *, dtype_bytes: int = 4) -> int:
  """Bytes of the embedding tables of ``vocab`` rows × ``dim`` (one copy, no optimizer)."""
  return int(sum(int(v) for v in vocab)) * int(dim) * int(dtype_bytes)
