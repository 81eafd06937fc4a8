"""Datasets by name: ``config.dataset`` → a loader of ``{"train", "valid", "test"} → Batch``.

=========================  ==============================================================
name                       data
=========================  ==============================================================
``simulator``              the cascade simulator in memory (``config.data``, the default)
``simulator_tfds``         the same, as the TFDS dataset ``prerank_simulator`` on disk
                           (``source.preset`` or ``config.data``)
``letor``                  your LibSVM ranking files (``label qid:Q f:v ...``)
``mslr_web/10k_fold1`` …   TFDS catalog names of LETOR datasets (MSLR-WEB10K/30K folds
``istella/{main,s,x}``     1–5, Istella, Yahoo C14) read from extracted files
``yahoo_ltrc/{set1,set2}``
``movielens``              GroupLens ml-100k or ml-1m files (``movielens/100k``,
                           ``movielens/1m`` pick one; ``-ratings`` suffixes accepted)
``tabular``                your Parquet/CSV table (aliases ``parquet``, ``csv``)
=========================  ==============================================================

Every dataset but ``simulator`` is a TFDS builder written as ArrayRecord under
``source.data_dir`` on first use and reused afterwards; ``python -m prerank_jax.data``
prepares one explicitly. Their fields live in ``config.source`` (see
``configs/quickstart.py``) and are checked by :func:`validate_data_config`.

This module imports neither TFDS nor grain; loaders import them when called.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from prerank_jax import checks
from prerank_jax.batch import Batch
from prerank_jax.data import letor as _letor_names  # light: numpy only
from prerank_jax.data.sources import CONFIG_SOURCES
from prerank_jax.data.tfds_base import DatasetMissingError, default_data_dir

__all__ = ["DATASETS", "DatasetMissingError", "load_dataset", "load_splits",
           "missing_message", "validate_data_config"]


class DatasetSpec(NamedTuple):
  kind: str            # simulator | simulator_tfds | letor | movielens | tabular
  config_file: str     # the configs/ file that sets it up
  description: str

  @property
  def source(self) -> Mapping[str, Any]:
    """``config.source`` as ``config_file`` sets it (:data:`~prerank_jax.data.sources.CONFIG_SOURCES`):
    what :func:`prepare_command` compares a config against."""
    return CONFIG_SOURCES[self.config_file]


DATASETS: dict[str, DatasetSpec] = {
    "simulator": DatasetSpec("simulator", "configs/quickstart.py",
                             "the cascade simulator, in memory"),
    "simulator_tfds": DatasetSpec("simulator_tfds", "configs/quickstart.py",
                                  "the cascade simulator as a TFDS dataset on disk"),
    "letor": DatasetSpec("letor", "configs/letor.py", "LibSVM ranking files"),
    **{name: DatasetSpec("letor", "configs/letor.py", f"the {name} LETOR files")
       for name in _letor_names.CATALOG},
    "movielens": DatasetSpec("movielens", "configs/movielens.py", "MovieLens (auto)"),
    **{f"movielens/{v}{suffix}": DatasetSpec("movielens", "configs/movielens.py",
                                             f"MovieLens ml-{v}")
       for v in ("100k", "1m") for suffix in ("", "-ratings")},
    "tabular": DatasetSpec("tabular", "configs/tabular.py", "a Parquet/CSV table"),
    "parquet": DatasetSpec("tabular", "configs/tabular.py", "a Parquet table"),
    "csv": DatasetSpec("tabular", "configs/tabular.py", "a CSV table"),
}
INPUT_PIPELINES = ("device", "grain")
STREAM_ORDERS = ("device", "shared")
STREAM_READS = ("memory", "records")


class Loaded(NamedTuple):
  splits: dict[str, Batch]
  builder: Any        # the prepared TFDS builder, or None for the in-memory simulator
  identity: str       # dataset name/config/version (keys the teacher-score cache)


def _module(kind: str):
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds as module
  elif kind == "letor":
    from prerank_jax.data import letor as module
  elif kind == "movielens":
    from prerank_jax.data import movielens as module
  elif kind == "tabular":
    from prerank_jax.data import tabular as module
  else:
    raise ValueError(f"dataset kind {kind!r} has no TFDS builder")
  return module


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)`` of a TFDS-backed dataset without preparing it (milliseconds,
  except that LETOR parses its raw files when they are not prepared yet)."""
  kind = DATASETS[config.dataset].kind
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds

    params, seed = simulator_params(config)
    return simulator_tfds.make_builder(params, seed=seed, data_dir=config.source.data_dir), None
  return _module(kind).make_builder(config)


