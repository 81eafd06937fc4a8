"""Registries of losses and their traced hyperparameters, and the mixed objective.

A new loss is one function plus one line here; the trainer never changes. Hyperparameters
listed in :data:`HPARAMS` are *traced*: the trainer passes them as arrays, so a vmapped
sweep varies them within one compiled program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from prerank_jax.batch import Batch
from prerank_jax.losses import distill, ground_truth
from prerank_jax.losses.ensemble import ENSEMBLES


@dataclasses.dataclass(frozen=True)
class HParam:
  """A traced hyperparameter and its valid range (``low``/``high`` may be ±inf)."""

  low: float
  high: float
  low_open: bool = False
  high_open: bool = False
  doc: str = ""
  default: float = 1.0

  def describe(self) -> str:
    left = "(" if self.low_open else "["
    right = ")" if self.high_open else "]"
    return f"{left}{self.low:g}, {self.high:g}{right}"

  def contains(self, value: float) -> bool:
    if not math.isfinite(value):
      return False
    above = value > self.low if self.low_open else value >= self.low
    below = value < self.high if self.high_open else value <= self.high
    return above and below


# Every traced hyperparameter, its range and its default. A loss declares the names it
# reads in its LossSpec; the sweep config has one axis per name (empty = the default).
HPARAMS: dict[str, HParam] = {
    "temperature": HParam(0.0, math.inf, low_open=True, high_open=True,
                          doc="distillation temperature T", default=1.0),
    "alpha": HParam(0.0, 1.0, doc="weight of the distillation term: α·KD + (1−α)·GT",
                    default=0.5),
    "learning_rate": HParam(0.0, math.inf, low_open=True, high_open=True,
                            doc="Adam learning rate", default=1e-3),
}


@dataclasses.dataclass(frozen=True)
class StaticOption:
  """A shape- or structure-changing loss option: static, one compiled program per value.

  ``choices`` (for strings) or ``low``/``high`` (inclusive, for ints) give the valid range.
  """

  default: Any
  doc: str = ""
  choices: tuple = ()
  low: float = -math.inf
  high: float = math.inf

  def check(self, value: Any, field: str) -> None:
    if self.choices:
      if value not in self.choices:
        raise ValueError(f"{field}: must be one of {list(self.choices)}, got {value!r}")
      return
    if isinstance(value, bool) or not isinstance(value, type(self.default)) \
        or not self.low <= value <= self.high:
      raise ValueError(f"{field}: must be a {type(self.default).__name__} in "
                       f"[{self.low:g}, {self.high:g}] ({self.doc}), got {value!r}")


# Static options of every registered loss, with globally unique names (prefix them with the
# method). The config carries one field per name under ``<role>.loss.options``.
STATIC_OPTIONS: dict[str, StaticOption] = {}


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A registered loss.

  ``fn`` is called as ``fn(student_scores, teacher_scores, *, where, **kwargs)`` for a
  distillation term and ``fn(student_scores, labels, *, where, weights, **kwargs)`` for a
  ground-truth term. ``kwargs`` holds the traced ``hparams`` it declares (read from the
  sweep point) plus the extra inputs it declares in ``needs``, taken from the batch and the
  trainer: ``"labels"``, ``"exposed"``, ``"propensity"`` (``[..., N]``), ``"step"`` (the
  optimizer step, int32 scalar) and ``"rng"`` (a fresh key each step), and the static
  ``options`` it declares (names in :data:`STATIC_OPTIONS`, values from the config).
  """

  fn: Callable[..., jnp.ndarray]
  hparams: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()
  options: tuple[str, ...] = ()


KD_LOSSES: dict[str, LossSpec] = {
    "hinton_listwise": LossSpec(distill.hinton_listwise_kd, ("temperature",)),
    "hinton_pointwise": LossSpec(distill.hinton_pointwise_kd, ("temperature",)),
    "logit_mse": LossSpec(distill.logit_mse),
}

GT_LOSSES: dict[str, LossSpec] = {
    "bce": LossSpec(ground_truth.pointwise_bce),
}

GT_WEIGHTINGS = ("none", "ipw")


def required_hparams(*specs: LossSpec) -> tuple[str, ...]:
  """The traced hyperparameters a set of losses reads, plus the always-present ones."""
  names = {"alpha", "learning_rate"}
  for spec in specs:
    if spec is not None:
      names.update(spec.hparams)
  return tuple(sorted(names))


