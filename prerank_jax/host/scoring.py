"""Score new candidates with an exported student: ``prerank-jax score DIR --input FILE
--output scores.parquet``.

Input, one row per candidate, with the raw columns the artifact's ``features.json`` names
(the same columns, under the same names, as the table the run trained on):

* **Parquet** (``.parquet``/``.pq``): read one batch of rows at a time from its row groups
  (``pyarrow.parquet.ParquetFile.iter_batches``), so a table larger than memory works;
* **CSV** (anything else, for tabular artifacts; ``.gz``/``.bz2`` are decompressed): read in
  blocks by pyarrow's streaming CSV reader, every feature column parsed as float64;
* **LETOR/LibSVM** (an artifact exported from a LETOR run, a file not ending in
  ``.parquet``/``.pq``/``.csv``): ``label qid:Q f:v ...`` lines, parsed whole (the context
  input is the query's length, known only after its last line).

Output (Parquet, written to a temporary sibling and renamed into place when every row is
scored, so a failure leaves no partial file and an earlier output stays as it was): the
user's ID columns under their own names (the artifact's request column, its candidate column
when it has one, then ``keep`` columns, in that order), then ``score`` (float32), in input
order. For LETOR input the ID columns are ``qid`` and ``docid`` (the line's
``#docid = …`` comment, else its 1-based line number in the file, as the loader names
candidates), grouped by query (queries in the order of their first line).

Each row becomes the model inputs exactly as the loader made them at training time: a null
feature reads as 0 and a non-finite one is refused (tabular); LETOR features are normalised
with the train split's statistics kept in the artifact. Before anything is written, the
input is refused, naming the column, when a feature or ID column is missing, when a feature
column is not numeric, or when an output column name would repeat; a value that cannot be
read as a number in a later CSV block, or an infinite feature, stops the run naming the
column (and row) with no output written.

**Students over categorical IDs** (``features.json`` has ``ids``;
:func:`prerank_jax.host.artifact.id_spec`): the input also has the artifact's ID columns
under their training names, and its behaviour column (a Parquet list column). They become
embedding rows exactly as the loader made them: with ``map: hash`` each ID is read as text
(Arrow's cast to string, null → ``""``) and hashed as
:func:`prerank_jax.batch.hash_ids` does (:func:`hash_unique`, the same function
vectorised) into ``buckets`` rows (``""`` → the reserved row 0); the behaviour list's elements are
hashed as the Python values they read as, its first ``L`` kept, padded with row 0, and
``sequence_mask`` is ``row > 0``. As the loader takes a request's behaviour from its first
row, a row takes the list of the first row of its run of consecutive rows with the same
request ID (so a table with the list on the first row of each request only scores as it
trained). With ``map: rows`` (the simulator's IDs) an integer is the row itself and a value
outside ``[1, rows)`` or a null is row 0. An ID column that is missing, or whose type
differs from the training table's (``integer``, ``string``, ``float``, ``list<...>``: cast
it, e.g. to string, to match), is refused by name before anything is written; a CSV input
cannot hold the behaviour list column and is refused for such an artifact (give Parquet).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from prerank_jax.host.export import _atomic
from prerank_jax.host.artifact import ArtifactError, StudentArtifact, id_type, load_artifact

BATCH_ROWS = 16_384  # rows per scoring call: one compiled shape (the last batch is padded)
CSV_BLOCK_BYTES = 1 << 22  # CSV bytes per block read (types are inferred from the first)
SCORE_COLUMN = "score"
TABLE_SUFFIXES = (".parquet", ".pq")


class ScoreSummary(NamedTuple):
  """What :func:`score_file` did: rows scored, output path, wall seconds."""

  rows: int
  output: Path
  seconds: float


def _is_parquet(path: Path) -> bool:
  return path.suffix.lower() in TABLE_SUFFIXES


def _is_csv(path: Path) -> bool:
  suffixes = [s.lower() for s in path.suffixes]
  return ".csv" in suffixes or ".tsv" in suffixes


def _numeric(t) -> bool:
  import pyarrow as pa

  return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
          or pa.types.is_decimal(t) or pa.types.is_null(t))


def _check_columns(path: Path, schema, features: Sequence[str], ids: Sequence[str]) -> None:
  """Refuses a table that lacks a column or holds a non-numeric feature, naming it."""
  names = list(schema.names)
  missing = [c for c in features if c not in names]
  if missing:
    raise ArtifactError(f"{path}: no feature column(s) {missing}; the artifact needs "
                        f"{list(features)} (its inputs, in order), the table has {names}")
  missing = [c for c in ids if c not in names]
  if missing:
    raise ArtifactError(f"{path}: no ID column(s) {missing} to pass through; the table has "
                        f"{names}")
  for c in features:
    t = schema.field(c).type
    if not _numeric(t):
      raise ArtifactError(f"{path}: feature column {c!r} is {t}, not numeric; features "
                          "must be numbers (null reads as 0)")


def _output_columns(spec: dict, keep: Sequence[str]) -> list[str]:
  ids = [c for c in (spec.get("request_column"), spec.get("candidate_column")) if c]
  columns = list(dict.fromkeys([*ids, *keep]))
  if SCORE_COLUMN in columns:
    raise ArtifactError(f"an ID or --keep column is named {SCORE_COLUMN!r}, the name of the "
                        "score column; rename it")
  return columns


def _features_of(batch, names: Sequence[str], *, path: Path, first_row: int) -> np.ndarray:
  """``[rows, len(names)]`` float64 of a record batch: null → 0, infinity refused."""
  import pyarrow as pa

  out = np.zeros((batch.num_rows, len(names)), np.float64)
  for j, name in enumerate(names):
    column = batch.column(batch.schema.get_field_index(name))
    try:
      values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
      raise ArtifactError(f"{path}: feature column {name!r} ({column.type}) cannot be read "
                          "as numbers") from None
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
      raise ArtifactError(f"{path} (row {first_row + bad[0] + 1}): feature column {name!r} "
                          f"is {values[bad[0]]}; features must be finite (null reads as 0)")
    out[:, j] = np.nan_to_num(values, nan=0.0)
  return out


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
  """``x`` with zero rows appended up to ``rows`` (False for a bool mask)."""
  k = x.shape[0]
  return x if k >= rows else np.concatenate([x, np.zeros((rows - k, *x.shape[1:]), x.dtype)])


class _Padded:
  """Scores arrays of any length with one compiled shape: rows padded to ``BATCH_ROWS``."""

  def __init__(self, artifact: StudentArtifact, rows: int = BATCH_ROWS):
    self.artifact, self.rows = artifact, rows

  def __call__(self, context: np.ndarray, items: np.ndarray,
               ids: dict[str, np.ndarray] | None = None) -> np.ndarray:
    n = items.shape[0]
    out = np.empty(n, np.float32)
    for start in range(0, n, self.rows):
      part = slice(start, start + self.rows)
      k = items[part].shape[0]
      c, x = _pad(context[part], self.rows), _pad(items[part], self.rows)
      i = None if ids is None else {f: _pad(v[part], self.rows) for f, v in ids.items()}
      out[start:start + k] = self.artifact.score(c, x, i)[:k]
    return out


# --- categorical IDs -----------------------------------------------------------------------

LONG_KEY = 256  # bytes; longer IDs are hashed one by one
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xcbf29ce484222325), np.uint64(0x100000001b3)


def hash_unique(values: Sequence[Any], buckets: int) -> np.ndarray:
  """:func:`prerank_jax.batch.hash_ids` of a list of values, vectorised over them.

  The same rows as ``hash_ids`` (``tests/host/test_artifact_ids.py`` checks it on random
  text, unicode, integers, bytes, ``None`` and ``""``): each value's key is its bytes, or
  the UTF-8 of ``str(value)``; FNV-1a 64 runs one byte position at a time over all keys at
  once (uint64 products wrap mod 2^64, as the definition's ``mod 2^64``); ``None`` and an
  empty key map to row 0, the others to ``1 + h mod (buckets − 1)``. The loader's
  ``hash_ids`` loops in Python (about 20 µs per distinct ID here); scoring streams millions.
  """
  if not 2 <= int(buckets) <= 2**31 - 1:
    raise ValueError(f"hash_buckets: must be an int in [2, 2147483647], got {buckets!r}")
  keys = [b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8")
          for v in values]
  rows = np.zeros(len(keys), np.int32)
  if not keys:
    return rows
  lengths = np.fromiter((len(k) for k in keys), np.int64, len(keys))
  long = np.flatnonzero(lengths > LONG_KEY)  # rare: one at a time, not a wide byte matrix
  if long.size:
    from prerank_jax.batch import fnv1a_64

    for i in long:
      rows[i] = 1 + fnv1a_64(keys[i]) % (int(buckets) - 1)
      keys[i], lengths[i] = b"", 0
  width = int(lengths.max())
  if width == 0:
    return rows
  data = np.frombuffer(b"".join(k.ljust(width, b"\0") for k in keys), np.uint8)
  data = data.reshape(len(keys), width).astype(np.uint64)
  h = np.full(len(keys), _FNV_OFFSET, np.uint64)
  with np.errstate(over="ignore"):
    for j in range(width):
      live = lengths > j
      h = np.where(live, (h ^ data[:, j]) * _FNV_PRIME, h)
  real = lengths > 0  # the long keys' rows are set already
  rows[real] = (1 + h[real] % np.uint64(int(buckets) - 1)).astype(np.int32)
  return rows


def _hash_text(column, buckets: int) -> np.ndarray:
  """``[rows]`` int32: ``hash_ids`` of a column read as text (the loader's
  ``cast(string)``, null → ``""`` → row 0); each distinct value is hashed once."""
  import pyarrow as pa

  encoded = column.cast(pa.string()).dictionary_encode()
  return _rows_of(encoded, hash_unique(encoded.dictionary.to_pylist(), buckets))


def _hash_values(values, buckets: int) -> np.ndarray:
  """``[len(values)]`` int32: ``hash_ids`` of the Python values an Arrow array reads as
  (the loader hashes a behaviour list's elements as ``to_pylist`` gives them)."""
  encoded = values.dictionary_encode()
  return _rows_of(encoded, hash_unique(encoded.dictionary.to_pylist(), buckets))


def _rows_of(encoded, table: np.ndarray) -> np.ndarray:
  indices = encoded.indices.to_numpy(zero_copy_only=False)
  valid = ~np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False), bool)
  out = np.zeros(len(encoded), np.int32)
  out[valid] = table[indices[valid].astype(np.int64)]
  return out