def simulator_params(config) -> tuple[dict, int]:
  from prerank_jax.data import simulator_tfds

  preset = config.source.preset
  return (dict(simulator_tfds.PRESETS[preset]) if preset else config.data.to_dict()), int(
      config.seed)


def load_dataset(config, *, show: bool = False) -> Loaded:
  """Loads (preparing once when needed) the splits named by ``config.dataset``.

  Raises:
    DatasetMissingError: at once (no download attempt), with what to download, where to
      put it and the command that prepares it.
  """
  if config.dataset not in DATASETS:
    raise ValueError(f"dataset: unknown dataset {config.dataset!r}; valid names are "
                     f"{sorted(DATASETS)}")
  kind = DATASETS[config.dataset].kind
  if kind == "simulator":
    from prerank_jax.data.simulator import simulate

    return Loaded(simulate(config.data, seed=config.seed), None,
                  f"simulator/{config.seed}")
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds

    params, seed = simulator_params(config)
    splits, builder = simulator_tfds.load(params, seed=seed, data_dir=config.source.data_dir,
                                          show=show)
  else:
    splits, builder = _module(kind).load(config, show=show)
  return Loaded(splits, builder, builder.info.full_name)


def load_splits(config) -> dict[str, Batch]:
  """``{"train", "valid", "test"} → Batch`` of ``config.dataset`` (not yet validated)."""
  return load_dataset(config).splits


# --- messages -----------------------------------------------------------------------------

def prepare_command(config) -> str:
  """The exact command that prepares ``config``'s dataset: the dataset's config file plus
  every ``config.source`` field that differs from that file's value."""
  spec = DATASETS[config.dataset]
  args = ["python", "-m", "prerank_jax.data", f"--config={spec.config_file}",
          f"--config.dataset={config.dataset}"]
  if config.seed != 0:  # the seed of the simulated logging and of carved splits
    args.append(f"--config.seed={config.seed}")
  defaults = spec.source
  for key, value in config.source.items():
    if key not in defaults or value != defaults[key]:
      if isinstance(value, (tuple, list)):
        value = "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
      args.append(f"--config.source.{key}={value}")
  return " ".join(shlex.quote(a) for a in args)


def missing_message(config, *, what: str, licence: str, manual_dir: Path,
                    where: list[tuple[str, str]]) -> str:
  """The instructions of a :class:`DatasetMissingError` (see its docstring)."""
  data_dir = default_data_dir(config.source.data_dir)
  lines = [f"dataset {config.dataset!r} is not prepared in {data_dir} and its raw files are "
           f"not all in {manual_dir}:"]
  lines += [f"  {path}  [{status}]" for path, status in where]
  lines += [
      f"What to download: {what}.",
      f"Licence: {licence}",
      f"Where to put it: extract it into {manual_dir} so that the files above exist (or "
      "point --config.source.manual_dir at the folder that holds them).",
      "Then prepare it once (a run also prepares it on first use):",
      f"  {prepare_command(config)}",
      "Nothing is downloaded automatically.",
  ]
  return "\n".join(lines)


# --- validation ---------------------------------------------------------------------------

_check = checks.require


def _int(s, key: str, low: int, high: float = float("inf")) -> int:
  return checks.int_in(s[key], f"source.{key}", low, high)


def _float(s, key: str, low: float, high: float = float("inf"), **open_ends) -> float:
  return checks.number_in(s[key], f"source.{key}", low, high, **open_ends)


