"""Model registry: config names → pure ``(init, apply)`` pairs over explicit params.

Models are written as Flax NNX modules and used as pure functions: ``init(rng)`` returns
an ``nnx.State`` of parameters (a pytree, stackable for vmapped sweeps) and
``apply(params, batch)`` returns scores ``[R, N]``.

=====================  =======  ==========================================================
name                   role     model
=====================  =======  ==========================================================
``linear``             student  logistic regression over the selected features
``mlp_student``        student  COLD-style MLP: feature selection, optional SE gate
``two_tower``          student  DSSM: context tower · item tower (cacheable items)
``int_tower``          student  two-tower + a light interaction MLP on [u, v, u⊙v]
``mlp_teacher``        teacher  deep MLP over context, items and cross features
``dcn_v2``             teacher  DCN-v2 cross network + deep network over all features
``oracle``             teacher  the simulator's true relevance (parameter-free)
``mlp_heavy_no_cross`` ablation a teacher-sized MLP without the cross features
``dssm``               student  DSSM over ID embeddings (+ mean-pooled behaviour), ⟨u, v⟩
``din``                teacher  DIN: target attention over the behaviour sequence + MLP
=====================  =======  ==========================================================

Hyperparameters are the options of :data:`MODEL_OPTIONS`; each model reads the ones its
:class:`ModelSpec` lists.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from prerank_jax.batch import Batch
from prerank_jax.models.din import DIN
from prerank_jax.models.dssm import IdDSSM
from prerank_jax.models.mlp import CandidateMLP, LinearScorer
from prerank_jax.models.options import (MODEL_OPTIONS, Option, model_config,  # noqa: F401
                                        resolve_options)
from prerank_jax.models.teachers import DCNv2, OracleTeacher
from prerank_jax.models.towers import IntTower, TwoTower

STUDENT_INPUTS = ("context", "items")
TEACHER_INPUTS = ("context", "items", "cross")
_COLUMNS = ("context_features", "item_features")


class ModelSpec(NamedTuple):
  """A registered model: its NNX class, fixed keyword arguments and the options it reads."""

  cls: type
  fixed: dict[str, Any]
  options: tuple[str, ...]
  doc: str = ""


# name → spec. Config fields (``<role>.model.<option>``) supply the declared options.
MODELS: dict[str, ModelSpec] = {
    "linear": ModelSpec(LinearScorer, {"inputs": STUDENT_INPUTS}, _COLUMNS,
                        "student: logistic regression over the selected features"),
    "mlp_student": ModelSpec(CandidateMLP, {"inputs": STUDENT_INPUTS},
                             ("hidden", *_COLUMNS, "se_gate"),
                             "student: COLD-style MLP, feature selection and SE gate"),
    "two_tower": ModelSpec(TwoTower, {"inputs": STUDENT_INPUTS},
                           ("embed_dim", "tower_hidden", *_COLUMNS),
                           "student: DSSM two-tower, ⟨u, v⟩"),
    "int_tower": ModelSpec(IntTower, {"inputs": STUDENT_INPUTS},
                           ("embed_dim", "tower_hidden", "interaction_dim", *_COLUMNS),
                           "student: two-tower + interaction MLP on [u, v, u⊙v]"),
    "mlp_teacher": ModelSpec(CandidateMLP, {"inputs": TEACHER_INPUTS}, ("hidden",),
                             "teacher: deep MLP over all features"),
    "dcn_v2": ModelSpec(DCNv2, {"inputs": TEACHER_INPUTS},
                        ("hidden", "cross_layers", "cross_rank", "dcn_structure"),
                        "teacher: DCN-v2 over all features"),
    "oracle": ModelSpec(OracleTeacher, {"inputs": ()}, (),
                        "teacher: the simulator's true relevance"),
    # A heavy model without the cross features: separates the teacher's capacity from
    # its privileged features in ablations.
    "mlp_heavy_no_cross": ModelSpec(CandidateMLP, {"inputs": STUDENT_INPUTS}, ("hidden",),
                                    "ablation: teacher-sized MLP without cross features"),
    "dssm": ModelSpec(IdDSSM, {"inputs": STUDENT_INPUTS},
                      ("id_tower", "id_embed_dim", "context_vocab", "item_vocab"),
                      "student: DSSM over float features and ID embeddings, ⟨u, v⟩"),
    "din": ModelSpec(DIN, {"inputs": TEACHER_INPUTS},
                     ("hidden", "attention_hidden", "id_embed_dim", "context_vocab",
                      "item_vocab"),
                     "teacher: DIN, target attention over the behaviour sequence + MLP"),
}


class PureModel(NamedTuple):
  """A model as pure functions. ``apply`` checks feature sizes at trace time.

  ``bind(params)`` gives the NNX module for extra methods; two-tower models also have the
  cached serving path :meth:`item_embeddings` / :meth:`score_cached`.
  """

  name: str
  inputs: tuple[str, ...]
  feature_sizes: dict[str, int]
  init: Callable[[jax.Array], Any]
  apply: Callable[[Any, Batch], jax.Array]
  graphdef: Any = None
  options: Optional[dict[str, Any]] = None

  def bind(self, params: Any) -> nnx.Module:
    """The NNX module with ``params`` (inside jit/vmap too)."""
    return nnx.merge(self.graphdef, params)

  def check_sizes(self, **groups: jax.Array) -> None:
    """Raises if a feature group's last axis differs from what the model was built for."""
    for group, x in groups.items():
      got = x.shape[-1]
      if got != self.feature_sizes[group]:
        raise ValueError(f"{group}: model {self.name!r} was built for "
                         f"{self.feature_sizes[group]} {group} features, but the batch "
                         f"has {got}")

  def _tower(self, params: Any) -> TwoTower:
    module = self.bind(params)
    if not isinstance(module, TwoTower):
      towers = sorted(n for n, s in MODELS.items() if issubclass(s.cls, TwoTower))
      raise ValueError(f"model {self.name!r} has no cached scoring path; the two-tower "
                       f"models {towers} do")
    return module

  def item_embeddings(self, params: Any, batch: Batch) -> jax.Array:
    """Item embeddings ``[R, N, D]``, computed once and cached for serving."""
    self.check_sizes(items=batch.items)
    return self._tower(params).item_embeddings(batch.items)

  def score_cached(self, params: Any, context: jax.Array, item_emb: jax.Array) -> jax.Array:
    """Scores ``[R, N]`` from context ``[R, Fc]`` and cached item embeddings ``[R, N, D]``.

    Equals ``apply(params, batch)`` when ``item_emb = item_embeddings(params, batch)``.
    """
    self.check_sizes(context=context)
    return self._tower(params).score_cached(context, item_emb)


