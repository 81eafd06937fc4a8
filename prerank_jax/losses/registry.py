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
from prerank_jax.losses import listnet, pairwise, ranking_distillation
from prerank_jax.losses import cascade, rankdistil
from prerank_jax.losses import lambdaloss
from prerank_jax.losses import ensemble as ensemble_module
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
    # Ranking Distillation (Tang & Wang 2018).
    "rd_topk": HParam(1.0, 1000.0, doc="RD: K, teacher top-K used as positives (floored)",
                      default=10.0),
    "rd_lambda": HParam(0.0, math.inf, low_open=True, high_open=True,
                        doc="RD: λ, sharpness of the position weight exp(−r/λ)", default=1.0),
    "rd_mu": HParam(0.0, math.inf, high_open=True,
                    doc="RD: μ, sharpness of the discrepancy weight tanh(μ(r̂−r))",
                    default=0.1),
    "rd_warmup_steps": HParam(0.0, math.inf, high_open=True,
                              doc="RD: optimizer steps before the discrepancy weight is used",
                              default=0.0),
    # RankDistil, cascade losses and ground-truth extras (rankdistil.py, cascade.py).
    "rankdistil_topk": HParam(1.0, math.inf, high_open=True,
                              doc="RankDistil: places k of each sampled teacher "
                                  "permutation scored by top-k ListMLE", default=10.0),
    "fsltr_topk": HParam(0.0, math.inf, high_open=True,
                         doc="FS-LTR: teacher top-K tier (above the rest, below exposed)",
                         default=10.0),
    "recall_k": HParam(1.0, math.inf, high_open=True,
                       doc="soft_recall: teacher top-k whose soft recall is maximised",
                       default=10.0),
    "recall_keep_ratio": HParam(0.0, 1.0, low_open=True,
                                doc="soft_recall: keep ratio r, m = ceil(r·n_valid)",
                                default=0.25),
    "neuralsort_tau": HParam(0.0, math.inf, low_open=True, high_open=True,
                             doc="soft_recall: NeuralSort temperature τ (LCRON's released "
                                 "scripts: 50; ARF: 200)", default=50.0),
    "rankflow_topk": HParam(1.0, math.inf, high_open=True,
                            doc="RankFlow: teacher top-k the student must score above the "
                                "rest", default=10.0),
    "rankflow_beta": HParam(0.0, 1.0, doc="RankFlow: β·top-k term + (1−β)·MSE",
                            default=0.5),
    "lambdaloss_topn": HParam(1.0, math.inf, high_open=True,
                              doc="FS-LambdaLoss: ranks beyond n get no discount "
                                  "(LCRON's call: 30)", default=30.0),
    "lambdaloss_smooth_fraction": HParam(0.0, 1.0,
                                         doc="FS-LambdaLoss: f in (1−f)·u + f·v, the "
                                             "pair discount (LCRON's call: 0.8)",
                                         default=0.8),
    "gt_negative_weight": HParam(0.0, math.inf, high_open=True,
                                 doc="gt_extra_positives: weight λ of unexposed negatives",
                                 default=1.0),
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
STATIC_OPTIONS: dict[str, StaticOption] = {
    "kd_temperature_squared": StaticOption(
        True, doc="hinton_listwise/hinton_pointwise/listnet_distill: multiply by T² "
                  "(Hinton et al. 2015) or not", choices=(True, False)),
    "rd_rank_estimate": StaticOption(
        "exact", doc="RD: student rank r̂ within the teacher's pool, exact (sort) or "
                     "sampled (the reference code's floor(|pool|·#higher/n))",
        choices=ranking_distillation.RANK_ESTIMATES),
    "rd_num_rank_samples": StaticOption(
        100, doc="RD: samples n for rd_rank_estimate='sampled'", low=1, high=100_000),
    "pairwise_weighting": StaticOption(
        "uniform", doc="ranknet_distill pair weights", choices=pairwise.PAIR_WEIGHTINGS),
    "pairwise_top": StaticOption(
        0, doc="pairwise losses: 0 = all pairs, P > 0 = pairs with the teacher's top P",
        low=0, high=100_000),
    "rankdistil_num_samples": StaticOption(
        8, doc="RankDistil: permutations sampled from the teacher per list and step",
        low=1, high=1024),
    "rankdistil_temperature_on": StaticOption(
        "teacher", doc="RankDistil: T divides the teacher's logits in the sampling PL model "
                       "(default) or the student's logits in the PL likelihood (TF-Ranking "
                       "CoupledRankDistilLoss, the reference)",
        choices=rankdistil.TEMPERATURE_PLACEMENTS),
    "soft_recall_form": StaticOption(
        "lcron", doc="soft_recall: 'lcron' (LCRON/ARF-v2 L_single: column-normalised, up "
                     "and down terms, −log), 'arf' (ARF L_relax) or 'linear' (−mean soft "
                     "recall)", choices=cascade.SOFT_RECALL_FORMS),
    "rankflow_space": StaticOption(
        "prob", doc="RankFlow: terms on σ(scores) (as released) or on logits",
        choices=("prob", "logit")),
    "gt_num_negatives": StaticOption(
        10, doc="gt_extra_positives: unexposed negatives sampled per list (0 = all)",
        low=0, high=100_000),
    "gt_list_reduction": StaticOption(
        "mean", doc="gt_extra_positives: mean over candidates, or sum per list and mean "
                    "over lists (Ranking Distillation's released scale)",
        choices=ground_truth.GT_LIST_REDUCTIONS),
}


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """A registered loss.

  ``fn`` is called as ``fn(student_scores, teacher_scores, *, where, **kwargs)`` for a
  distillation term and ``fn(student_scores, labels, *, where, weights, **kwargs)`` for a
  ground-truth term. ``kwargs`` holds the traced ``hparams`` it declares (read from the
  sweep point) plus the extra inputs it declares in ``needs``, taken from the batch and the
  trainer: ``"labels"``, ``"exposed"`` (valid & exposed), ``"valid"``, ``"relevance"``
  (``batch.true_relevance``, the graded stage labels), ``"propensity"``
  (``[..., N]``), ``"step"`` (the
  optimizer step, int32 scalar) and ``"rng"`` (a fresh key each step), and the static
  ``options`` it declares (names in :data:`STATIC_OPTIONS`, values from the config).
  """

  fn: Callable[..., jnp.ndarray]
  hparams: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()
  options: tuple[str, ...] = ()