def _as_rows(values, rows: int) -> np.ndarray:
  """``[len]`` int32 of integer IDs that are rows already: outside ``[1, rows)`` or null → 0."""
  import pyarrow as pa

  x = values.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
  return np.where((x >= 1) & (x < rows), x, 0).astype(np.int32)


def _behaviour(column, entry: dict, spec: dict, length: int) -> np.ndarray:
  """``[rows, L]`` int32 of a list column: each row's first ``L`` IDs mapped, row 0 after."""
  import pyarrow as pa

  values = column.values  # the whole child array; offsets index into it (even if sliced)
  if pa.types.is_null(values.type):  # lists that are all empty or hold only nulls
    mapped = np.zeros(len(values), np.int32)
  elif spec["map"] == "hash":
    mapped = _hash_values(values, int(spec["buckets"]))
  else:
    mapped = _as_rows(values, int(entry["rows"]))
  offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), np.int64)
  count = np.minimum(offsets[1:] - offsets[:-1], length)
  count[np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)] = 0
  slots = np.arange(length)
  inside = slots[None, :] < count[:, None]
  index = np.where(inside, offsets[:-1, None] + slots[None, :], 0)
  if not len(mapped):
    return np.zeros((len(column), length), np.int32)
  return np.where(inside, mapped[np.minimum(index, len(mapped) - 1)], 0).astype(np.int32)


