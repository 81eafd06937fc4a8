"""Bring your own data: a Parquet or CSV table as a TFDS dataset (``prerank_tabular``).

One row per (request, candidate). ``config.source`` names the columns:

* ``request_column``: groups rows into requests (any type; requests keep the order of
  their first row);
* ``context_columns``: request features (must be constant within a request);
* ``item_columns``: candidate features the student (and teacher) see;
* ``cross_columns``: candidate features only the teacher sees;
* ``label_column``: the graded label (≥ 0); null where the candidate was not shown;
* ``exposed_column`` (optional): a bool/0-1 column; without it a row is exposed when its
  label is not null;
* ``truth_column`` (optional): graded truth of every candidate; without it
  ``true_relevance`` is the logged label (0 where not exposed);
* ``propensity_column`` (optional): examination propensity of exposed rows, in (0, 1];
* ``candidate_column`` (optional): the user's candidate IDs (any type), carried through to
  every output; without it a candidate's ID is its 1-based data row number in its file
  (the header is not a row);
* ``teacher_score_columns`` (optional): logged scores of rankers trained elsewhere, one
  column per teacher, null where a ranker gave no score: the teacher of
  ``teacher.model.name="logged"`` (:mod:`prerank_jax.data.logged_teacher`);
* ``context_id_columns``, ``item_id_columns`` (optional): categorical IDs (any type; the
  request-side ones constant per request), and ``sequence_column`` (optional): a Parquet
  list column of the user's behaviour (IDs of the first item ID field; the request's first
  row's list, its first ``sequence_length`` entries). Every ID is hashed with
  :func:`prerank_jax.batch.hash_ids` into ``id_buckets`` rows (null → the reserved row 0)
  into the batch's ``context_ids``, ``item_ids``, ``sequence_ids`` / ``sequence_mask``;
* ``split_column`` (optional): ``train``/``valid``/``test`` per row. Without it, the files
  ``train_file``/``valid_file``/``test_file`` are the splits, and a split without a file is
  carved from train by request (``valid_fraction``, ``test_fraction``, seeded).

Checked before anything is written (each error names the file and line, or the Parquet
row, and the column): features finite; labels finite and >= 0; truth (if named) present,
finite and >= 0 on every row; propensities (if given) in (0, 1]; the exposed column 0/1;
a request id in one split file only; every CSV line with the header's number of fields;
teacher scores finite or null, and not null on every row of a file.

Each record carries the request ID and its candidates' IDs (a JSON list, ``""`` on
padding), read back by :func:`split_ids`, and, with ``teacher_score_columns``, the scores as
read (``logged_scores [N, M]``, NaN where null), turned into the batch's teacher when the
data are loaded.

A missing (null) feature is 0. Requests with fewer than ``min_list_size`` candidates are
dropped. **Truncation rule**: a request with more than ``N = list_size`` candidates keeps
all its exposed rows first (in file order, at most N), then a seeded uniform random subset
of the unexposed ones fills the remaining slots; shorter lists are padded (``valid=False``).
Files ending in ``.parquet``/``.pq`` are read as Parquet, anything else as CSV (pyarrow).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from prerank_jax.batch import Batch, hash_ids
from prerank_jax.data import tfds_base
from prerank_jax.data.ids import SplitIds
from prerank_jax.data.logged_teacher import LOGGED, attach_logged_teacher, check_raw_scores
from prerank_jax.fingerprint import fingerprint

VERSION = "1.1.0"
SPLITS = ("train", "valid", "test")
SPLIT_VALUES = {"train": "train", "valid": "valid", "validation": "valid", "vali": "valid",
                "test": "test"}
LICENCE = "your own data: its licence is yours to check."


def read_table(path: str | Path, columns: Sequence[str], *,
               text_columns: Sequence[str] = (),
               list_columns: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """``{column: numpy array}`` of a Parquet or CSV file (only ``columns``): float64 with NaN
  for nulls, or strings for ``text_columns`` (the request id and the split), or Python
  lists (``None`` for nulls) for ``list_columns`` (a behaviour sequence)."""
  import pyarrow as pa

  path = Path(path)
  if path.suffix.lower() in (".parquet", ".pq"):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
  else:
    import pyarrow.csv as pcsv

    try:
      table = pcsv.read_csv(path)
    except pa.ArrowInvalid as e:
      raise ValueError(f"{_malformed_line(path)}: malformed CSV line ({e})") from None
  missing = [c for c in columns if c not in table.column_names]
  if missing:
    raise ValueError(f"{path}: no column(s) {missing}; the table has {table.column_names}")
  out = {}
  for name in columns:
    column = table.column(name)
    if name in list_columns:
      if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"{path}: column {name!r} ({column.type}) must be a list column "
                         "(source.sequence_column: the user's behaviour, a list of IDs)")
      values = np.empty(len(column), dtype=object)
      values[:] = column.to_pylist()
      out[name] = values
      continue
    if name in text_columns:
      out[name] = np.asarray(column.cast(pa.string()).to_pylist(), dtype=object)
      continue
    try:
      out[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
      raise ValueError(f"{path}: column {name!r} ({column.type}) must be numeric") from None
  return out


def _malformed_line(path: Path) -> str:
  """``file:line`` of the first CSV line pyarrow cannot parse (found by a second,
  single-threaded read, which numbers the lines)."""
  import pyarrow.csv as pcsv

  lines = []

  def note(row):
    lines.append(row.number)
    return "skip"

  try:
    pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False),
                  parse_options=pcsv.ParseOptions(invalid_row_handler=note))
  except Exception:  # another kind of damage: name the file alone
    lines.clear()
  return f"{path}:{lines[0]}" if lines and lines[0] else str(path)


def _where(path: str, row: int) -> str:
  """``file:line`` of a CSV data row (line 1 is the header), or ``file (row r)``."""
  if Path(path).suffix.lower() in (".parquet", ".pq"):
    return f"{path} (row {row + 1})"
  return f"{path}:{row + 2}"


def check_table(table: Mapping[str, np.ndarray], path: str, s: Mapping[str, Any]) -> None:
  """Refuses values the dataset cannot hold, naming ``file:line`` and the column.

  Raises:
    ValueError: a non-finite feature; a label that is not null, finite and >= 0; a truth
      value that is null, non-finite or < 0; a propensity outside (0, 1]; an exposed value
      other than 0/1.
  """
  def first(bad: np.ndarray, column: str, rule: str) -> None:
    rows = np.flatnonzero(bad)
    if rows.size:
      value = float(table[column][rows[0]])
      raise ValueError(f"{_where(path, rows[0])}: column {column!r} is "
                       f"{'null' if np.isnan(value) else value}; {rule}")

  for c in (*s["context_columns"], *s["item_columns"], *s["cross_columns"]):
    values = _floats(table[c], c)
    first(np.isinf(values), c, "features must be finite (null reads as 0)")
  label = _floats(table[s["label_column"]], s["label_column"])
  first(np.isinf(label) | (label < 0), s["label_column"],
        "labels must be finite grades >= 0 (null where not shown)")
  if s["truth_column"]:
    truth = _floats(table[s["truth_column"]], s["truth_column"])
    first(~np.isfinite(truth) | (truth < 0), s["truth_column"],
          "truth must be a finite grade >= 0 on every row (no nulls)")
  if s["propensity_column"]:
    p = _floats(table[s["propensity_column"]], s["propensity_column"])
    first(~np.isnan(p) & ~((p > 0) & (p <= 1)), s["propensity_column"],
          "propensities must be in (0, 1] (null where not shown)")
  if s["exposed_column"]:
    e = _floats(table[s["exposed_column"]], s["exposed_column"])
    first(~np.isnan(e) & (e != 0) & (e != 1), s["exposed_column"],
          "exposed must be 0 or 1 (or true/false)")
  if s.get("candidate_column"):  # an ID keys the outputs: none may be missing
    ids = table[s["candidate_column"]]
    rows = [i for i, v in enumerate(ids) if v is None or v == ""]
    if rows:
      raise ValueError(f"{_where(path, rows[0])}: column {s['candidate_column']!r} is null "
                       "or empty; every row needs a candidate ID (source.candidate_column)")
  for c in s.get("teacher_score_columns", ()):
    check_raw_scores(_floats(table[c], c), name=f"column {c!r}", source=str(path),
                     where=lambda row: _where(path, row))


def _floats(values: np.ndarray, name: str) -> np.ndarray:
  if values.dtype == object:
    raise ValueError(f"column {name!r} must be numeric")
  return values


def group_rows(request: np.ndarray) -> list[np.ndarray]:
  """Row indices of each request, requests in order of their first row."""
  _, first, inverse = np.unique(request, return_index=True, return_inverse=True)
  order = np.argsort(inverse, kind="stable")
  bounds = np.cumsum(np.bincount(inverse))
  groups = np.split(order, bounds[:-1])
  return [groups[i] for i in np.argsort(first)]


def make_request(rows: np.ndarray, table: Mapping[str, np.ndarray], s: Mapping[str, Any],
                 rng: np.random.Generator, request_id: str) -> dict[str, np.ndarray]:
  n = s["list_size"]
  label = _floats(table[s["label_column"]], s["label_column"])[rows]
  if s["exposed_column"]:
    exposed_all = np.nan_to_num(_floats(table[s["exposed_column"]], s["exposed_column"])[rows]) > 0
  else:
    exposed_all = ~np.isnan(label)
  if len(rows) > n:  # the truncation rule: exposed rows first, then random unexposed ones
    shown = np.flatnonzero(exposed_all)[:n]
    hidden = np.flatnonzero(~exposed_all)
    fill = np.sort(rng.choice(hidden, size=n - len(shown), replace=False)) if n > len(shown) \
        else np.zeros(0, np.int64)
    keep = np.sort(np.concatenate([shown, fill]))
    rows, label, exposed_all = rows[keep], label[keep], exposed_all[keep]
  if s.get("candidate_column"):
    candidates = [str(c) for c in table[s["candidate_column"]][rows]]
  else:  # the 1-based data row number in its file
    candidates = [str(int(r) + 1) for r in rows]
  k = len(rows)
  pad = functools.partial(tfds_base.pad_rows, length=n)
  feats = lambda cols: (np.nan_to_num(np.stack([_floats(table[c], c)[rows] for c in cols], 1))
                        if cols else np.zeros((k, 0))).astype(np.float32)
  context = []
  for c in s["context_columns"]:
    values = _floats(table[c], c)[rows]
    if not np.all((values == values[0]) | (np.isnan(values) & np.isnan(values[0]))):
      raise ValueError(f"source.context_columns: column {c!r} varies within request "
                       f"{request_id!r}; context features must be constant per request")
    context.append(0.0 if np.isnan(values[0]) else values[0])
  logged = np.where(exposed_all, np.nan_to_num(label), 0.0)
  if (logged < 0).any():
    raise ValueError(f"{s['label_column']}: labels must be >= 0 (request {request_id!r})")
  record = {
      "context": np.asarray(context, np.float32),
      "items": pad(feats(s["item_columns"])),
      "cross": pad(feats(s["cross_columns"])),
      "label": pad(logged.astype(np.float32)),
      "exposed": pad(exposed_all),
      "valid": np.arange(n) < k,
      "request_id": request_id,
      tfds_base.CANDIDATE_IDS: candidates + [""] * (n - k),
  }
  record.update(id_fields(rows, table, s, request_id))
  scored = list(s.get("teacher_score_columns", ()))
  if scored:  # as read: NaN where the ranker gave no score (logged_teacher.py)
    record[tfds_base.LOGGED_SCORES] = pad(np.stack([_floats(table[c], c)[rows]
                                                    for c in scored], 1).astype(np.float32))
  truth = (np.nan_to_num(_floats(table[s["truth_column"]], s["truth_column"])[rows])
           if s["truth_column"] else logged)
  record["true_relevance"] = pad(truth.astype(np.float32))
  if s["propensity_column"]:
    p = _floats(table[s["propensity_column"]], s["propensity_column"])[rows]
    record["propensity"] = pad(np.where(exposed_all, np.nan_to_num(p, nan=1.0), 1.0)
                               .astype(np.float32))
  return record


def id_fields(rows: np.ndarray, table: Mapping[str, np.ndarray], s: Mapping[str, Any],
              request_id: str) -> dict[str, np.ndarray]:
  """The request's hashed ID fields (``hash_ids`` into ``source.id_buckets`` rows):
  ``context_ids [Cc]`` (constant per request), ``item_ids [N, Ci]`` (0 on padding) and,
  with ``source.sequence_column``, ``sequence_ids [L, 1]`` and ``sequence_mask [L]`` from
  the request's first row (its first ``source.sequence_length`` IDs)."""
  n, buckets, out = s["list_size"], int(s.get("id_buckets", 100_003)), {}
  text = lambda c: ["" if v is None else str(v) for v in table[c][rows]]
  if s.get("context_id_columns"):
    ids = []
    for c in s["context_id_columns"]:
      values = text(c)
      if any(v != values[0] for v in values):
        raise ValueError(f"source.context_id_columns: column {c!r} varies within request "
                         f"{request_id!r}; request-side IDs must be constant per request")
      ids.append(values[0])
    out["context_ids"] = hash_ids(np.asarray(ids, dtype=object), buckets)
  if s.get("item_id_columns"):
    ids = np.stack([hash_ids(np.asarray(text(c), dtype=object), buckets)
                    for c in s["item_id_columns"]], 1)
    out["item_ids"] = tfds_base.pad_rows(ids, n)
  if s.get("sequence_column"):
    length = int(s.get("sequence_length", 20))
    behaviour = list(table[s["sequence_column"]][rows[0]] or [])[:length]
    ids = hash_ids(np.asarray(behaviour + [None] * (length - len(behaviour)), dtype=object),
                   buckets)
    out["sequence_ids"] = ids[:, None]
    out["sequence_mask"] = ids > 0
  return out