KD_LOSSES: dict[str, LossSpec] = {
    "hinton_listwise": LossSpec(distill.hinton_listwise_kd, ("temperature",),
                                options=("kd_temperature_squared",)),
    "hinton_pointwise": LossSpec(distill.hinton_pointwise_kd, ("temperature",),
                                 options=("kd_temperature_squared",)),
    "logit_mse": LossSpec(distill.logit_mse),
    "ranking_distillation": LossSpec(
        ranking_distillation.ranking_distillation,
        ("rd_topk", "rd_lambda", "rd_mu", "rd_warmup_steps"),
        needs=("labels", "exposed", "step", "rng"),
        options=("rd_rank_estimate", "rd_num_rank_samples")),
    "ranknet_distill": LossSpec(pairwise.ranknet_distill, ("temperature",),
                                options=("pairwise_weighting", "pairwise_top")),
    "soft_pairwise_distill": LossSpec(pairwise.soft_pairwise_distill, ("temperature",),
                                      options=("pairwise_top",)),
    "listnet_distill": LossSpec(listnet.listnet_distill, ("temperature",),
                                options=("kd_temperature_squared",)),
    "rankdistil": LossSpec(rankdistil.rankdistil_loss, ("temperature", "rankdistil_topk"),
                           needs=("rng",),
                           options=("rankdistil_num_samples", "rankdistil_temperature_on")),
    "fsltr_priority": LossSpec(cascade.fsltr_priority_loss, ("fsltr_topk",),
                               needs=("labels", "exposed")),
    "soft_recall": LossSpec(cascade.soft_recall_loss,
                            ("recall_k", "recall_keep_ratio", "neuralsort_tau"),
                            options=("soft_recall_form",)),
    "fs_lambdaloss": LossSpec(lambdaloss.fs_lambdaloss,
                              ("lambdaloss_topn", "lambdaloss_smooth_fraction"),
                              needs=("relevance",)),
    "rankflow": LossSpec(cascade.rankflow_loss, ("rankflow_topk", "rankflow_beta"),
                         options=("rankflow_space",)),
}

GT_LOSSES: dict[str, LossSpec] = {
    "bce": LossSpec(ground_truth.pointwise_bce),
    "softmax": LossSpec(ground_truth.softmax_ce),
    "gt_extra_positives": LossSpec(ground_truth.extra_positives_loss,
                                   ("gt_negative_weight",), needs=("valid", "rng"),
                                   options=("gt_num_negatives", "gt_list_reduction")),
    "pairwise_logistic": LossSpec(ground_truth.pairwise_logistic),
}

