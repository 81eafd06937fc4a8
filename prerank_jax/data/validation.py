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


def validate_recflow_source(s) -> None:
  """``config.source`` of ``dataset="recflow"`` (prerank_jax/data/recflow.py).

  Raises:
    ValueError: naming the field, its allowed values and the value found.
  """
  from prerank_jax.data import recflow

  _check(s.get("recflow_protocol") in recflow.PROTOCOLS, "source.recflow_protocol",
         f"must be one of {recflow.PROTOCOLS}", s.get("recflow_protocol"))
  # parse_days raises a ValueError naming the field.
  train = set(recflow.parse_days(s.recflow_train_days, "source.recflow_train_days"))
  test = set(recflow.parse_days(s.recflow_test_day, "source.recflow_test_day"))
  _check(not train & test, "source.recflow_test_day",
         f"must not overlap source.recflow_train_days ({s.recflow_train_days})",
         s.recflow_test_day)
  _check(isinstance(s.recflow_test_file, str) and bool(s.recflow_test_file),
         "source.recflow_test_file", "must name the coarse test file in others/ "
         "(coarse_rank_test.feather or prerank_test.feather)", s.recflow_test_file)
  _check(s.recflow_label in recflow.FEEDBACK, "source.recflow_label",
         f"must be one of {recflow.FEEDBACK}", s.recflow_label)
  _int(s, "recflow_per_stage", 1, 1000)
  _int(s, "list_size", 1)
  _float(s, "valid_fraction", 0.0, 0.5, open_low=True, open_high=True)


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
  teacher = config.get("teacher")
  _check(teacher is None or teacher.model.name != "logged" or kind in ("tabular", "letor"),
         "teacher.model.name", "'logged' reads ranker scores logged with the data: a "
         "Parquet/CSV table (source.teacher_score_columns) or LETOR files "
         f"(source.teacher_score_file); dataset {name!r} has none", "logged")
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
  if kind == "recflow":
    validate_recflow_source(s)
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
    _check(isinstance(s.get("candidate_column", ""), str), "source.candidate_column",
           "must be a column name or '' (the row number)", s.get("candidate_column"))
    checks.names(s.get("context_id_columns", ()), "source.context_id_columns")
    checks.names(s.get("item_id_columns", ()), "source.item_id_columns")
    _check(isinstance(s.get("sequence_column", ""), str), "source.sequence_column",
           "must be a list column's name or '' (none)", s.get("sequence_column"))
    _check(not s.get("sequence_column", "") or len(s.get("item_id_columns", ())) >= 1,
           "source.sequence_column", "needs source.item_id_columns (the behaviour shares "
           "the first item ID field's table)", s.get("sequence_column"))
    _check(checks.is_int(s.get("sequence_length", 20)) and s.get("sequence_length", 20) >= 1,
           "source.sequence_length", "must be an int >= 1", s.get("sequence_length"))
    buckets = s.get("id_buckets", 100_003)
    _check(checks.is_int(buckets) and 2 <= buckets <= 2**31 - 1, "source.id_buckets",
           "must be an int in [2, 2147483647] (hash buckets per ID column, row 0 reserved)",
           buckets)
  if kind in ("tabular", "letor"):
    validate_logged_teacher(config, kind)


def logged_teacher_sources(config) -> int:
  """The number M of logged teachers the config names: ``source.teacher_score_columns``
  (tabular) or the score files per split of ``source.teacher_score_file`` (LETOR); 0 when
  none (a config made before these fields included)."""
  s = config.get("source")
  if s is None:
    return 0
  if DATASETS[config.dataset].kind == "letor":
    files = s.get("teacher_score_file")
    return max((len(files.get(split, ())) for split in ("train", "valid", "test")),
               default=0) if files is not None else 0
  return len(s.get("teacher_score_columns", ()))


def validate_logged_teacher(config, kind: str) -> None:
  """Checks the logged-teacher fields against ``teacher.model.name``.

  ``teacher.model.name="logged"`` needs ``source.teacher_score_columns`` (a Parquet/CSV
  table) or ``source.teacher_score_file`` (LETOR files), one per teacher; those fields
  without a logged teacher are refused rather than silently ignored.

  Raises:
    ValueError: naming the field.
  """
  s = config.get("source")
  logged = config.teacher.model.name == "logged"
  if kind == "tabular":
    checks.names(s.get("teacher_score_columns", ()), "source.teacher_score_columns")
    columns = tuple(s.get("teacher_score_columns", ()))
    _check(len(set(columns)) == len(columns), "source.teacher_score_columns",
           "must name distinct columns", columns)
  if kind == "letor":
    files = s.get("teacher_score_file")
    if files is not None:
      _check(set(files.keys()) == {"train", "valid", "test"}, "source.teacher_score_file",
             "must map train, valid and test to tuples of score files", files)
      counts = set()
      for split in ("train", "valid", "test"):
        value = files[split]
        checks.names(value, f"source.teacher_score_file.{split}")
        if value:
          counts.add(len(value))
      _check(len(counts) <= 1, "source.teacher_score_file",
             "must name the same number of score files (one per teacher) for every split "
             "that has any", files.to_dict() if hasattr(files, "to_dict") else files)
      _check(not logged or bool(files["train"]), "source.teacher_score_file.train",
             "a logged teacher needs the train file's scores (one score file per teacher)",
             files["train"])
  if kind not in ("tabular", "letor"):
    return
  m = logged_teacher_sources(config)
  if logged:
    field = ("source.teacher_score_file" if kind == "letor"
             else "source.teacher_score_columns")
    _check(m >= 1, field, "teacher.model.name='logged' needs the logged scores, one "
           "column (file) per teacher", s.get(field.split(".")[-1]))
  else:
    field = ("source.teacher_score_file" if kind == "letor"
             else "source.teacher_score_columns")
    _check(m == 0, field, "logged teacher scores are read only as the teacher of "
           "--config.teacher.model.name=logged; set it, or leave this field empty",
           s.get(field.split(".")[-1]) if s is not None else None)