class _IdReader:
  """Turns the raw ID columns of record batches into the artifact's ID inputs (see the
  module docstring); carries the behaviour of a request whose rows span two batches."""

  def __init__(self, spec: dict, request_column: str,
               groups: Sequence[str] = ("context", "items", "sequence")):
    self.spec, self.request_column, self.groups = spec, request_column, tuple(groups)
    self.length = int(spec.get("sequence_length", 0))
    self.carry: tuple[str, np.ndarray] | None = None  # (request ID, its behaviour [L, Cs])

  def columns(self) -> list[str]:
    return [c["name"] for g in self.groups for c in self.spec.get(g, ())]

  def check(self, path: Path, schema, *, csv: bool) -> None:
    """Refuses, naming the column, a missing ID column, a type other than the training
    table's, and a behaviour column in a CSV input."""
    names = list(schema.names)
    missing = [c for c in self.columns() if c not in names]
    if missing:
      raise ArtifactError(f"{path}: no ID column(s) {missing}; the artifact's student reads "
                          f"the categorical columns {self.columns()}, the table has {names}")
    for group in self.groups:
      for entry in self.spec.get(group, ()):
        name, want = entry["name"], entry.get("type")
        if group == "sequence" and csv:
          raise ArtifactError(f"{path}: ID column {name!r} is the behaviour sequence, a list "
                              "of IDs per row, which CSV cannot hold; give the input as "
                              "Parquet with it as a list column")
        got = id_type(schema.field(name).type)
        listed = got.startswith("list<")
        if group == "sequence" and not listed:
          raise ArtifactError(f"{path}: ID column {name!r} is {schema.field(name).type}; the "
                              f"behaviour sequence must be a list column ({want or 'list'})")
        if group != "sequence" and listed:
          raise ArtifactError(f"{path}: ID column {name!r} is a list column; it holds one ID "
                              f"per row ({want or 'integer or string'})")
        if self.spec["map"] == "rows":
          want = "list<integer>" if group == "sequence" else "integer"
        if want and got != want and got not in ("null", "list<null>"):
          raise ArtifactError(f"{path}: ID column {name!r} is {got} "
                              f"({schema.field(name).type}); the student was trained on "
                              f"{want} IDs in it, and other types hash to other rows: cast "
                              f"the column to {want}")

  def __call__(self, batch) -> dict[str, np.ndarray]:
    n = batch.num_rows
    column = lambda name: batch.column(batch.schema.get_field_index(name))
    spec = self.spec

    def flat(entries) -> np.ndarray:
      out = np.zeros((n, len(entries)), np.int32)
      for j, entry in enumerate(entries):
        out[:, j] = (_hash_text(column(entry["name"]), int(spec["buckets"]))
                     if spec["map"] == "hash" else _as_rows(column(entry["name"]),
                                                             int(entry["rows"])))
      return out

    out = {}
    if "context" in self.groups:
      out["context_ids"] = flat(spec.get("context", ()))
    if "items" in self.groups:
      out["item_ids"] = flat(spec.get("items", ()))
    if "sequence" in self.groups:
      sequence = np.zeros((n, self.length, len(spec.get("sequence", ()))), np.int32)
      for j, entry in enumerate(spec.get("sequence", ())):
        sequence[:, :, j] = _behaviour(column(entry["name"]), entry, spec, self.length)
      if sequence.shape[-1] and self.request_column and n:
        sequence = self._first_row_of_run(column(self.request_column), sequence)
      out["sequence_ids"] = sequence
      out["sequence_mask"] = ((sequence[:, :, 0] > 0) if sequence.shape[-1]
                              else np.zeros((n, self.length), bool))
    return out

  def _first_row_of_run(self, request, sequence: np.ndarray) -> np.ndarray:
    """Each row's behaviour replaced by that of the first row of its run of consecutive
    rows with the same request ID (the loader reads a request's first row's list)."""
    import pyarrow as pa

    ids = np.asarray(request.cast(pa.string()).fill_null("").to_pylist(), dtype=object)
    n = len(ids)
    start = np.ones(n, bool)
    start[1:] = ids[1:] != ids[:-1]
    continues = self.carry is not None and self.carry[0] == ids[0]
    start[0] = not continues
    source = np.maximum.accumulate(np.where(start, np.arange(n), -1))
    out = np.where((source >= 0)[:, None, None], sequence[np.maximum(source, 0)],
                   self.carry[1][None] if continues else 0)
    self.carry = (ids[-1], out[-1].copy())
    return out.astype(np.int32)