# The unbiased (IPS) form of each ground-truth loss that has one; used by the "ips_*"
# weightings. Called as fn(scores, labels, *, where=support, propensity=clipped q).
IPS_GT_LOSSES: dict[str, Callable[..., jnp.ndarray]] = {
    "bce": ground_truth.ips_pointwise_bce,
    "softmax": ground_truth.ips_softmax_ce,
    "pairwise_logistic": ground_truth.ips_pairwise_logistic,
}

# How the ground-truth term treats the logged labels (see make_objective):
#   "none": as they are, on the exposed candidates (naive; biased by selection and position);
#   "grade": per-candidate weight 1 + y;
#   "reweight_examination": the whole per-candidate loss times 1/max(θ, clip) (a reweighting
#     of candidates, NOT an unbiased estimator: its optimum stays σ(s) = θ·r);
#   "reweight_examination_grade": both weights;
#   "ips_examination": unbiased IPS for position bias: clicks / θ, over the exposed;
#   "ips_exposure": unbiased IPS for selection bias: clicks / π, over every valid candidate;
#   "ips_both": clicks / (π·θ), over every valid candidate: removes both biases.
GT_WEIGHTINGS = ("none", "grade", "reweight_examination", "reweight_examination_grade",
                 "ips_examination", "ips_exposure", "ips_both")
# Names of earlier versions, refused with a pointer to what they are now.
RENAMED_GT_WEIGHTINGS = {"ipw": "reweight_examination",
                         "ipw_grade": "reweight_examination_grade"}


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


def check_gt_weighting(gt_weighting: str, gt: str, prefix: str) -> None:
  """Raises a ValueError naming ``<prefix>.gt_weighting`` when the weighting is unknown,
  renamed, or has no unbiased form for the ground-truth loss ``gt``."""
  if gt_weighting in RENAMED_GT_WEIGHTINGS:
    raise ValueError(
        f"{prefix}.gt_weighting: {gt_weighting!r} was renamed "
        f"{RENAMED_GT_WEIGHTINGS[gt_weighting]!r} (it reweights candidates and is not "
        "unbiased); the unbiased estimators are 'ips_examination', 'ips_exposure' and "
        "'ips_both'")
  if gt_weighting not in GT_WEIGHTINGS:
    raise ValueError(f"{prefix}.gt_weighting: must be one of {list(GT_WEIGHTINGS)}, "
                     f"got {gt_weighting!r}")
  if gt_weighting.startswith("ips_") and gt not in IPS_GT_LOSSES:
    raise ValueError(f"{prefix}.gt_weighting: {gt_weighting!r} is defined for "
                     f"{prefix}.gt in {sorted(IPS_GT_LOSSES)}, got gt={gt!r}")


def observation_propensity(batch: Batch, gt_weighting: str) -> jnp.ndarray:
  """The propensity a weighting divides by: θ (examination, ``batch.propensity``), π
  (exposure, ``batch.exposure_propensity``) or π·θ (both); a clear error when the batch
  lacks it."""
  need = {"examination": ("propensity",), "exposure": ("exposure_propensity",),
          "both": ("propensity", "exposure_propensity")}
  kind = "examination" if "examination" in gt_weighting else gt_weighting.split("_", 1)[1]
  for field in need[kind]:
    if getattr(batch, field) is None:
      what = ("examination propensities of the exposed candidates" if field == "propensity"
              else "exposure probabilities of the logging policy")
      raise ValueError(f"batch.{field}: loss.gt_weighting={gt_weighting!r} needs the {what}, "
                       "but the batch has none (the simulator and the LETOR loader record "
                       "both; a Parquet/CSV table needs propensity_column)")
  if kind == "examination":
    return batch.propensity
  if kind == "exposure":
    return batch.exposure_propensity
  return batch.exposure_propensity * batch.propensity