def columns_of(s: Mapping[str, Any]) -> list[str]:
  """Every column the config names, the request column first."""
  cols = [s["request_column"], s["label_column"], *s["context_columns"], *s["item_columns"],
          *s["cross_columns"]]
  cols += [s[k] for k in ("exposed_column", "truth_column", "propensity_column",
                          "split_column") if s[k]]
  cols += [s["candidate_column"]] if s.get("candidate_column") else []
  cols += list(s.get("teacher_score_columns", ()))
  cols += [*s.get("context_id_columns", ()), *s.get("item_id_columns", ())]
  cols += [s["sequence_column"]] if s.get("sequence_column") else []
  return list(dict.fromkeys(cols))


def build_requests(files: Mapping[str, str], s: Mapping[str, Any]) -> dict[str, list[dict]]:
  columns = columns_of(s)
  text = ([s["request_column"]] + ([s["split_column"]] if s["split_column"] else [])
          + ([s["candidate_column"]] if s.get("candidate_column") else []))
  text += [*s.get("context_id_columns", ()), *s.get("item_id_columns", ())]
  lists = [s["sequence_column"]] if s.get("sequence_column") else []
  tables = {split: read_table(path, columns, text_columns=text, list_columns=lists)
            for split, path in files.items() if path}
  owner: dict[str, str] = {}
  for split, table in tables.items():
    check_table(table, files[split], s)
    if not s["split_column"]:  # one file per split: a request id may not leak across them
      for rid in dict.fromkeys(map(str, table[s["request_column"]])):
        if owner.setdefault(rid, split) != split:
          raise ValueError(f"{files[split]}: column {s['request_column']!r}: request "
                           f"{rid!r} also occurs in the {owner[rid]} file "
                           f"{files[owner[rid]]}; a request must be in exactly one split")
  groups: dict[str, list[tuple[str, np.ndarray, dict]]] = {split: [] for split in SPLITS}
  for split, table in tables.items():
    request = table[s["request_column"]]
    for rows in group_rows(request):
      target = split
      if s["split_column"]:
        values = {str(v).strip().lower() for v in table[s["split_column"]][rows]}
        if len(values) != 1 or next(iter(values)) not in SPLIT_VALUES:
          raise ValueError(f"source.split_column: request {request[rows[0]]!r} has split "
                           f"values {sorted(values)}; each request needs one of "
                           f"{sorted(SPLIT_VALUES)}")
        target = SPLIT_VALUES[next(iter(values))]
      groups[target].append((str(request[rows[0]]), rows, table))
  carve = [x for x in ("valid", "test") if not groups[x]]
  if carve:
    train = groups["train"]
    order = np.random.default_rng([s["seed"], 13]).permutation(len(train))
    counts = {x: max(1, int(round(s[f"{x}_fraction"] * len(train)))) for x in carve}
    if sum(counts.values()) >= len(train):
      raise ValueError(f"tabular: {len(train)} train requests are too few to carve "
                       f"{counts} from")
    start = 0
    for x in carve:
      groups[x] = [train[i] for i in sorted(order[start:start + counts[x]])]
      start += counts[x]
    groups["train"] = [train[i] for i in sorted(order[start:])]
  out = {}
  for split_index, split in enumerate(SPLITS):
    out[split] = []
    for q, (rid, rows, table) in enumerate(groups[split]):
      if len(rows) < s["min_list_size"]:
        continue
      rng = np.random.default_rng([s["seed"], split_index, q])
      out[split].append(make_request(rows, table, s, rng, rid))
    if not out[split]:
      raise ValueError(f"tabular: split {split!r} has no request with at least "
                       f"source.min_list_size={s['min_list_size']} candidates")
  return out


