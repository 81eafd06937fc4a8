"""Model registry: config names → pure ``(init, apply)`` pairs over explicit params.

Models are written as Flax NNX modules and used as pure functions: ``init(rng)`` returns
an ``nnx.State`` of parameters (a pytree, stackable for vmapped sweeps) and
``apply(params, batch)`` returns scores ``[R, N]``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.mlp import CandidateMLP

STUDENT_INPUTS = ("context", "items")
TEACHER_INPUTS = ("context", "items", "cross")

# name → (module class, fixed keyword arguments). Config fields supply the rest.
MODELS: dict[str, tuple[type, dict[str, Any]]] = {
    "mlp_student": (CandidateMLP, {"inputs": STUDENT_INPUTS}),
    "mlp_teacher": (CandidateMLP, {"inputs": TEACHER_INPUTS}),
    # A heavy model without the cross features: separates the teacher's capacity from
    # its privileged features in ablations.
    "mlp_heavy_no_cross": (CandidateMLP, {"inputs": STUDENT_INPUTS}),
}


class PureModel(NamedTuple):
  """A model as pure functions. ``apply`` checks feature sizes at trace time."""

  name: str
  inputs: tuple[str, ...]
  feature_sizes: dict[str, int]
  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, Batch], jax.Array]


def build_model(name: str, *, feature_sizes: dict[str, int], field: str = "model",
                **kwargs: Any) -> PureModel:
  """Builds a registered model as a :class:`PureModel`.

  Args:
    name: a key of :data:`MODELS`.
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}`` of the data.
    field: config path used in error messages, e.g. ``"student"``.
    **kwargs: the model's own hyperparameters, e.g. ``hidden=(64, 32)``.

  Raises:
    ValueError: unknown name (listing valid names) or bad hyperparameters.
  """
  if name not in MODELS:
    raise ValueError(f"{field}.name: unknown model {name!r}; valid names are {sorted(MODELS)}")
  cls, fixed = MODELS[name]
  hidden = tuple(kwargs.get("hidden", ()))
  if not hidden or any(not isinstance(w, int) or w < 1 for w in hidden):
    raise ValueError(f"{field}.hidden: must be a non-empty tuple of ints >= 1, got {hidden!r}")
  build = functools.partial(cls, dict(feature_sizes), **fixed, **kwargs)
  inputs = tuple(fixed["inputs"])
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0))), nnx.Param)

  def init(rng: jax.Array):
    return nnx.state(build(rngs=nnx.Rngs(params=rng)), nnx.Param)

  def apply(params, batch: Batch) -> jax.Array:
    for group in inputs:
      got = getattr(batch, group).shape[-1]
      if got != feature_sizes[group]:
        raise ValueError(f"{group}: model {name!r} was built for {feature_sizes[group]} "
                         f"{group} features, but the batch has {got}")
    return nnx.merge(graphdef, params)(batch.context, batch.items, batch.cross)

  return PureModel(name, inputs, dict(feature_sizes), init, apply)


def param_count(params: Any) -> int:
  """Number of scalar parameters in a params pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
