"""Config validation: every field is checked before any work starts or anything is written.

Configs are locked ``ml_collections.ConfigDict`` s (a typo in an override fails at parse
time); this module checks values and ranges and names the offending field.
"""

from __future__ import annotations

import re
from typing import Any

import ml_collections

from prerank_jax import checks
from prerank_jax.checks import ConfigError
from prerank_jax.data.simulator import validate_simulator_params
from prerank_jax.losses.ensemble import ENSEMBLES
from prerank_jax.metrics.ranking import EMPTY_MODES
from prerank_jax.losses.registry import (GT_LOSSES, HPARAMS, KD_LOSSES, STATIC_OPTIONS,
                                         check_gt_weighting, check_hparam)
from prerank_jax.models import MODELS, validate_model_options
from prerank_jax.models.embeddings import EMBEDDING_UPDATES
from prerank_jax.train.sweep import grid_points

from prerank_jax.data.registry import DATASETS as _DATASETS
from prerank_jax.data.logged_teacher import LOGGED, MISSING, SCORE_KINDS
from prerank_jax.data.validation import logged_teacher_sources, validate_data_config

DATASETS = tuple(_DATASETS)  # prerank_jax/data/registry.py
ROLES = ("teacher", "student")


def _int(config: Any, field: str, low: int, high: float = float("inf")) -> int:
  return checks.int_in(_get(config, field), field, low, high)


def _choice(config: Any, field: str, choices) -> str:
  return checks.choice(_get(config, field), field, choices)


_get = checks.get


#: Config fields renamed (old ``<role>.loss`` key → new one): the old name is refused with
#: a message naming the new one (docs/reference/outputs.md, "Names").
RENAMED_LOSS_FIELDS = {"ipw_clip": "propensity_floor"}


def renamed_message(field: str) -> str | None:
  """The error for a renamed field (``student.loss.ipw_clip``), or ``None`` when
  ``field`` was not renamed."""
  role, _, rest = field.partition(".loss.")
  if not rest or rest not in RENAMED_LOSS_FIELDS:
    return None
  new = f"{role}.loss.{RENAMED_LOSS_FIELDS[rest]}"
  return (f"{field}: renamed to {new} (same meaning: the floor of every propensity "
          f"weighting); use {new} (in a config file or a run dir's config.json too)")


def renamed_override(args) -> str | None:
  """The :func:`renamed_message` of the first ``--config.<field>=`` override in ``args``
  that names a renamed field, else ``None`` (the CLI's parse error of an unknown field
  then names the new one)."""
  for arg in args:
    if isinstance(arg, str) and arg.startswith("--config."):
      message = renamed_message(arg[len("--config."):].split("=", 1)[0])
      if message:
        return message
  return None


def check_renamed(config: ml_collections.ConfigDict, role: str) -> None:
  """Refuses a renamed field in ``config[role].loss`` (a config file or an old run dir's
  config.json), naming the new one.

  Raises:
    ConfigError: ``<role>.loss.ipw_clip: renamed to <role>.loss.propensity_floor ...``.
  """
  for old in RENAMED_LOSS_FIELDS:
    if old in config[role].loss:
      raise ConfigError(renamed_message(f"{role}.loss.{old}"))


