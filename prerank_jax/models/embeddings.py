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
The gradient of a lookup is row-sparse: :func:`embedding_tables` says which batch columns
read which table and :func:`rows_looked_up` rewrites a batch onto the rows it reads, so
that the trainer's row-sparse ("lazy") Adam (``<role>.embedding_update = "sparse"``,
:mod:`prerank_jax.train.sparse_embeddings`) differentiates and updates those rows only
(``docs/guides/id_features.md`` compares it with dense Adam).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch

# ``<role>.embedding_update``: how Adam updates the ID embedding tables (the trainer's
# prerank_jax/train/sparse_embeddings.py).
EMBEDDING_UPDATES = ("dense", "sparse")


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


class EmbeddingTable(NamedTuple):
  """One ID table of a model and the batch columns that read it.

  ``path`` is the table's place in the model's parameters (``nnx.state`` keys, e.g.
  ``("embeddings", "items", 0, "embedding")``), ``rows`` its V, and ``columns`` the
  ``(batch field, column)`` pairs looked up in it, e.g.
  ``(("item_ids", 0), ("sequence_ids", 0))``.
  """

  path: tuple[Any, ...]
  rows: int
  columns: tuple[tuple[str, int], ...]


def embedding_tables(module: nnx.Module) -> tuple[EmbeddingTable, ...]:
  """The ID tables of a model with an :class:`IdEmbeddings` at ``module.embeddings`` (the
  ``dssm`` student and the ``din`` teacher); ``()`` for any other model.

  Context table ``j`` is read by ``context_ids[..., j]``; item table ``j`` by
  ``item_ids[..., j]`` and, for ``j < Cs`` (``module.sequence_columns``), by
  ``sequence_ids[..., j]``.
  """
  emb = getattr(module, "embeddings", None)
  if not isinstance(emb, IdEmbeddings):
    return ()
  sequence = int(getattr(module, "sequence_columns", 0))
  tables = [EmbeddingTable(("embeddings", "context", j, "embedding"),
                           int(t.num_embeddings), (("context_ids", j),))
            for j, t in enumerate(emb.context)]
  tables += [EmbeddingTable(("embeddings", "items", j, "embedding"), int(t.num_embeddings),
                            (("item_ids", j),) + ((("sequence_ids", j),) if j < sequence
                                                  else ()))
             for j, t in enumerate(emb.items)]
  return tuple(tables)


def rows_looked_up(tables: Sequence[EmbeddingTable], batch: Batch
                   ) -> tuple[list[jnp.ndarray], Batch]:
  """The distinct rows each table's lookups read, and the batch rewritten onto them.

  For table ``t`` with ``M_t`` lookups in ``batch`` (all of its columns together),
  ``rows[t]`` ``[M_t]`` holds the distinct row indices read, sorted, padded at the end with
  ``V_t`` (out of range: a gather with ``mode="fill"`` reads 0 there and a scatter with
  ``mode="drop"`` skips it); a fixed size, so it works under ``jit``. In the returned batch
  every column of ``t`` holds positions into ``rows[t]``, so that a model whose table ``t``
  is replaced by ``table[rows[t]]`` ``[M_t, d]`` computes exactly the scores it computes
  with the whole table: ``table[rows[t]][position] = table[id]`` for every lookup. An ID
  outside ``[0, V_t)`` reads row 0, as :func:`lookup` does.

  Duplicated IDs share one position, so the gradient w.r.t. the ``[M_t, d]`` rows sums
  their contributions (the gather's transpose is a scatter-add).
  """
  rows, fields = [], {}
  for table in tables:
    cols = [jnp.asarray(getattr(batch, f))[..., c] for f, c in table.columns]
    flat = jnp.concatenate([c.reshape(-1) for c in cols])
    flat = jnp.where((flat >= 0) & (flat < table.rows), flat, 0)
    unique, inverse = jnp.unique(flat, size=flat.shape[0], fill_value=table.rows,
                                 return_inverse=True)
    rows.append(unique)
    inverse = inverse.reshape(-1).astype(jnp.int32)
    start = 0
    for (field, c), col in zip(table.columns, cols):
      part = inverse[start:start + col.size].reshape(col.shape)
      start += col.size
      current = fields.get(field, jnp.asarray(getattr(batch, field)))
      fields[field] = current.at[..., c].set(part)
  return rows, batch._replace(**fields)