def lookup(registry: Mapping[str, Any], name: str, field: str) -> Any:
  """``registry[name]``, or a ValueError naming ``field`` and listing the valid names."""
  if name not in registry:
    raise ValueError(f"{field}: unknown name {name!r}; valid names are {sorted(registry)}")
  return registry[name]


def check_hparam(name: str, value: Any, field: str) -> None:
  """Raises a ValueError naming ``field`` when ``value`` is outside ``HPARAMS[name]``."""
  spec = HPARAMS[name]
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{field}: must be a number in {spec.describe()}, got {value!r}") from None
  if not spec.contains(number):
    raise ValueError(f"{field}: must be in {spec.describe()} ({spec.doc}), got {value!r}")


def make_objective(
    *,
    kd: str,
    gt: str,
    ensemble: str = "mean_logits",
    gt_weighting: str = "none",
    ipw_clip: float = 0.05,
    options: Mapping[str, Any] | None = None,
) -> Callable[[jnp.ndarray, Batch, Mapping[str, jnp.ndarray]], jnp.ndarray]:
  """Builds the mixed objective α·KD + (1−α)·GT from registry names.

  Definition:
    loss = α · KD(s, combine(t); T, valid) + (1 − α) · GT(s, y; exposed, w)

  This is Hinton's convex form (Hinton et al. 2015 weight the soft and hard targets and
  recommend a small hard-target weight); α = 0 is the pure ground-truth loss and α = 1
  the pure distillation loss. Names are static; α, T and the learning rate are traced.

  Args:
    kd: a key of :data:`KD_LOSSES`, or ``"none"`` for a ground-truth-only objective.
    gt: a key of :data:`GT_LOSSES`.
    ensemble: how to combine M teachers, a key of ``ENSEMBLES``.
    gt_weighting: ``"none"`` or ``"ipw"`` (clipped inverse propensity of exposure).
    ipw_clip: propensity floor for ``"ipw"``, in (0, 1].
    options: values of static options (``STATIC_OPTIONS`` names); missing ones take the
      default.

  Returns:
    ``objective(student_scores [R, N], batch, hparams, *, step, rng) -> scalar``, where
    ``hparams`` maps traced hyperparameter names to scalars.
  """
  kd_spec = None if kd == "none" else lookup(KD_LOSSES, kd, "loss.kd")
  gt_spec = lookup(GT_LOSSES, gt, "loss.gt")
  combine = lookup(ENSEMBLES, ensemble, "loss.ensemble")
  if gt_weighting not in GT_WEIGHTINGS:
    raise ValueError(f"loss.gt_weighting: must be one of {list(GT_WEIGHTINGS)}, "
                     f"got {gt_weighting!r}")
  if not 0.0 < ipw_clip <= 1.0:
    raise ValueError(f"loss.ipw_clip: must be in (0, 1], got {ipw_clip!r}")

  options = dict(options or {})
  for name, value in options.items():
    lookup(STATIC_OPTIONS, name, "loss.options").check(value, f"loss.options.{name}")

  def extras(spec: LossSpec, batch: Batch, step, rng) -> dict[str, Any]:
    available = {"labels": batch.label, "exposed": batch.valid & batch.exposed,
                 "propensity": batch.propensity, "step": step, "rng": rng}
    out = {name: available[name] for name in spec.needs}
    out.update({name: options.get(name, STATIC_OPTIONS[name].default)
                for name in spec.options})
    return out

  def objective(student_scores, batch: Batch, hparams, *, step=0, rng=None):
    observed = batch.valid & batch.exposed
    weights = None
    if gt_weighting == "ipw":
      weights = ground_truth.inverse_propensity_weights(
          batch.propensity, where=observed, clip=ipw_clip)
    gt_rng, kd_rng = (None, None) if rng is None else jax.random.split(rng)
    gt_loss = gt_spec.fn(student_scores, batch.label, where=observed, weights=weights,
                         **{h: hparams[h] for h in gt_spec.hparams},
                         **extras(gt_spec, batch, step, gt_rng))
    if kd_spec is None:
      return gt_loss  # ground-truth-only training, e.g. the teacher itself
    if batch.teacher_scores is None:
      raise ValueError(f"batch.teacher_scores: loss.kd={kd!r} needs teacher scores, but "
                       "the batch has none (score the data with the teacher first)")
    teacher = combine(batch.teacher_scores)
    kd_loss = kd_spec.fn(student_scores, teacher, where=batch.valid,
                         **{h: hparams[h] for h in kd_spec.hparams},
                         **extras(kd_spec, batch, step, kd_rng))
    alpha = hparams["alpha"]
    return alpha * kd_loss + (1.0 - alpha) * gt_loss

  return objective