def validate_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every field of a run config; returns it unchanged.

  Raises:
    ConfigError: naming the first invalid field and its allowed range.
  """
  name = _get(config, "name")
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
    raise ConfigError(f"name: must be a non-empty run name of letters, digits, '.', '_' "
                      f"or '-', got {name!r}")
  _int(config, "seed", 0, 2**31 - 1)
  dataset = _choice(config, "dataset", DATASETS)
  if dataset == "simulator":
    try:
      validate_simulator_params(config.data, prefix="data")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  try:  # config.source of a real dataset, config.input_pipeline / streaming
    validate_data_config(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  logged = is_logged_teacher(config)
  for role in ROLES:
    if role == "teacher" and logged:  # the ranker's logged scores: no model to build
      validate_logged_teacher_fields(config)
    else:
      _choice(config, f"{role}.model.name", MODELS)
      try:  # every option the model reads (prerank_jax.models.MODEL_OPTIONS)
        validate_model_options(_get(config, f"{role}.model"), field=f"{role}.model")
      except ValueError as e:
        raise ConfigError(str(e)) from None
    _choice(config, f"{role}.loss.kd", {*KD_LOSSES, "none"})
    _choice(config, f"{role}.loss.gt", GT_LOSSES)
    _choice(config, f"{role}.loss.ensemble", ENSEMBLES)
    checks.ensemble_weights(config[role].loss.get("ensemble_weights", ()),
                            f"{role}.loss.ensemble_weights")
    try:
      check_gt_weighting(_get(config, f"{role}.loss.gt_weighting"),
                         _get(config, f"{role}.loss.gt"), f"{role}.loss")
    except ValueError as e:
      raise ConfigError(str(e)) from None
    for opt, value in _get(config, f"{role}.loss.options").items():
      if opt not in STATIC_OPTIONS:
        raise ConfigError(f"{role}.loss.options.{opt}: unknown option; valid names are "
                          f"{sorted(STATIC_OPTIONS)}")
      try:
        STATIC_OPTIONS[opt].check(value, f"{role}.loss.options.{opt}")
      except ValueError as e:
        raise ConfigError(str(e)) from None
    check_renamed(config, role)
    floor = _get(config, f"{role}.loss.propensity_floor")
    checks.require(checks.is_number(floor) and 0 < floor <= 1,
                   f"{role}.loss.propensity_floor", "must be in (0, 1]", floor)
    epochs = _int(config, f"{role}.num_epochs", 1)
    chunk = _int(config, f"{role}.epochs_per_chunk", 1, epochs)
    if epochs % chunk:
      raise ConfigError(f"{role}.epochs_per_chunk: must divide {role}.num_epochs={epochs}, "
                        f"got {chunk}")
    _int(config, f"{role}.batch_size", 1)
    if "embedding_update" in config[role]:  # absent in run dirs made before it existed
      _choice(config, f"{role}.embedding_update", EMBEDDING_UPDATES)
    if "compute_dtype" in config[role]:  # absent in run dirs made before mixed precision
      from prerank_jax.models.precision import check_compute_dtype
      try:
        check_compute_dtype(config[role].compute_dtype, f"{role}.compute_dtype")
      except ValueError as e:
        raise ConfigError(str(e)) from None
  if config.student.loss.kd == "none":
    raise ConfigError(f"student.loss.kd: a student needs a distillation loss; valid names "
                      f"are {sorted(KD_LOSSES)}")
  _int(config, "teacher.num_teachers", 1, 64)
  others = config.teacher.get("ensemble_with", ())
  if not isinstance(others, (tuple, list)) or not all(
      isinstance(d, str) and d for d in others):
    raise ConfigError(f"teacher.ensemble_with: must be a tuple of run directories, got "
                      f"{others!r}")
  if not others:  # with ensemble_with, the runner counts the other runs' teachers too
    n = logged_teacher_sources(config) if logged else config.teacher.num_teachers
    checks.ensemble_weights(config.student.loss.get("ensemble_weights", ()),
                            "student.loss.ensemble_weights", num_teachers=n,
                            teachers=(f"{n} logged teacher score columns (files)" if logged
                                      else f"teacher.num_teachers={n}"))
  _int(config, "checkpoint_every", 0)
  validate_distributed(config)
  _choice(config, "wandb.mode", ("offline", "online", "disabled"))
  for flag in ("resume", "overwrite", "progress"):
    if not isinstance(_get(config, flag), bool):
      raise ConfigError(f"{flag}: must be True or False, got {_get(config, flag)!r}")
  baseline = config.sweep.get("gt_only_baseline", True)
  if not isinstance(baseline, bool):
    raise ConfigError(f"sweep.gt_only_baseline: must be True or False, got {baseline!r}")
  if config.resume and config.overwrite:
    raise ConfigError("resume, overwrite: choose one; resume continues a run, overwrite "
                      "deletes it")
  try:
    check_hparam("learning_rate", config.teacher.learning_rate, "teacher.learning_rate")
  except ValueError as e:
    raise ConfigError(str(e)) from None

  programs_spec = _get(config, "sweep.programs")
  if programs_spec:
    from prerank_jax.train.programs import apply_overrides, parse_programs
    try:
      for overrides in parse_programs(programs_spec):
        validate_config(apply_overrides(config, overrides))
    except ConfigError as e:
      raise ConfigError(f"sweep.programs: in program {overrides}: {e}") from None
    except ValueError as e:
      raise ConfigError(str(e)) from None
  axes = sweep_axes(config)
  try:
    points = grid_points(axes, seed=config.seed, mode=_get(config, "sweep.mode"))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  seeds = config.sweep.get("seeds", ())
  if (not isinstance(seeds, (tuple, list)) or len(set(seeds)) != len(seeds)
      or any(not checks.is_int(s) or not 0 <= s <= 2**31 - 1 for s in seeds)):
    raise ConfigError(f"sweep.seeds: must be a tuple of distinct int replicate seeds in "
                      f"[0, {2**31 - 1}] (() = one replicate, config.seed), got {seeds!r}")
  replicates = max(len(seeds), 1)
  if len(points) * replicates > 4096:
    raise ConfigError(f"sweep: {len(points)} points × {replicates} sweep.seeds replicates "
                      f"in one program; must be at most 4096")
  if "group_size" in config.sweep:
    group_size = _int(config, "sweep.group_size", -1, 4096)  # -1: auto (by backend)
    if group_size > 0 and config.get("input_pipeline", "device") != "device":
      raise ConfigError("sweep.group_size: groups of points run with the device-resident "
                        "pipeline only; set it to 0 with input_pipeline="
                        f"{config.input_pipeline!r}")

  _int(config, "eval.k", 1)
  ratios = _get(config, "eval.keep_ratios")
  if not isinstance(ratios, (tuple, list)) or not ratios:
    raise ConfigError(f"eval.keep_ratios: must be a non-empty tuple of ratios in (0, 1], "
                      f"got {ratios!r}")
  for i, r in enumerate(ratios):
    checks.ratio(r, f"eval.keep_ratios[{i}]")
  checks.ratio(_get(config, "eval.monitor_keep_ratio"), "eval.monitor_keep_ratio")
  grade = _get(config, "eval.relevant_grade")
  checks.require(checks.is_number(grade) and grade > 0, "eval.relevant_grade",
                 "must be a number > 0", grade)
  _choice(config, "eval.ndcg_empty", EMPTY_MODES)
  if "gain" in config.eval:  # absent in run dirs made before eval.gain: "exp2"
    from prerank_jax.evaluate import GAINS
    _choice(config, "eval.gain", GAINS)
  return config


def is_logged_teacher(config: ml_collections.ConfigDict) -> bool:
  """The teacher is the ranker's logged scores (``teacher.model.name="logged"``)."""
  return _get(config, "teacher.model.name") == LOGGED


