"""DSSM over ID embeddings: RecFlow's coarse-ranking baseline as a pre-ranking student.

Each tower embeds its side's categorical IDs (one table per field,
:class:`~prerank_jax.models.embeddings.IdEmbeddings`), concatenates them with the side's
float features and runs an MLP; the score is the dot product of the two outputs:

  u = f_u([context, e(context_ids), mean_{l: mask} e(sequence_ids_l)]) ∈ R^D   (once per request)
  v_j = f_i([items_j, e(item_ids_j)]) ∈ R^D                              (once per candidate)
  score_j = ⟨u, v_j⟩

``f`` has ReLU hidden layers and a linear output: ``id_tower = (128, 64, 32)`` (RecFlow's
``coarse/`` DSSM) gives hidden widths 128 and 64 and ``D = 32``. The behaviour sequence is
mean-pooled over its valid slots (a user with no behaviour pools to 0). ``v_j`` does not
depend on the request, so a server can cache it.

With no ID columns (empty vocabularies, a float-only batch) it is a float two-tower with
these towers. Reference: Huang et al., "Learning Deep Structured Semantic Models for Web
Search using Clickthrough Data", CIKM 2013; Liu et al., "RecFlow: An Industrial Full Flow
Recommendation Dataset", ICLR 2025.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.embeddings import IdEmbeddings, masked_mean
from prerank_jax.models.towers import Tower


def check_id_inputs(module: nnx.Module, batch: Batch, name: str) -> None:
  """Raises ``ValueError`` (at trace time) if the batch's ID fields do not have the columns
  ``module`` (a :class:`IdDSSM` or DIN: ``embeddings`` and ``sequence_columns``) was built
  for: ``context_ids [R, Cc]``, ``item_ids [R, N, Ci]``, ``sequence_ids [R, L, Cs]``."""
  for field, count in (("context_ids", len(module.embeddings.context)),
                       ("item_ids", len(module.embeddings.items)),
                       ("sequence_ids", module.sequence_columns)):
    value = getattr(batch, field)
    got = 0 if value is None else value.shape[-1]
    if got != count:
      raise ValueError(f"{field}: model {name!r} was built for {count} columns, but the "
                       f"batch has {got}" + (" (it has no such field)" if value is None
                                             else ""))


class IdDSSM(nnx.Module):
  """DSSM two-tower over float features and ID embeddings (see the module docstring).

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, ...}``, with ``"sequence_ids": Cs`` when
      the data has a behaviour sequence.
    inputs: must be ``("context", "items")``.
    id_tower: widths of each tower, the last one the output size D.
    id_embed_dim: d, the width of every embedding table.
    context_vocab: rows per context ID field (``()``: none).
    item_vocab: rows per item ID field (``()``: none).
    rngs: flax ``nnx.Rngs``.
  """

  def __init__(self, feature_sizes: Mapping[str, int], inputs: Sequence[str], *,
               id_tower: Sequence[int], id_embed_dim: int, context_vocab: Sequence[int] = (),
               item_vocab: Sequence[int] = (), rngs: nnx.Rngs):
    if tuple(inputs) != ("context", "items"):
      raise ValueError(f"dssm reads ('context', 'items'), got {tuple(inputs)}")
    self.inputs = tuple(inputs)
    self.embeddings = IdEmbeddings(context_vocab, item_vocab, id_embed_dim, rngs=rngs)
    self.sequence_columns = int(feature_sizes.get("sequence_ids", 0))
    *hidden, out = id_tower
    user_in = (int(feature_sizes["context"]) + self.embeddings.context_width
               + self.sequence_columns * id_embed_dim)
    item_in = int(feature_sizes["items"]) + self.embeddings.item_width
    self.user_tower = Tower(user_in, hidden, out, rngs=rngs)
    self.item_tower = Tower(item_in, hidden, out, rngs=rngs)

  def user_embedding(self, batch: Batch) -> jnp.ndarray:
    """``u`` ``[R, D]`` from the context features, context IDs and behaviour sequence."""
    parts = [jnp.asarray(batch.context)]
    if len(self.embeddings.context):
      parts.append(self.embeddings.embed_context(batch.context_ids))
    if self.sequence_columns:
      parts.append(masked_mean(self.embeddings.embed_items(batch.sequence_ids),
                               jnp.asarray(batch.sequence_mask)))
    return self.user_tower(jnp.concatenate(parts, axis=-1))

  def item_embeddings(self, batch: Batch) -> jnp.ndarray:
    """``v`` ``[R, N, D]`` from the item features and item IDs (cacheable per item)."""
    parts = [jnp.asarray(batch.items)]
    if len(self.embeddings.items):
      parts.append(self.embeddings.embed_items(batch.item_ids))
    return self.item_tower(jnp.concatenate(parts, axis=-1))

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]``: ``⟨u, v_j⟩``."""
    check_id_inputs(self, batch, "dssm")
    return jnp.einsum("rnd,rd->rn", self.item_embeddings(batch), self.user_embedding(batch))