def _builder_class():
  import tensorflow_datasets as tfds

  tfds_base.quiet_tfds()

  @dataclasses.dataclass
  class TabularConfig(tfds.core.BuilderConfig):
    files: dict = dataclasses.field(default_factory=dict)
    params: dict = dataclasses.field(default_factory=dict)

  class PrerankTabular(tfds.core.GeneratorBasedBuilder):
    """A Parquet/CSV table in the prerank-jax batch schema (see the module docstring)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Candidate IDs; logged teacher scores."}
    BUILDER_CONFIGS = [TabularConfig(name="placeholder", params=dict(
        list_size=1, context_columns=[], item_columns=["x"], cross_columns=[],
        propensity_column=""), description="use prerank_jax.data.tabular.make_builder")]

    def _shapes(self):
      p = self.builder_config.params
      shapes = tfds_base.record_shapes(
          context=len(p["context_columns"]), list_size=p["list_size"],
          items=len(p["item_columns"]), cross=len(p["cross_columns"]), truth=True,
          propensity=bool(p["propensity_column"]),
          context_ids=len(p.get("context_id_columns", ())),
          item_ids=len(p.get("item_id_columns", ())),
          sequence=(int(p.get("sequence_length", 20)), 1) if p.get("sequence_column")
          else (0, 0))
      if p.get("teacher_score_columns"):
        shapes[tfds_base.LOGGED_SCORES] = ((p["list_size"], len(p["teacher_score_columns"])),
                                           np.float32)
      return shapes

    def _info(self):
      c = self.builder_config
      files = {k: v for k, v in c.files.items() if v}
      return tfds_base.dataset_info(
          self, self._shapes(), description=__doc__, license_note=LICENCE,
          metadata={"params": c.params, "files": files,
                    "file_signature": tfds_base.file_signature(files.values())
                    if all(Path(f).is_file() for f in files.values()) else None},
          candidate_ids=True)

    def _split_generators(self, dl_manager):
      self._requests = (_CHECKED.pop(self.builder_config.name, None)
                        or build_requests(self.builder_config.files,
                                          self.builder_config.params))
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      shapes = self._shapes()
      for i, record in enumerate(self._requests[split]):
        yield i, tfds_base.check_record(record, shapes)

  return PrerankTabular, TabularConfig


# The builder classes, defined on first use (TFDS is imported lazily).
builder_classes = functools.cache(_builder_class)
# Requests built (and so checked) by load() before TFDS writes anything, by builder name.
_CHECKED: dict[str, dict[str, list[dict]]] = {}


PARAMS = ("list_size", "min_list_size", "request_column", "label_column", "context_columns",
          "item_columns", "cross_columns", "exposed_column", "truth_column",
          "propensity_column", "split_column", "valid_fraction", "test_fraction")


# Fields added later, with the value a config made before them means.
NEWER_PARAMS = {"candidate_column": "", "teacher_score_columns": ()}
# The ID fields (issue 21): in the params only when a table has IDs, so a table without
# them keeps its prepared dataset (its name fingerprints the params).
ID_PARAMS = {"context_id_columns": (), "item_id_columns": (), "sequence_column": "",
             "sequence_length": 20, "id_buckets": 100_003}


def params_of(config) -> dict[str, Any]:
  s = config.source
  out = {k: (list(s[k]) if isinstance(s[k], (tuple, list)) else s[k]) for k in PARAMS}
  for k, default in NEWER_PARAMS.items():
    value = s.get(k, default)
    out[k] = list(value) if isinstance(value, (tuple, list)) else value
  if any(s.get(k, d) for k, d in ID_PARAMS.items() if k.endswith(("columns", "column"))):
    for k, default in ID_PARAMS.items():
      value = s.get(k, default)
      out[k] = list(value) if isinstance(value, (tuple, list)) else value
  out["seed"] = int(config.seed)
  return out


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)``; see :func:`prerank_jax.data.letor.make_builder`."""
  from prerank_jax.data import messages

  s = config.source
  data_dir = tfds_base.default_data_dir(s.data_dir)
  manual = (Path(s.manual_dir).expanduser() if s.manual_dir
            else data_dir / "downloads" / "manual" / "tabular").resolve()
  files = {split: str((manual / s[f"{split}_file"]).resolve()) if s[f"{split}_file"] else ""
           for split in SPLITS}
  if not files["train"]:
    raise ValueError("source.train_file: the table (Parquet or CSV) is required")
  params = params_of(config)
  stem = Path(files["train"]).name.split(".")[0] or "table"
  name = f"{stem}-n{params['list_size']}-{fingerprint([files, params], length=10)}"
  cls, config_cls = builder_classes()
  builder = cls(config=config_cls(name=name, files=files, params=params,
                                  description=f"table {files['train']}"),
                data_dir=str(data_dir), file_format="array_record")
  absent = [f for f in files.values() if f and not Path(f).is_file()]
  if tfds_base.is_prepared(builder):
    meta = json.loads((Path(str(builder.data_path)) / "metadata.json").read_text())
    present = [f for f in files.values() if f]
    if (not absent and meta.get("file_signature")
        and [list(x) for x in tfds_base.file_signature(present)] != meta["file_signature"]):
      raise ValueError(f"tabular: {files['train']} (or another split file) changed since it "
                       f"was prepared into {builder.data_path}; delete that directory to "
                       "prepare it again")
    return builder, None
  if absent:
    return None, messages.missing_message(
        config, kind="tabular",
        what="your own Parquet/CSV table, one row per (request, candidate)",
        licence=LICENCE, manual_dir=manual,
        where=[(f, "missing" if f in absent else "found") for f in files.values() if f])
  return builder, None