def validate_data_config(config) -> None:
  """Checks ``config.source`` for ``config.dataset`` and the input pipeline fields.

  Raises:
    ValueError: naming the field, its allowed range and the value found.
  """
  name = config.dataset
  _check(name in DATASETS, "dataset", f"unknown name; valid names are {sorted(DATASETS)}",
         name)
  kind = DATASETS[name].kind
  pipeline = config.get("input_pipeline", "device")
  _check(pipeline in INPUT_PIPELINES, "input_pipeline", f"must be one of {INPUT_PIPELINES}",
         pipeline)
  if "streaming" in config:
    st = config.streaming
    _check(st.order in STREAM_ORDERS, "streaming.order", f"must be one of {STREAM_ORDERS}",
           st.order)
    _check(st.read_from in STREAM_READS, "streaming.read_from",
           f"must be one of {STREAM_READS}", st.read_from)
    for key, low in (("worker_count", 0), ("num_threads", 1), ("prefetch", 1),
                     ("steps_per_call", 1)):
      v = st[key]
      _check(checks.is_int(v) and v >= low, f"streaming.{key}", f"must be an int >= {low}", v)
    if st.read_from == "records" and pipeline == "grain":
      _check(kind != "simulator", "streaming.read_from",
             "'records' needs a TFDS dataset (e.g. simulator_tfds), not the in-memory "
             "simulator", st.read_from)
  if kind == "simulator":
    return
  s = config.get("source")
  _check(s is not None, "source", f"dataset {name!r} reads its fields from config.source, "
         "which is missing (start from configs/quickstart.py)", s)
  for key in ("data_dir", "manual_dir"):
    _check(isinstance(s[key], str), f"source.{key}", "must be a path string", s[key])
  if kind == "simulator_tfds":
    from prerank_jax.data.simulator import validate_simulator_params
    from prerank_jax.data.simulator_tfds import PRESETS

    _check(s.preset in ("", *PRESETS), "source.preset",
           f"must be '' (use config.data) or one of {sorted(PRESETS)}", s.preset)
    if not s.preset:
      validate_simulator_params(config.data, prefix="data")
    return
  n = _int(s, "list_size", 1)
  for key in ("valid_fraction", "test_fraction"):
    _float(s, key, 0.0, 0.5, open_low=True, open_high=True)
  for key in ("train_file", "valid_file", "test_file"):
    _check(isinstance(s[key], str), f"source.{key}", "must be a path string", s[key])
  if kind == "letor":
    _int(s, "min_list_size", 1)
    _int(s, "num_exposed", 1, n)
    _float(s, "logging_noise", 0.0)
    _float(s, "position_bias", 0.0)
    _int(s, "logging_feature", 0)
    checks.index_tuple(s.student_features, "source.student_features", "feature ids")
    checks.index_tuple(s.teacher_features, "source.teacher_features", "feature ids")
    from prerank_jax.data.letor import NORMALIZERS

    _check(s.normalize in NORMALIZERS, "source.normalize", f"must be one of {NORMALIZERS}",
           s.normalize)
  elif kind == "movielens":
    _int(s, "num_negatives", 0, n - 1)
    _float(s, "history_fraction", 0.0, 1.0, open_low=True, open_high=True)
  elif kind == "tabular":
    _int(s, "min_list_size", 1)
    _check(isinstance(s.train_file, str) and bool(s.train_file), "source.train_file",
           "must name the Parquet/CSV table (relative to source.manual_dir)", s.train_file)
    for key in ("request_column", "label_column"):
      _check(isinstance(s[key], str) and bool(s[key]), f"source.{key}",
             "must name a column", s[key])
    for key in ("exposed_column", "truth_column", "propensity_column", "split_column"):
      _check(isinstance(s[key], str), f"source.{key}", "must be a column name or ''", s[key])
    checks.names(s.context_columns, "source.context_columns")
    checks.names(s.item_columns, "source.item_columns", non_empty=True)
    checks.names(s.cross_columns, "source.cross_columns")
