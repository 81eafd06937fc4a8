"""Checks of the data fields of a config: ``config.source`` for ``config.dataset`` and the
input pipeline (``input_pipeline``, ``streaming``). Called by
:func:`prerank_jax.config.validate_config` before anything is read or written.
"""

from __future__ import annotations

from prerank_jax import checks
from prerank_jax.data.registry import DATASETS

__all__ = ["INPUT_PIPELINES", "STREAM_ORDERS", "STREAM_READS", "validate_data_config"]

INPUT_PIPELINES = ("device", "grain")
STREAM_ORDERS = ("device", "shared", "block")
STREAM_READS = ("memory", "records")

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
