"""DIN: target attention of each candidate over the user's behaviour sequence (a teacher).

Per candidate ``j`` with item-ID embedding ``q_j`` (its first ``Cs`` fields, the ones the
behaviour sequence has) and behaviour slots ``s_l = e(sequence_ids_l)``:

  a_jl = w_aᵀ MLP_a([q_j, s_l, q_j − s_l, q_j ⊙ s_l]) + b_a          (activation unit)
  w_jl = softmax_l(a_jl) over the valid slots (sequence_mask); 0 when there are none
  i_j = Σ_l w_jl s_l                                                  (the user's interest
                                                                       in candidate j)
  score_j = wᵀ MLP([context, items_j, cross_j, e(context_ids), e(item_ids_j), i_j]) + b

``MLP_a`` has ReLU layers of ``attention_hidden`` widths, ``MLP`` of ``hidden`` widths. The
first attention layer is computed as ``W [q, s, q − s, q ⊙ s] = (W_1 + W_3) q + (W_2 − W_3) s
+ W_4 (q ⊙ s)`` (the same function, without materialising the 4D-wide input for every
candidate × slot pair), and long splits are attended a chunk of requests at a time, so
scoring memory stays bounded. DIN's original weights are unnormalised; the softmax here
keeps an all-padding sequence at exactly 0 and the scale independent of the length.

Without a behaviour sequence the interest term is absent; without ID columns it is an MLP
teacher over the float features. Reference: Zhou et al., "Deep Interest Network for
Click-Through Rate Prediction", KDD 2018 (RecFlow's ranking baseline).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.dssm import check_id_inputs
from prerank_jax.models.embeddings import IdEmbeddings
from prerank_jax.models.features import Inputs

# Bound on the floats of the attention's per (candidate, slot) activations held at once.
ATTENTION_BUDGET = 1 << 24


class TargetAttention(nnx.Module):
  """DIN's activation unit and weighted sum pooling (see the module docstring).

  Args:
    dim: D = Cs·d, the width of ``q`` and ``s``.
    hidden: widths of the activation MLP (at least one).
    rngs: flax ``nnx.Rngs``.
  """

  def __init__(self, dim: int, hidden: Sequence[int], *, rngs: nnx.Rngs):
    first = hidden[0]
    self.query = nnx.Linear(dim, first, rngs=rngs)              # (W_1 + W_3)
    self.key = nnx.Linear(dim, first, use_bias=False, rngs=rngs)   # (W_2 − W_3)
    self.product = nnx.Linear(dim, first, use_bias=False, rngs=rngs)  # W_4
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(hidden, hidden[1:])])
    self.out = nnx.Linear(hidden[-1], 1, rngs=rngs)

  def logits(self, q: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """``a`` ``[R, N, L]`` from ``q`` ``[R, N, D]`` and ``s`` ``[R, L, D]``."""
    h = (self.query(q)[:, :, None, :] + self.key(s)[:, None, :, :]
         + self.product(q[:, :, None, :] * s[:, None, :, :]))
    h = nnx.relu(h)
    for layer in self.layers:
      h = nnx.relu(layer(h))
    return self.out(h)[..., 0]

  def pool(self, q: jnp.ndarray, s: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """The interest ``i`` ``[R, N, D]``: ``Σ_l softmax_l(a)·s_l`` over valid slots."""
    a = jnp.where(mask[:, None, :], self.logits(q, s), -1e30)
    w = jax.nn.softmax(a, axis=-1) * mask[:, None, :]  # all-padding rows: exactly 0
    return jnp.einsum("rnl,rld->rnd", w, s)

  def __call__(self, q: jnp.ndarray, s: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """:meth:`pool`, ``chunk`` requests at a time when the split is large."""
    r, n, dim = q.shape
    width = dim + self.query.out_features
    chunk = max(1, ATTENTION_BUDGET // max(1, n * s.shape[1] * width))
    if r <= chunk:
      return self.pool(q, s, mask)
    count = -(-r // chunk)
    index = jnp.minimum(jnp.arange(count * chunk), r - 1).reshape(count, chunk)
    out = jax.lax.map(lambda i: self.pool(q[i], s[i], mask[i]), index)
    return out.reshape(count * chunk, n, dim)[:r]


class DIN(nnx.Module):
  """Deep Interest Network teacher (see the module docstring).

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx, ...}``, with
      ``"sequence_ids": Cs`` when the data has a behaviour sequence.
    inputs: the float groups it reads, ``("context", "items", "cross")`` for a teacher.
    hidden: widths of the scoring MLP.
    attention_hidden: widths of the activation unit's MLP.
    id_embed_dim: d.
    context_vocab, item_vocab: rows per ID field (``()``: none).
    rngs: flax ``nnx.Rngs``.
  """

  def __init__(self, feature_sizes: Mapping[str, int], inputs: Sequence[str], *,
               hidden: Sequence[int], attention_hidden: Sequence[int], id_embed_dim: int,
               context_vocab: Sequence[int] = (), item_vocab: Sequence[int] = (),
               rngs: nnx.Rngs):
    self.features = Inputs(feature_sizes, inputs)
    self.inputs = self.features.inputs
    self.embeddings = IdEmbeddings(context_vocab, item_vocab, id_embed_dim, rngs=rngs)
    self.sequence_columns = int(feature_sizes.get("sequence_ids", 0))
    interest = self.sequence_columns * id_embed_dim
    self.attention = (TargetAttention(interest, attention_hidden, rngs=rngs)
                      if self.sequence_columns else None)
    widths = [self.features.width + self.embeddings.context_width
              + self.embeddings.item_width + interest, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    self.head = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]``."""
    check_id_inputs(self, batch, "din")
    x = self.features(batch)                                     # [R, N, F]
    n = x.shape[-2]
    parts = [x]
    if len(self.embeddings.context):
      ctx = self.embeddings.embed_context(batch.context_ids)     # [R, Cc·d]
      parts.append(jnp.broadcast_to(ctx[:, None, :], (*ctx.shape[:1], n, ctx.shape[-1])))
    if len(self.embeddings.items):
      item = self.embeddings.embed_items(batch.item_ids)         # [R, N, Ci·d]
      parts.append(item)
    if self.attention is not None:
      s = self.embeddings.embed_items(batch.sequence_ids)        # [R, L, Cs·d]
      q = item[..., :s.shape[-1]]
      parts.append(self.attention(q, s, jnp.asarray(batch.sequence_mask)))
    h = jnp.concatenate(parts, axis=-1)
    for layer in self.layers:
      h = nnx.relu(layer(h))
    return self.head(h)[..., 0]