def validate_model_options(model_cfg: Mapping[str, Any], *, field: str,
                           feature_sizes: Optional[Mapping[str, int]] = None) -> dict[str, Any]:
  """Checks a ``<role>.model`` config (name and options); returns the options it reads.

  Args:
    model_cfg: ``{"name": ..., <option>: value, ...}``.
    field: config path for messages, e.g. ``"student.model"``.
    feature_sizes: of the data, to check selected column indices (optional).

  Raises:
    ValueError: naming ``<field>.name`` or ``<field>.<option>`` and the valid range.
  """
  name = model_cfg.get("name")
  if name not in MODELS:
    raise ValueError(f"{field}.name: unknown model {name!r}; valid names are {sorted(MODELS)}")
  values = {k: v for k, v in model_cfg.items() if k != "name"}
  return resolve_options(MODELS[name].options, values, field=field,
                         feature_sizes=feature_sizes)


def build_model(name: str, *, feature_sizes: dict[str, int], field: str = "model",
                **kwargs: Any) -> PureModel:
  """Builds a registered model as a :class:`PureModel`.

  Args:
    name: a key of :data:`MODELS`.
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}`` of the data.
    field: config path used in error messages, e.g. ``"student.model"``.
    **kwargs: model options (:data:`MODEL_OPTIONS`), e.g. ``hidden=(64, 32)``; the model
      receives only those it declares (the rest take no part), missing ones their defaults.

  Raises:
    ValueError: unknown name (listing valid names), unknown option, or a value out of
      range (naming ``<field>.<option>``), including column indices the data lacks.
  """
  if name not in MODELS:
    raise ValueError(f"{field}.name: unknown model {name!r}; valid names are {sorted(MODELS)}")
  spec = MODELS[name]
  options = resolve_options(spec.options, kwargs, field=field, feature_sizes=feature_sizes)
  build = functools.partial(spec.cls, dict(feature_sizes), **spec.fixed, **options)
  inputs = tuple(spec.fixed["inputs"])
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0))), nnx.Param)

  def init(rng: jax.Array):
    return nnx.state(build(rngs=nnx.Rngs(params=rng)), nnx.Param)

  model = PureModel(name, inputs, dict(feature_sizes), init, None, graphdef, options)

  def apply(params, batch: Batch) -> jax.Array:
    model.check_sizes(**{group: getattr(batch, group) for group in inputs})
    return nnx.merge(graphdef, params)(batch)

  return model._replace(apply=apply)


def feature_columns(model: PureModel) -> tuple[str, ...]:
  """Names of the features a model reads, in input order, e.g. ``("context[0]", "items[2]")``."""
  module = nnx.eval_shape(lambda: model.bind(model.init(jax.random.key(0))))
  features = getattr(module, "features", None)
  if features is None:
    return ()
  return features.labels


def feature_importance(model: PureModel, params: Any, batch: Batch) -> jax.Array:
  """Per-feature importance ``[F]`` from the squeeze-and-excitation gate (COLD).

  Definition: ``importance_f = mean over valid candidates of s_f``, with
  ``s = σ(W_s x + b_s)`` the gate of ``mlp_student`` with ``se_gate=True``. Entries are in
  (0, 1) and follow :func:`feature_columns` (selected context columns, then item columns).
  A feature the gate keeps near 0 contributes little and is a candidate for pruning.

  Raises:
    ValueError: the model has no SE gate.
  """
  module = model.bind(params)
  if getattr(module, "gate", None) is None:
    raise ValueError(f"model {model.name!r} has no feature gate; use mlp_student with "
                     "se_gate=True")
  model.check_sizes(**{g: getattr(batch, g) for g in model.inputs})
  gates = module.gate_values(batch)                         # [R, N, F]
  valid = jnp.asarray(batch.valid)[..., None]
  return jnp.sum(jnp.where(valid, gates, 0.0), axis=(0, 1)) / jnp.maximum(
      jnp.sum(valid), 1)


def param_count(params: Any) -> int:
  """Number of scalar parameters in a params pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(params))
