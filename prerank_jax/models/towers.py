"""Two-tower pre-rankers: DSSM and a light-interaction two-tower (IntTower-style).

Both embed the request's context and every candidate separately,

  u = f_c(context[cols_c]) ∈ R^D          (context tower, once per request)
  v_j = f_i(items_j[cols_i]) ∈ R^D        (item tower, once per candidate)

with ``f`` an MLP (``tower_hidden`` ReLU layers, then a linear map to ``D = embed_dim``).
Item embeddings do not depend on the request, so they can be computed once and cached;
:meth:`item_embeddings` and :meth:`score_cached` are that serving path, and
``__call__(batch) == score_cached(batch.context, item_embeddings(batch.items))``.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.features import Inputs


class Tower(nnx.Module):
  """An MLP ``R^F → R^D``: ReLU hidden layers of ``hidden`` widths, then a linear layer."""

  def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, *, rngs: nnx.Rngs):
    widths = [in_dim, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    self.out = nnx.Linear(widths[-1], out_dim, rngs=rngs)

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.out(x)


class TwoTower(nnx.Module):
  """DSSM two-tower (Huang et al., CIKM 2013): ``score_j = ⟨u, v_j⟩``.

  Cost per candidate with cached item embeddings: one D-dimensional dot product (scoring
  a request is one matrix–vector product ``V u``), plus the context tower once per request.

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}``.
    inputs: must be ``("context", "items")``.
    embed_dim: D.
    tower_hidden: hidden widths of each tower.
    context_features: columns of ``context`` the context tower reads; ``()`` = all.
    item_features: columns of ``items`` the item tower reads; ``()`` = all.
    rngs: flax ``nnx.Rngs``.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str], *,
               embed_dim: int, tower_hidden: Sequence[int],
               context_features: Sequence[int] = (), item_features: Sequence[int] = (),
               rngs: nnx.Rngs):
    if tuple(inputs) != ("context", "items"):
      raise ValueError(f"two-tower models read ('context', 'items'), got {tuple(inputs)}")
    self.features = Inputs(feature_sizes, inputs, {"context": tuple(context_features),
                                                   "items": tuple(item_features)})
    self.inputs = self.features.inputs
    self.context_tower = Tower(len(self.features.columns["context"]), tower_hidden,
                               embed_dim, rngs=rngs)
    self.item_tower = Tower(len(self.features.columns["items"]), tower_hidden, embed_dim,
                            rngs=rngs)

  def context_embedding(self, context: jnp.ndarray) -> jnp.ndarray:
    """``u`` ``[R, D]`` from raw context features ``[R, Fc]``."""
    return self.context_tower(self.features.take(context, "context"))

  def item_embeddings(self, items: jnp.ndarray) -> jnp.ndarray:
    """``v`` ``[R, N, D]`` from raw item features ``[R, N, Fi]`` (cacheable)."""
    return self.item_tower(self.features.take(items, "items"))

  def interact(self, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Scores ``[R, N]`` from ``u [R, D]`` and ``v [R, N, D]``: ``⟨u, v_j⟩``."""
    return jnp.einsum("...nd,...d->...n", v, u)

  def score_cached(self, context: jnp.ndarray, item_emb: jnp.ndarray) -> jnp.ndarray:
    """Scores ``[R, N]`` from context ``[R, Fc]`` and cached item embeddings ``[R, N, D]``."""
    return self.interact(self.context_embedding(context), item_emb)

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]``: the full forward, both towers."""
    return self.score_cached(batch.context, self.item_embeddings(batch.items))


class IntTower(TwoTower):
  """A two-tower with a light interaction head, in the spirit of IntTower.

  IntTower (Li et al., "IntTower: the Next Generation of Two-Tower Model for Pre-Ranking
  System", CIKM 2022) adds cheap interactions to a two-tower. What is implemented here is
  *not* its FE-Block, Light-SE or contrastive (CIR) loss, but the simplest light
  interaction: keep the two-tower dot product and add a small MLP on the pair

    h_j = ReLU(W_1 [u, v_j, u ⊙ v_j] + b_1) ∈ R^I,      I = interaction_dim
    score_j = ⟨u, v_j⟩ + w_2ᵀ h_j + b_2.

  The towers are those of :class:`TwoTower`, so item embeddings are still cacheable; the
  per-candidate cost with a cache is the dot product plus the head (about
  ``2·(3D·I + I + D)`` FLOPs) instead of a dot product alone.

  Args:
    interaction_dim: I. Other arguments as :class:`TwoTower`.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str], *,
               embed_dim: int, tower_hidden: Sequence[int], interaction_dim: int,
               context_features: Sequence[int] = (), item_features: Sequence[int] = (),
               rngs: nnx.Rngs):
    super().__init__(feature_sizes, inputs, embed_dim=embed_dim, tower_hidden=tower_hidden,
                     context_features=context_features, item_features=item_features,
                     rngs=rngs)
    self.interaction = nnx.Linear(3 * embed_dim, interaction_dim, rngs=rngs)
    self.interaction_out = nnx.Linear(interaction_dim, 1, rngs=rngs)

  def interact(self, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
    """Scores ``[R, N]``: ``⟨u, v_j⟩ + MLP([u, v_j, u ⊙ v_j])``."""
    ub = jnp.broadcast_to(u[..., None, :], v.shape)
    h = nnx.relu(self.interaction(jnp.concatenate([ub, v, ub * v], axis=-1)))
    return jnp.einsum("...nd,...d->...n", v, u) + self.interaction_out(h)[..., 0]