def _table_batches(path: Path, features: Sequence[str], ids: Sequence[str], *,
                   rows: int, id_reader: _IdReader | None = None) -> Iterator[Any]:
  """Record batches of a Parquet or CSV table (only the needed columns), schema checked
  before the first is returned."""
  import pyarrow as pa

  categorical = id_reader.columns() if id_reader is not None else []
  needed = list(dict.fromkeys([*ids, *features, *categorical]))
  if _is_parquet(path):
    import pyarrow.parquet as pq

    try:
      # pre_buffer off: pyarrow would otherwise read ahead far more than one batch (a
      # 400 MB file held 200 MiB of Arrow memory; without it 14 MiB).
      reader = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as e:
      raise ArtifactError(f"{path}: not a readable Parquet file ({e})") from None
    _check_columns(path, reader.schema_arrow, features, ids)
    if id_reader is not None:
      id_reader.check(path, reader.schema_arrow, csv=False)
    yield from reader.iter_batches(batch_size=rows, columns=needed)
    return
  import pyarrow.csv as pcsv

  try:  # the header and the first block's inferred types: checked before anything else
    probe = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
  except (pa.ArrowInvalid, OSError) as e:
    raise ArtifactError(f"{path}: not a readable CSV file ({e})") from None
  _check_columns(path, probe.schema, features, ids)
  if id_reader is not None:
    id_reader.check(path, probe.schema, csv=True)
  names = list(probe.schema.names)  # the file's columns, as pyarrow numbers them in errors
  probe.close()
  types = {c: pa.float64() for c in features}
  types.update({c: probe.schema.field(c).type for c in [*ids, *categorical]
                if c not in types})
  reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                         convert_options=pcsv.ConvertOptions(include_columns=needed,
                                                             column_types=types))
  while True:
    try:
      batch = reader.read_next_batch()
    except StopIteration:
      return
    except pa.ArrowInvalid as e:
      found = re.search(r"column #(\d+)", str(e))
      name = (f"feature column {names[int(found.group(1))]!r}: "
              if found and int(found.group(1)) < len(names) else "")
      raise ArtifactError(f"{path}: {name}{e} (a feature column must hold numbers only; "
                          "nothing was written)") from None
    yield batch


