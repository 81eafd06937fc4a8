"""Row-sparse ("lazy") Adam for ID embedding tables: ``<role>.embedding_update = "sparse"``.

A step looks up a few thousand rows of tables of up to millions. Dense Adam reads and
writes every row of the table and of both moments each step (and materialises a dense
gradient); the lazy update touches only the rows the batch looked up:

  u = the distinct rows the batch reads (:func:`~prerank_jax.models.embeddings.rows_looked_up`)
  g = ∂loss/∂table[u]            (duplicated IDs summed; the table itself is not differentiated)
  m[u] ← β1 m[u] + (1 − β1) g,   v[u] ← β2 v[u] + (1 − β2) g²
  table[u] ← table[u] − lr · (m[u] / (1 − β1^t)) / (√(v[u] / (1 − β2^t)) + ε)

with ``t`` the global step count (optax's Adam state, shared by every parameter). Rows
not looked up keep their values *and their moments*: unlike dense Adam, their ``m`` and
``v`` do not decay, and their parameters do not keep moving on an old momentum. This is
LazyAdam (TensorFlow Addons' ``tfa.optimizers.LazyAdam``) and PyTorch's
``torch.optim.SparseAdam``. A row looked up at every step follows dense Adam exactly; the
other parameters (towers, attention) get optax's Adam unchanged.

The moments are computed by the same ``optax.inject_hyperparams(optax.adam)``
transformation the dense update uses, applied to a *view* of the parameters and of the
optimizer state in which every table is replaced by its gathered rows ``[M, d]``; the new
rows are scattered back. The state keeps the dense update's structure (checkpoints and
runs are interchangeable between the two), and a non-finite loss, gradient or new value
freezes the point as in the dense step, by writing the old rows back.

Under ``vmap`` over sweep points, ``u`` depends on the batch only and is computed once for
all points; the gather and scatter are batched over the points' tables.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models import PureModel
from prerank_jax.models.embeddings import (EMBEDDING_UPDATES, EmbeddingTable,
                                           embedding_tables, rows_looked_up)


def _names(path: Sequence[Any]) -> tuple[Any, ...]:
  """A jax key path as plain names: ``DictKey('a')`` → ``'a'``, ``GetAttrKey('mu')`` →
  ``'mu'``, ``SequenceKey(0)`` → ``0``."""
  out = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        out.append(getattr(key, attr))
        break
    else:
      out.append(key)
  return tuple(out)


def sparse_tables(model: PureModel, embedding_update: str, *,
                  field: str = "embedding_update") -> tuple[EmbeddingTable, ...]:
  """The tables the lazy update handles: all of the model's ID tables with ``"sparse"``,
  none with ``"dense"`` (or for a model without ID tables, where both are dense Adam).

  Raises:
    ValueError: ``embedding_update`` is not one of :data:`EMBEDDING_UPDATES`, naming
      ``field``.
  """
  if embedding_update not in EMBEDDING_UPDATES:
    raise ValueError(f"{field}: must be one of {list(EMBEDDING_UPDATES)}, got "
                     f"{embedding_update!r}")
  if embedding_update == "dense" or model.graphdef is None:
    return ()
  module = nnx.eval_shape(lambda: model.bind(model.init(jax.random.key(0))))
  return embedding_tables(module)


def _table_leaf(paths: Sequence[tuple[Any, ...]], table: EmbeddingTable) -> int:
  """Index of ``table``'s array among the flattened parameters (its path, then ``value``)."""
  hits = [i for i, p in enumerate(paths) if p[:len(table.path)] == table.path]
  if len(hits) != 1:
    raise ValueError(f"embedding table {table.path} found {len(hits)} times in the "
                     "parameters")
  return hits[0]


def lazy_adam_step(loss_fn: Callable[[Any, Batch], jax.Array], tables: Sequence[EmbeddingTable],
                   tx: optax.GradientTransformation, params: Any, opt_state: Any,
                   batch: Batch, *, frozen: jax.Array
                   ) -> tuple[jax.Array, jax.Array, Any, Any]:
  """One Adam step with the row-sparse table update (see the module docstring).

  Args:
    loss_fn: ``loss_fn(params, model_batch)``, the scalar loss when the model reads
      ``model_batch`` (the batch with its ID columns rewritten onto the looked-up rows).
    tables: :func:`sparse_tables`, non-empty.
    tx: the trainer's Adam (``optax.inject_hyperparams(optax.adam)``); its state
      ``opt_state`` has the structure ``tx.init(params)`` gives.
    params: the parameters (an ``nnx.State``); tables ``[V, d]``.
    opt_state: ``tx``'s state.
    batch: the step's batch.
    frozen: bool scalar; True keeps ``params`` and ``opt_state`` unchanged (a diverged
      point).

  Returns:
    ``(loss, finite, params, opt_state)``: ``finite`` is False when the loss, a gradient or
    a new parameter is not finite; the parameters and state are then the old ones, as they
    are when ``frozen``.
  """
  rows, model_batch = rows_looked_up(tables, batch)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  paths = [_names(p) for p, _ in flat]
  values = [v for _, v in flat]
  where = {_table_leaf(paths, t): r for t, r in zip(tables, rows)}

  def gather(x: jax.Array, r: jax.Array) -> jax.Array:
    return jnp.take(x, r, axis=0, mode="fill", fill_value=0)

  view = [gather(v, where[i]) if i in where else v for i, v in enumerate(values)]
  loss, grads = jax.value_and_grad(
      lambda leaves: loss_fn(jax.tree.unflatten(treedef, leaves), model_batch))(view)

  # The moments of a table sit in the state under the table's own path (mu, nu): gather
  # those rows too, so that Adam runs on [M, d] views with the global step count.
  state_flat, state_def = jax.tree_util.tree_flatten_with_path(opt_state)
  state_values = [v for _, v in state_flat]
  state_where = {}
  for j, (p, v) in enumerate(state_flat):
    names = _names(p)
    for i, r in where.items():
      if (len(names) >= len(paths[i]) and names[-len(paths[i]):] == paths[i]
          and getattr(v, "shape", None) == values[i].shape):
        state_where[j] = r
  state_view = [gather(v, state_where[j]) if j in state_where else v
                for j, v in enumerate(state_values)]
  updates, new_state_view = tx.update(
      jax.tree.unflatten(treedef, grads), jax.tree.unflatten(state_def, state_view),
      jax.tree.unflatten(treedef, view))
  new_view = jax.tree.leaves(optax.apply_updates(jax.tree.unflatten(treedef, view), updates))

  finite = jnp.isfinite(loss) & jnp.all(jnp.array(
      [jnp.all(jnp.isfinite(x)) for x in (*grads, *new_view)]))
  keep = finite & ~frozen

  def merge(old_full: list, old_view: list, new: list, rows_at: dict) -> list:
    out = []
    for i, (full, before, after) in enumerate(zip(old_full, old_view, new)):
      if i in rows_at:   # write back only the looked-up rows; the padding index is dropped
        out.append(full.at[rows_at[i]].set(jnp.where(keep, after, before), mode="drop",
                                           indices_are_sorted=True))
      else:
        out.append(jnp.where(keep, after, before))
    return out

  new_params = merge(values, view, new_view, where)
  new_state = merge(state_values, state_view, jax.tree.leaves(new_state_view), state_where)
  return (loss, finite, jax.tree.unflatten(treedef, new_params),
          jax.tree.unflatten(state_def, new_state))