def load(config, *, show: bool = False, lazy_train: bool = False
         ) -> tuple[dict[str, Batch], Any]:
  builder, missing = make_builder(config)
  if builder is None:
    raise tfds_base.DatasetMissingError(missing)
  if not tfds_base.is_prepared(builder):  # every check runs before TFDS writes a file
    c = builder.builder_config
    _CHECKED[c.name] = build_requests(c.files, c.params)
  try:
    builder = tfds_base.prepare(builder, missing=None, show=show)
  finally:
    _CHECKED.clear()
  splits = tfds_base.read_splits(builder, SPLITS, lazy_train=lazy_train)
  if config.teacher.model.name == LOGGED:
    columns = list(config.source.teacher_score_columns)
    for split in SPLITS:
      # A train split left on disk: its IDs are not read (messages give row numbers).
      lazy = isinstance(splits[split], tfds_base.RecordSplit)
      ids = None if lazy else split_ids(config, builder, split)
      splits[split] = attach_logged_teacher(
          splits[split], tfds_base.read_array_field(builder, split, tfds_base.LOGGED_SCORES),
          names=[f"column {c!r}" for c in columns], kind=config.teacher.score_kind,
          missing=config.teacher.missing, split=split,
          request_ids=None if ids is None else ids.request,
          candidate_ids=None if ids is None else ids.candidate)
  return splits, builder


def split_ids(config, builder, split: str) -> SplitIds:
  """The user's IDs of one prepared split: the request column and the candidate column
  (without one, each candidate's 1-based data row number in its file), under the user's
  column names."""
  s = config.source
  return tfds_base.split_ids(builder, split, request_column=s.request_column,
                             candidate_column=s.get("candidate_column", "") or "candidate_id")