def _transform(spec: dict, group: str, raw: np.ndarray) -> np.ndarray:
  """Model inputs of one group from raw values ``[rows, F]`` as ``features.json`` says."""
  out = np.empty(raw.shape, np.float32)
  for j, column in enumerate(spec[group]):
    kind = column.get("transform", "raw")
    x = raw[:, j]
    if kind in ("raw", "none"):
      out[:, j] = x
    elif kind in ("log_zscore", "zscore"):
      pre = np.sign(x) * np.log1p(np.abs(x)) if kind == "log_zscore" else x
      out[:, j] = (pre - column["mean"]) / column["std"]
    else:
      raise ArtifactError(f"features.json: column {column['name']!r} has transform "
                          f"{kind!r}, which this version cannot apply")
  return out


def _write_atomic(output: Path, write) -> None:
  output.parent.mkdir(parents=True, exist_ok=True)
  _atomic(output, write)


def _score_table(artifact: StudentArtifact, path: Path, output: Path, keep: Sequence[str],
                 rows: int) -> int:
  import pyarrow as pa
  import pyarrow.parquet as pq

  spec = artifact.features
  context_names = [c["name"] for c in spec["context"]]
  item_names = [c["name"] for c in spec["items"]]
  ids = _output_columns(spec, keep)
  id_reader = (_IdReader(spec["ids"], spec.get("request_column", "") or "")
               if isinstance(spec.get("ids"), dict) else None)
  batches = _table_batches(path, [*context_names, *item_names], ids, rows=rows,
                           id_reader=id_reader)
  first = next(batches, None)  # the schema checks run here, before any output exists
  scorer = _Padded(artifact)
  count = 0

  def write(tmp: Path) -> None:
    nonlocal count
    writer = None
    for batch in _chain(first, batches):
      context = _transform(spec, "context", _features_of(batch, context_names, path=path,
                                                           first_row=count))
      items = _transform(spec, "items", _features_of(batch, item_names, path=path,
                                                     first_row=count))
      scores = scorer(context, items, None if id_reader is None else id_reader(batch))
      table = pa.table({**{c: batch.column(batch.schema.get_field_index(c)) for c in ids},
                        SCORE_COLUMN: pa.array(scores, pa.float32())})
      if writer is None:
        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
      writer.write_table(table)
      count += batch.num_rows
    if writer is None:  # an empty input: an empty output with the columns
      schema = pa.schema([*(pa.field(c, pa.string()) for c in ids),
                          pa.field(SCORE_COLUMN, pa.float32())])
      writer = pq.ParquetWriter(tmp, schema)
    writer.close()

  _write_atomic(output, write)
  return count


