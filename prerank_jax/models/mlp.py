"""Per-candidate MLP scorers: the COLD-style student, the heavy teacher, the linear floor.

Each scores every candidate independently from the concatenation of the request's context
features (broadcast over the list) and the candidate's own feature groups, so a model is
invariant to padding and to the order of the list.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.features import Inputs


def _columns(context_features: Sequence[int], item_features: Sequence[int]) -> dict:
  return {"context": tuple(context_features), "items": tuple(item_features)}


class CandidateMLP(nnx.Module):
  """An MLP over ``inputs`` feature groups that returns one logit per candidate.

  With ``se_gate`` it is the COLD pre-ranker (Wang et al., "COLD: Towards the Next
  Generation of Pre-Ranking System", DLP-KDD 2020): a squeeze-and-excitation gate rescales
  every input feature before the MLP,

    s = σ(W_s x + b_s) ∈ (0, 1)^F,   x' = s ⊙ x,   score = MLP(x'),

  computed per candidate from its own input ``x ∈ R^F`` (each feature here is one scalar
  column, COLD's feature-group embeddings of width 1). The mean of ``s`` over valid
  candidates is the feature's importance (:func:`prerank_jax.models.feature_importance`).

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}``.
    inputs: the feature groups it reads, e.g. ``("context", "items")`` for a student.
    hidden: widths of the hidden ReLU layers.
    context_features: columns of ``context`` it reads; ``()`` = all.
    item_features: columns of ``items`` it reads; ``()`` = all.
    se_gate: add the squeeze-and-excitation feature gate.
    rngs: flax ``nnx.Rngs`` for initialisation.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str],
               hidden: Sequence[int], *, context_features: Sequence[int] = (),
               item_features: Sequence[int] = (), se_gate: bool = False, rngs: nnx.Rngs):
    self.features = Inputs(feature_sizes, inputs, _columns(context_features, item_features))
    self.inputs = self.features.inputs
    self.gate = nnx.Linear(self.features.width, self.features.width, rngs=rngs) if se_gate \
        else None
    widths = [self.features.width, *hidden]
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:])])
    self.head = nnx.Linear(widths[-1], 1, rngs=rngs)

  def gate_values(self, batch: Batch) -> jnp.ndarray:
    """The SE gate ``s`` ``[R, N, F]`` of every candidate (requires ``se_gate``)."""
    if self.gate is None:
      raise ValueError("this model has no feature gate; set <role>.model.se_gate=True")
    return jax.nn.sigmoid(self.gate(self.features(batch)))

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]`` of every candidate of ``batch``."""
    x = self.features(batch)
    if self.gate is not None:
      x = jax.nn.sigmoid(self.gate(x)) * x
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return self.head(x)[..., 0]


class LinearScorer(nnx.Module):
  """Logistic regression over the selected features: the cost floor of a pre-ranker.

  Definition: ``score = wᵀ x + b`` with ``x = [context[cols_c], items[cols_i]] ∈ R^F`` per
  candidate; the score is a logit (σ(score) is the click probability under BCE).

  Args:
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}``.
    inputs: the feature groups it reads.
    context_features: columns of ``context`` it reads; ``()`` = all.
    item_features: columns of ``items`` it reads; ``()`` = all.
    rngs: flax ``nnx.Rngs`` for initialisation.
  """

  def __init__(self, feature_sizes: dict[str, int], inputs: Sequence[str], *,
               context_features: Sequence[int] = (), item_features: Sequence[int] = (),
               rngs: nnx.Rngs):
    self.features = Inputs(feature_sizes, inputs, _columns(context_features, item_features))
    self.inputs = self.features.inputs
    self.head = nnx.Linear(self.features.width, 1, rngs=rngs)

  def __call__(self, batch: Batch) -> jnp.ndarray:
    """Scores ``[R, N]``."""
    return self.head(self.features(batch))[..., 0]