def make_objective(
    *,
    kd: str,
    gt: str,
    ensemble: str = "mean_logits",
    ensemble_weights: tuple = (),
    gt_weighting: str = "none",
    propensity_floor: float = 0.05,
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
    ensemble_weights: static per-teacher weights (≥ 0, normalised to sum 1); ``()`` means
      uniform. Their length must equal M, checked when the objective is traced.
    gt_weighting: one of :data:`GT_WEIGHTINGS` (see the comment there). The ``ips_*``
      weightings replace the ground-truth loss by its unbiased form (``IPS_GT_LOSSES``):
      clicks divided by the observation propensity θ (``batch.propensity``), π
      (``batch.exposure_propensity``) or π·θ, over the exposed candidates (examination)
      or every valid candidate (exposure, both).
    propensity_floor: the floor q of every propensity weighting, in (0, 1]: a
      propensity p enters as max(p, q) (``loss.propensity_floor``; was ``ipw_clip``).
    options: values of static options (``STATIC_OPTIONS`` names); missing ones take the
      default.

  Returns:
    ``objective(student_scores [R, N], batch, hparams, *, step, rng) -> scalar``, where
    ``hparams`` maps traced hyperparameter names to scalars.
  """
  kd_spec = None if kd == "none" else lookup(KD_LOSSES, kd, "loss.kd")
  gt_spec = lookup(GT_LOSSES, gt, "loss.gt")
  combine = lookup(ENSEMBLES, ensemble, "loss.ensemble")
  check_gt_weighting(gt_weighting, gt, "loss")
  if not 0.0 < propensity_floor <= 1.0:
    raise ValueError(f"loss.propensity_floor: must be in (0, 1], got {propensity_floor!r}")

  ensemble_weights = tuple(ensemble_weights or ())
  if ensemble_weights:
    ensemble_module.normalized_weights(ensemble_weights, len(ensemble_weights))

  options = dict(options or {})
  for name, value in options.items():
    lookup(STATIC_OPTIONS, name, "loss.options").check(value, f"loss.options.{name}")

  def extras(spec: LossSpec, batch: Batch, step, rng) -> dict[str, Any]:
    available = {"labels": batch.label, "exposed": batch.valid & batch.exposed,
                 "valid": batch.valid,
                 "relevance": batch.true_relevance,
                 "propensity": batch.propensity, "step": step, "rng": rng}
    out = {name: available[name] for name in spec.needs}
    out.update({name: options.get(name, STATIC_OPTIONS[name].default)
                for name in spec.options})
    return out

  def ground_truth_term(student_scores, batch: Batch, hparams, step, rng):
    observed = batch.valid & batch.exposed
    if gt_weighting.startswith("ips_"):
      support = observed if gt_weighting == "ips_examination" else batch.valid
      propensity = observation_propensity(batch, gt_weighting)
      return IPS_GT_LOSSES[gt](student_scores, batch.label, where=support,
                               propensity=ground_truth.clipped_propensity(
                                   propensity, where=support, clip=propensity_floor))
    weights = None
    if gt_weighting.startswith("reweight_examination"):
      weights = ground_truth.inverse_propensity_weights(
          observation_propensity(batch, gt_weighting), where=observed, clip=propensity_floor)
    if gt_weighting.endswith("grade"):
      grade = ground_truth.grade_weights(batch.label, where=observed)
      weights = grade if weights is None else weights * grade
    return gt_spec.fn(student_scores, batch.label, where=observed, weights=weights,
                      **{h: hparams[h] for h in gt_spec.hparams},
                      **extras(gt_spec, batch, step, rng))

  def objective(student_scores, batch: Batch, hparams, *, step=0, rng=None):
    gt_rng, kd_rng = (None, None) if rng is None else jax.random.split(rng)
    gt_loss = ground_truth_term(student_scores, batch, hparams, step, gt_rng)
    if kd_spec is None:
      return gt_loss  # ground-truth-only training, e.g. the teacher itself
    if batch.teacher_scores is None:
      raise ValueError(f"batch.teacher_scores: loss.kd={kd!r} needs teacher scores, but "
                       "the batch has none (score the data with the teacher first)")
    # A logged teacher's missing scores (batch.teacher_mask) leave every KD term.
    present = ensemble_module.teacher_present(batch.valid, batch.teacher_mask)
    teacher = combine(batch.teacher_scores, where=present,
                      weights=ensemble_weights or None)
    kd_loss = kd_spec.fn(student_scores, teacher, where=present,
                         **{h: hparams[h] for h in kd_spec.hparams},
                         **extras(kd_spec, batch, step, kd_rng))
    alpha = hparams["alpha"]
    return alpha * kd_loss + (1.0 - alpha) * gt_loss

  return objective
