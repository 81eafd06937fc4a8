"""Teachers (heavy rankers): DCN-v2 over all features, and the simulator's oracle.

The deep MLP teacher is :class:`prerank_jax.models.mlp.CandidateMLP` over
``("context", "items", "cross")``.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.features import Inputs


class CrossLayer(nnx.Module):
  """One DCN-v2 cross layer: ``x_{l+1} = x_0 ⊙ (W x_l + b) + x_l``.

  ``W`` is ``F×F`` (``rank = 0``) or the low-rank ``U Vᵀ`` with ``U, V ∈ R^{F×r}``
  (the paper's cost-saving variant, without its mixture of experts).
  """

  def __init__(self, dim: int, rank: int, *, rngs: nnx.Rngs):
    if rank:
      self.down = nnx.Linear(dim, rank, use_bias=False, rngs=rngs)  # Vᵀ x
      self.up = nnx.Linear(rank, dim, rngs=rngs)                    # U (Vᵀ x) + b
    else:
      self.down = None
      self.up = nnx.Linear(dim, dim, rngs=rngs)                     # W x + b

  def __call__(self, x0: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    h = x if self.down is None else self.down(x)
    return x0 * self.up(h) + x


class DCNv2(nnx.Module):
  """DCN-v2 (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
  Web-scale Learning to Rank Systems", WWW 2021), over every feature group.

  Definition, per candidate, with ``x_0 = [context, items, cross] ∈ R^F``:

    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,   l = 0 … L−1         (cross network)
    stacked:  score = wᵀ MLP(x_L) + b
    parallel: score = wᵀ [x_L, MLP(x_0)] + b

  ``MLP`` has ReLU hidden layers of ``hidden`` widths. The paper's raw features are
  embeddings; here every feature is a dense scalar, so ``x_0`` is the feature vector itself.

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}``.
    inputs: the feature groups it reads (``("context", "items", "cross")`` for a teacher).
    hidden: widths of the deep network.
    cross_layers: L ≥ 1.
    cross_rank: r of each ``W_l = U_l V_lᵀ``; 0 = full rank.
    dcn_structure: ``"stacked"`` or ``"parallel"``.
    rngs: flax ``nnx.Rngs``.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str], *,
               hidden: Sequence[int], cross_layers: int, cross_rank: int = 0,
               dcn_structure: str = "stacked", rngs: nnx.Rngs):
    if dcn_structure not in ("stacked", "parallel"):
      raise ValueError(f"dcn_structure: must be 'stacked' or 'parallel', got {dcn_structure!r}")
    self.features = Inputs(feature_sizes, inputs)
    self.inputs = self.features.inputs
    self.parallel = dcn_structure == "parallel"
    dim = self.features.width
    self.cross = nnx.List([CrossLayer(dim, cross_rank, rngs=rngs)
                           for _ in range(cross_layers)])
    widths = [dim, *hidden]
    self.deep = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    self.head = nnx.Linear(widths[-1] + (dim if self.parallel else 0), 1, rngs=rngs)

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]``."""
    x0 = self.features(batch)
    x = x0
    for layer in self.cross:
      x = layer(x0, x)
    h = x0 if self.parallel else x
    for layer in self.deep:
      h = nnx.relu(layer(h))
    if self.parallel:
      h = jnp.concatenate([x, h], axis=-1)
    return self.head(h)[..., 0]


class OracleTeacher(nnx.Module):
  """Scores every candidate by the simulator's true relevance: the perfect teacher.

  Definition: ``score = batch.true_relevance + 0·θ``. The single scalar ``θ`` exists only so
  the oracle trains through the ordinary pipeline (``make_train``/``train_phase``): its
  gradient is 0, so Adam never moves it and training is a no-op.

  Args:
    feature_sizes, inputs: unused (the oracle reads no features).
    rngs: unused.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str] = (), *,
               rngs: nnx.Rngs):
    del feature_sizes, rngs
    self.inputs = tuple(inputs)
    self.theta = nnx.Param(jnp.zeros((), jnp.float32))

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]`` = the true relevance (padding slots as the batch has them)."""
    if batch.true_relevance is None:
      raise ValueError("oracle teacher: batch.true_relevance is None; the oracle needs the "
                       "simulator's truth (dataset='simulator')")
    return jnp.asarray(batch.true_relevance, jnp.float32) + 0.0 * self.theta[...]