def validate_logged_teacher_fields(config: ml_collections.ConfigDict) -> None:
  """Checks the ``teacher.*`` fields of a logged teacher
  (:mod:`prerank_jax.data.logged_teacher`): ``score_kind``, ``missing``, and no trained
  teacher to restore or join (the scores come with the data).

  Raises:
    ConfigError: naming the field.
  """
  _choice(config, "teacher.score_kind", SCORE_KINDS)
  _choice(config, "teacher.missing", MISSING)
  checks.require(not config.teacher.restore_from, "teacher.restore_from",
                 "a logged teacher is read from the data, not restored; leave it ''",
                 config.teacher.restore_from)
  checks.require(not config.teacher.get("ensemble_with", ()), "teacher.ensemble_with",
                 "a logged teacher's ensemble is its several score columns (files); leave "
                 "it ()", config.teacher.get("ensemble_with", ()))


def validate_distributed(config: ml_collections.ConfigDict) -> None:
  """Checks ``config.distributed`` (called by the CLI before JAX starts, and by
  :func:`validate_config`).

  Raises:
    ConfigError: naming the field and its allowed range.
  """
  if "distributed" not in config:  # configs made before multi-process runs
    return
  n = _int(config, "distributed.num_processes", 1, 65536)
  _int(config, "distributed.process_id", 0, n - 1)
  _int(config, "distributed.cpu_devices_per_process", 0, 4096)
  address = _get(config, "distributed.coordinator_address")
  match = re.fullmatch(r"([^\s:]+|\[[0-9A-Fa-f:]+\]):(\d{1,5})", address) if isinstance(
      address, str) else None
  if not isinstance(address, str) or (address and not (match and 1 <= int(match[2]) <= 65535)):
    raise ConfigError(f"distributed.coordinator_address: must be 'host:port' with a port in "
                      f"[1, 65535] (or '' for a single process), got {address!r}")
  if n > 1 and not address:
    raise ConfigError(f"distributed.coordinator_address: must be 'host:port' when "
                      f"distributed.num_processes={n} > 1, got ''")


def sweep_axes(config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """``{name: values}`` of the config's sweep axes that are set (non-empty)."""
  axes = {}
  for name in HPARAMS:
    values = _get(config, f"sweep.{name}")
    if not isinstance(values, (tuple, list)):
      raise ConfigError(f"sweep.{name}: must be a tuple of numbers (empty: the default "
                        f"{HPARAMS[name].default:g}), got {values!r}")
    if values:
      axes[name] = tuple(values)
  return axes


# Hyperparameters that are cut-offs into a list: a swept value above the list size N would
# be clamped silently by the loss, so it is refused instead.
LIST_CUTOFFS = ("rd_topk", "rankdistil_topk", "fsltr_topk", "recall_k", "rankflow_topk")


def check_against_data(config: ml_collections.ConfigDict, *, shortest_list: int,
                       num_train_requests: int,
                       feature_sizes: dict[str, int] | None = None,
                       list_size: int | None = None) -> None:
  """Checks the fields whose range depends on the data: the batch sizes and (given the
  data's ``feature_sizes``) the models' selected feature columns.

  ``eval.k`` is not capped by ``shortest_list``: a list shorter than k is evaluated over
  its length (as trec_eval and LightGBM do) and counted in the results' notes; the
  argument is kept for callers."""
  if feature_sizes is not None:
    for role in ROLES if not is_logged_teacher(config) else ("student",):
      try:
        validate_model_options(config[role].model, field=f"{role}.model",
                               feature_sizes=feature_sizes)
      except ValueError as e:
        raise ConfigError(str(e)) from None
  if list_size is not None:  # the swept list cut-offs (LIST_CUTOFFS) must fit the lists
    for name, values in sweep_axes(config).items():
      too_long = [v for v in values if name in LIST_CUTOFFS and v > list_size]
      if too_long:
        raise ConfigError(f"sweep.{name}: must be in [{HPARAMS[name].low:g}, {list_size}] "
                          f"(the lists hold {list_size} candidates), got {too_long[0]!r}")
  for role in ROLES:
    b = config[role].batch_size
    if b > num_train_requests:
      raise ConfigError(f"{role}.batch_size: must be in [1, {num_train_requests}] (the "
                        f"train split has {num_train_requests} requests), got {b}")