def _chain(first, rest) -> Iterator[Any]:
  if first is not None:
    yield first
    yield from rest


def _score_letor(artifact: StudentArtifact, path: Path, output: Path) -> int:
  import pyarrow as pa
  import pyarrow.parquet as pq

  from prerank_jax.data import letor

  spec = artifact.features
  parsed = letor.parse_file(path)
  lines = getattr(parsed, "lines", None)
  line_ids = (letor.data_line_ids(path) if lines is not None
              and hasattr(letor, "data_line_ids") else None)
  list_size = int(spec["context"][0]["list_size"])
  ids = [int(c["feature_id"]) for c in spec["items"]]
  qids, docids, contexts, items = [], [], [], []
  for q, (qid, block) in enumerate(zip(parsed.qids, parsed.features)):
    length = block.shape[0]
    raw = np.zeros((length, len(ids)), np.float64)
    present = [j for j, f in enumerate(ids) if f < block.shape[1]]
    raw[:, present] = block[:, [ids[j] for j in present]]
    items.append(_transform(spec, "items", raw))
    contexts.append(np.full((length, 1), np.log1p(length) / np.log1p(list_size), np.float32))
    qids += [qid] * length
    if line_ids is not None:  # the loader's candidate IDs: #docid = …, else the line number
      docids += [str(d) for d in line_ids[lines[q]]]
    else:  # a .query group file without line indices: the document's place in its query
      docids += [str(i + 1) for i in range(length)]
  context = np.concatenate(contexts) if contexts else np.zeros((0, 1), np.float32)
  item = np.concatenate(items) if items else np.zeros((0, len(ids)), np.float32)
  scores = _Padded(artifact)(context, item)
  table = pa.table({"qid": pa.array(qids, pa.string()), "docid": pa.array(docids, pa.string()),
                    SCORE_COLUMN: pa.array(scores, pa.float32())})
  _write_atomic(output, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
  return len(qids)


EMBEDDING_COLUMN = "embedding"
EMBED_SIDES = ("items", "users")


def embed_file(artifact: str | Path | StudentArtifact, input: str | Path, output: str | Path,
               *, side: str, keep: Sequence[str] = (),
               batch_rows: int = BATCH_ROWS) -> ScoreSummary:
  """Tower vectors of a ``dssm`` artifact for every row of a table: the cached serving path.

  ``side="items"``: a catalogue with the artifact's item feature and item ID columns; each
  row's item vector ``v`` (``prerank-jax score DIR --input catalogue.parquet --output
  items.parquet --embed items``). ``side="users"``: a table with the context feature, context
  ID and behaviour columns (one row per user or request; each row's own behaviour list);
  each row's ``u``. A candidate's score is ``Σ_d u_d v_d`` (the exported ``score`` equals it
  up to float32 summation order). Columns are mapped and checked as in :func:`score_file`.

  Output (Parquet, atomic as :func:`score_file`): the side's ID columns (item ID columns, or
  context ID columns), then ``keep`` columns, then ``embedding`` (a fixed-size list of D
  float32), in input order.

  Raises:
    ArtifactError: the artifact has no towers (only ``dssm`` exports them), a LETOR
      artifact, or an input it cannot read (the message names the column).
  """
  import pyarrow as pa
  import pyarrow.parquet as pq

  t0 = time.perf_counter()
  art = artifact if isinstance(artifact, StudentArtifact) else load_artifact(artifact)
  path, output = Path(input), Path(output)
  if side not in EMBED_SIDES:
    raise ValueError(f"--embed: {side!r}; choose one of {list(EMBED_SIDES)}")
  if side not in art.towers:
    raise ArtifactError(f"{art.path}: no {side} tower (model {art.manifest.get('model')!r}); "
                        "only a dssm artifact holds its towers")
  spec = art.features
  if spec.get("kind") == "letor":
    raise ArtifactError(f"{art.path}: a LETOR artifact's context input is the query's length, "
                        "not a column; --embed reads tables")
  if not path.is_file():
    raise FileNotFoundError(f"--input: {path} does not exist")
  if batch_rows < 1:
    raise ValueError(f"batch_rows: must be >= 1, got {batch_rows}")
  group = "items" if side == "items" else "context"
  ids_spec = spec.get("ids") if isinstance(spec.get("ids"), dict) else None
  reader = (None if ids_spec is None else
            _IdReader(ids_spec, "", ("items",) if side == "items" else ("context", "sequence")))
  names = [c["name"] for c in spec[group]]
  passed = list(dict.fromkeys([*(reader.columns() if reader else []), *keep]))
  passed = [c for c in passed if not (reader and side == "users"
                                      and c in [e["name"] for e in ids_spec.get("sequence", ())])]
  if EMBEDDING_COLUMN in passed:
    raise ArtifactError(f"a --keep column is named {EMBEDDING_COLUMN!r}; rename it")
  batches = _table_batches(path, names, passed, rows=batch_rows, id_reader=reader)
  first = next(batches, None)
  count, width = 0, int(art.towers[side].out_avals[0].shape[-1])

  def write(tmp: Path) -> None:
    nonlocal count
    writer = None
    for batch in _chain(first, batches):
      floats = _transform(spec, group, _features_of(batch, names, path=path, first_row=count))
      ids = reader(batch) if reader else None
      n = batch.num_rows
      vectors = np.empty((n, width), np.float32)
      for start in range(0, n, batch_rows):
        part = slice(start, start + batch_rows)
        k = floats[part].shape[0]
        vectors[part] = art.embed(side, _pad(floats[part], batch_rows),
                                  None if ids is None else
                                  {f: _pad(v[part], batch_rows) for f, v in ids.items()})[:k]
      flat = pa.array(vectors.reshape(-1), pa.float32())
      table = pa.table({**{c: batch.column(batch.schema.get_field_index(c)) for c in passed},
                        EMBEDDING_COLUMN: pa.FixedSizeListArray.from_arrays(flat, width)})
      if writer is None:
        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
      writer.write_table(table)
      count += n
    if writer is None:
      schema = pa.schema([*(pa.field(c, pa.string()) for c in passed),
                          pa.field(EMBEDDING_COLUMN, pa.list_(pa.float32(), width))])
      writer = pq.ParquetWriter(tmp, schema)
    writer.close()

  _write_atomic(output, write)
  return ScoreSummary(count, output, time.perf_counter() - t0)


def score_file(artifact: str | Path | StudentArtifact, input: str | Path, output: str | Path,
               *, keep: Sequence[str] = (), batch_rows: int = BATCH_ROWS) -> ScoreSummary:
  """Scores every candidate row of ``input`` with an exported student into ``output``.

  Args:
    artifact: an artifact directory (:func:`~prerank_jax.host.artifact.export_point`) or a
      loaded :class:`~prerank_jax.host.artifact.StudentArtifact`.
    input: a Parquet or CSV table (or a LETOR file for a LETOR artifact); see the module
      docstring.
    output: the Parquet file to write: the ID columns, ``keep`` columns, ``score``.
    keep: more input columns to pass through (tables only).
    batch_rows: rows read per batch (memory bound of a streamed table).

  Returns:
    A :class:`ScoreSummary`.

  Raises:
    ArtifactError: a damaged or mismatched artifact, or an input it cannot score (the
      message names the column); nothing is written then.
    FileNotFoundError: ``input`` does not exist.
  """
  t0 = time.perf_counter()
  art = artifact if isinstance(artifact, StudentArtifact) else load_artifact(artifact)
  path, output = Path(input), Path(output)
  if not path.is_file():
    raise FileNotFoundError(f"--input: {path} does not exist")
  if batch_rows < 1:
    raise ValueError(f"batch_rows: must be >= 1, got {batch_rows}")
  kind = art.features.get("kind")
  if kind == "letor" and not (_is_parquet(path) or _is_csv(path)):
    if keep:
      raise ArtifactError("--keep: LETOR input has no columns to keep (qid and docid are "
                          "passed through)")
    rows = _score_letor(art, path, output)
  elif kind == "letor":
    raise ArtifactError(f"{path}: the artifact was exported from LETOR files; give a "
                        "LibSVM ranking file (label qid:Q f:v ...), not a table")
  else:
    rows = _score_table(art, path, output, keep, batch_rows)
  return ScoreSummary(rows, output, time.perf_counter() - t0)
