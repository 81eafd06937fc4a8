"""What every prerank-jax TFDS dataset shares: the record schema, preparing, reading.

Each dataset (the simulator, LETOR files, MovieLens, a Parquet/CSV table) is a
``tfds.core.GeneratorBasedBuilder`` whose examples are single requests in the batch schema
(:mod:`prerank_jax.batch`): one record holds ``context [Fc]``, ``items [N, Fi]``, ``cross
[N, Fx]``, ``label/exposed/valid [N]`` and, when the dataset has them, ``true_relevance`` and
``propensity`` ``[N]``, plus a ``request_id`` string (the query id, user id, ...). Lists are
already padded to ``N``, so a split reads back as a :class:`~prerank_jax.batch.Batch` by
stacking records.

Everything works without TensorFlow:

* datasets are written with ``file_format="array_record"`` and read back with random
  access (``builder.as_data_source()`` or the faster :class:`RecordReader` here);
* every array is stored as raw bytes (``Encoding.BYTES``), so a record decodes with
  ``np.frombuffer`` (:class:`RecordReader` reads and decodes about 40k random records/s
  of the "small" simulator, 8 KB each, on one core of this 2-core CPU);
* no builder ever downloads: they read files the user placed in a *manual directory*, and
  :func:`prepare` checks those files **before** calling TFDS, so a missing dataset fails at
  once with instructions (:class:`DatasetMissingError`) instead of TFDS retrying downloads
  for minutes offline.

The prepared files live under ``<data_dir>/<builder name>/<config name>/<version>/`` and are
reused by every later run with the same config.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from prerank_jax.batch import Batch

BATCH_FIELDS = ("context", "items", "cross", "label", "exposed", "valid", "true_relevance",
                "propensity", "exposure_propensity", "context_ids", "item_ids",
                "sequence_ids", "sequence_mask")
OPTIONAL_FIELDS = ("true_relevance", "propensity", "exposure_propensity", "context_ids",
                   "item_ids", "sequence_ids", "sequence_mask")


# A record's candidate IDs (tabular and LETOR datasets): one JSON text, a list of N strings.
CANDIDATE_IDS = "candidate_ids"
# A record's logged teacher scores [N, M] float32, NaN where missing (tabular, LETOR).
LOGGED_SCORES = "logged_scores"


class DatasetMissingError(FileNotFoundError):
  """A dataset is neither prepared nor available as raw files; the message says what to
  download, where to put it and the exact command that prepares it."""


def default_data_dir(data_dir: str = "") -> Path:
  """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's default).

  A local directory comes back absolute; a URI TFDS reads (``gs://bucket/tfds``) comes back
  as an ``etils.epath`` path, unchanged (``resolve`` would make it a local directory)."""
  chosen = data_dir or os.environ.get("TFDS_DATA_DIR", "") or "~/tensorflow_datasets"
  if "://" in chosen:
    from etils import epath
    return epath.Path(chosen)
  return Path(chosen).expanduser().resolve()


def pad_rows(x: np.ndarray, length: int) -> np.ndarray:
  """``x`` with zero rows appended along axis 0 up to ``length`` rows: one candidate list
  padded to the list size N (the record's ``valid`` mask marks the real candidates)."""
  return np.concatenate([x, np.zeros((length - x.shape[0], *x.shape[1:]), x.dtype)])


def file_signature(paths: Iterable[Path]) -> list[tuple[str, int]]:
  """``(name, size)`` of raw input files: identifies user data without reading it."""
  return [(Path(p).name, Path(p).stat().st_size) for p in paths]


# --- the record schema --------------------------------------------------------------------

def record_shapes(*, context: int, list_size: int, items: int, cross: int,
                  truth: bool, propensity: bool, exposure: bool = False,
                  context_ids: int = 0, item_ids: int = 0, sequence: tuple[int, int] = (0, 0)
                  ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{field: (shape, numpy dtype)}`` of one request record.

  ``context_ids = Cc``, ``item_ids = Ci`` and ``sequence = (L, Cs)`` add the int32 ID fields
  (and the bool ``sequence_mask [L]``) when non-zero; 0 leaves them out."""
  n = list_size
  shapes = {"context": ((context,), np.float32), "items": ((n, items), np.float32),
            "cross": ((n, cross), np.float32), "label": ((n,), np.float32),
            "exposed": ((n,), np.bool_), "valid": ((n,), np.bool_)}
  if truth:
    shapes["true_relevance"] = ((n,), np.float32)
  if propensity:
    shapes["propensity"] = ((n,), np.float32)
  if exposure:
    shapes["exposure_propensity"] = ((n,), np.float32)
  if context_ids:
    shapes["context_ids"] = ((context_ids,), np.int32)
  if item_ids:
    shapes["item_ids"] = ((n, item_ids), np.int32)
  if sequence[0]:
    shapes["sequence_ids"] = ((sequence[0], sequence[1]), np.int32)
    shapes["sequence_mask"] = ((sequence[0],), np.bool_)
  return shapes


def features_dict(shapes: Mapping[str, tuple[tuple[int, ...], Any]], *,
                  candidate_ids: bool = False):
  """The TFDS ``FeaturesDict`` of a record: every array as raw bytes, plus ``request_id``
  and, with ``candidate_ids``, the user's candidate IDs of the list as one JSON text
  (:data:`CANDIDATE_IDS`, a list of N strings, ``""`` on padding)."""
  import tensorflow_datasets as tfds

  bytes_ = tfds.features.Encoding.BYTES
  features = {name: tfds.features.Tensor(shape=shape, dtype=dtype, encoding=bytes_)
              for name, (shape, dtype) in shapes.items()}
  features["request_id"] = tfds.features.Text()
  if candidate_ids:
    features[CANDIDATE_IDS] = tfds.features.Text()
  return tfds.features.FeaturesDict(features)


def dataset_info(builder, shapes, *, description: str, homepage: str = "",
                 citation: str = "", license_note: str = "", metadata: dict | None = None,
                 candidate_ids: bool = False):
  """``tfds.core.DatasetInfo`` built directly (no ``dataset_info_from_configs``); records
  keep their generation order (``disable_shuffling``), so request ``i`` of a split is the
  ``i``-th record, as in the in-memory loaders."""
  import tensorflow_datasets as tfds

  meta = dict(metadata or {})
  meta["shapes"] = {k: [list(s), np.dtype(d).name] for k, (s, d) in shapes.items()}
  if license_note:
    meta["license"] = license_note
  return tfds.core.DatasetInfo(
      builder=builder, description=description,
      features=features_dict(shapes, candidate_ids=candidate_ids),
      homepage=homepage or None, citation=citation or None, disable_shuffling=True,
      metadata=tfds.core.MetadataDict(meta))


def check_record(record: Mapping[str, np.ndarray], shapes) -> dict[str, Any]:
  """Casts a record's arrays to the schema's dtypes and checks their shapes."""
  out = {}
  for name, (shape, dtype) in shapes.items():
    value = np.ascontiguousarray(record[name], dtype=dtype)
    if value.shape != tuple(shape):
      raise ValueError(f"record field {name}: expected shape {tuple(shape)}, got "
                       f"{value.shape}")
    out[name] = value
  out["request_id"] = str(record["request_id"])
  if CANDIDATE_IDS in record:
    out[CANDIDATE_IDS] = json.dumps([str(c) for c in record[CANDIDATE_IDS]])
  return out


def batch_records(batch: Batch, request_ids: Sequence[str], shapes) -> Iterator[tuple[int, dict]]:
  """Yields ``(key, record)`` for every request of an in-memory batch, in order."""
  fields = {name: getattr(batch, name) for name in shapes}
  for i in range(batch.num_requests):
    record = {name: value[i] for name, value in fields.items()}
    record["request_id"] = request_ids[i]
    yield i, check_record(record, shapes)


# --- preparing ----------------------------------------------------------------------------

class _QuietCustomConfig(logging.Filter):
  """Drops TFDS's "Using custom data configuration: <whole config repr>" warning: every
  prerank-jax config is custom (named by a hash of its fields)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Using custom data configuration")


_FILTER = _QuietCustomConfig()


def quiet_tfds() -> None:
  for name in ("absl", ""):
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
      logger.addFilter(_FILTER)


def download_config(manual_dir: Path | None = None):
  """A TFDS download config that never touches the network."""
  import tensorflow_datasets as tfds

  return tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else str(manual_dir), try_download_gcs=False,
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)


def is_prepared(builder) -> bool:
  from etils import epath  # builder.data_path may be a gs:// path
  return (epath.Path(builder.data_path) / "dataset_info.json").exists()


def prepare(builder, *, missing: str | None, show: bool = False):
  """Prepares ``builder`` once (a no-op when it is already prepared) and returns it.

  Args:
    builder: a prerank-jax TFDS builder.
    missing: ``None`` when the raw inputs are present, else the instructions to raise (the
      caller checks its raw files first, so this never reaches TFDS's download logic).
    show: show TFDS's progress bars.
  """
  if is_prepared(builder):
    return builder
  if missing is not None:
    raise DatasetMissingError(missing)
  import tensorflow_datasets as tfds

  if not show:
    tfds.disable_progress_bar()
  # TFDS prints "Downloading and preparing dataset Unknown size (download: Unknown size, ...)"
  # and "... downloaded and prepared to ..." to stdout; nothing is downloaded here, so one
  # line says what is prepared and where instead.
  print(f"preparing dataset {builder.info.full_name} in {builder.data_dir} (written once "
        "as ArrayRecord, reused by later runs; nothing is downloaded)", flush=True)
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(download_config=download_config())
  return builder


# --- reading ------------------------------------------------------------------------------

def split_files(builder, split: str) -> list[str]:
  """The ArrayRecord shard files of a prepared split, in record order."""
  from etils import epath  # builder.data_path may be a gs:// path (epath globs it)
  directory = epath.Path(builder.data_path)
  pattern = f"{builder.name}-{split}.array_record-*"
  files = sorted(os.fspath(f) for f in directory.glob(pattern))
  pattern = os.fspath(directory / pattern)
  if not files:
    raise FileNotFoundError(f"{builder.info.full_name}: no ArrayRecord files for split "
                            f"{split!r} ({pattern})")
  return files


def builder_shapes(builder) -> dict[str, tuple[tuple[int, ...], Any]]:
  """``{field: (shape, dtype)}`` of the batch fields a prepared builder stores."""
  features = builder.info.features
  return {name: (tuple(features[name].shape), np.dtype(features[name].np_dtype))
          for name in BATCH_FIELDS if name in features.keys()}


class RecordReader:
  """Random access to the records of one split, decoded straight into numpy.

  Equivalent to ``builder.as_data_source()[split]`` (tested) but several times faster: it
  reads with ``ArrayRecordReader`` directly (one reader per file and thread, no thread
  pool per call), parses each ``tf.train.Example`` once and views every field's bytes with
  ``np.frombuffer``. Picklable (files are reopened lazily), so grain worker processes can
  use it.

  Args:
    files: the split's ArrayRecord files (:func:`split_files`).
    shapes: ``{field: (shape, dtype)}`` (:func:`builder_shapes`).
  """

  def __init__(self, files: Sequence[str], shapes: Mapping[str, tuple]):
    self.files = list(files)
    self.shapes = {k: (tuple(s), np.dtype(d)) for k, (s, d) in shapes.items()}
    self._local = threading.local()
    self._offsets = None

  def __getstate__(self):
    return {"files": self.files, "shapes": self.shapes}

  def __setstate__(self, state):
    self.__init__(state["files"], state["shapes"])

  def _readers(self) -> list:
    readers = getattr(self._local, "readers", None)
    if readers is None:
      from array_record.python.array_record_module import ArrayRecordReader

      readers = [ArrayRecordReader(f, options="readahead_buffer_size:0",
                                   file_reader_buffer_size=16384) for f in self.files]
      self._local.readers = readers
    return readers

  @property
  def offsets(self) -> np.ndarray:
    """First global index of each file, and the total at the end."""
    if self._offsets is None:
      counts = [r.num_records() for r in self._readers()]
      self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return self._offsets

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def raw(self, indices: Sequence[int]) -> list[bytes]:
    """The serialized records at ``indices`` (any order, repeats allowed)."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"record index out of range [0, {len(self)})")
    which = np.searchsorted(self.offsets, indices, side="right") - 1
    out: list = [b""] * len(indices)
    readers = self._readers()
    for f in np.unique(which):
      rows = np.flatnonzero(which == f)
      positions = (indices[rows] - self.offsets[f]).tolist()
      for row, record in zip(rows.tolist(), readers[f].read(positions)):
        out[row] = record
    return out

  def decode(self, raw: bytes) -> dict[str, np.ndarray]:
    from tensorflow_datasets.proto import tf_example_pb2

    feature = tf_example_pb2.Example.FromString(raw).features.feature
    return {name: np.frombuffer(feature[name].bytes_list.value[0], dtype).reshape(shape)
            for name, (shape, dtype) in self.shapes.items()}

  def read(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Stacks the records at ``indices``: ``{field: [len(indices), ...]}``."""
    from tensorflow_datasets.proto import tf_example_pb2

    indices = [int(i) for i in indices]
    parse = tf_example_pb2.Example.FromString
    features = [parse(raw).features.feature for raw in self.raw(indices)]
    # One join and one frombuffer per field, not one per record and field.
    return {name: np.frombuffer(b"".join([f[name].bytes_list.value[0] for f in features]),
                                dtype).reshape(len(indices), *shape)
            for name, (shape, dtype) in self.shapes.items()}

  def read_all(self, chunk: int = 4096) -> dict[str, np.ndarray]:
    n = len(self)
    parts = [self.read(range(s, min(n, s + chunk))) for s in range(0, n, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in self.shapes}


def to_batch(arrays: Mapping[str, np.ndarray]) -> Batch:
  return Batch(**{name: arrays.get(name) for name in BATCH_FIELDS})


def read_split(builder, split: str, *, lazy: bool = False) -> "Batch | RecordSplit":
  """A whole prepared split as one in-memory :class:`Batch`, or with ``lazy`` a
  :class:`RecordSplit` that leaves it in its ArrayRecord files."""
  reader = RecordReader(split_files(builder, split), builder_shapes(builder))
  if lazy:
    return RecordSplit(reader, read_array_field(builder, split, "valid"))
  return to_batch(reader.read_all())


def read_splits(builder, names: Sequence[str], *, lazy_train: bool = False) -> dict:
  """``{split: read_split(...)}``; with ``lazy_train`` the train split stays on disk."""
  return {name: read_split(builder, name, lazy=lazy_train and name == "train")
          for name in names}


def train_from_records(config) -> bool:
  """Whether the run leaves its train split on disk: ``input_pipeline="grain"`` with
  ``streaming.read_from="records"`` (training then reads its steps from the ArrayRecord
  files, and nothing else needs the whole split in memory)."""
  return (config.get("input_pipeline", "device") == "grain" and "streaming" in config
          and config.streaming.read_from == "records")


class RecordSplit:
  """A prepared split left in its ArrayRecord files: the train split of a run with
  ``streaming.read_from="records"``.

  Host memory holds the ``valid`` mask ``[R, N]`` (one byte a candidate slot) and, once
  scored, the teacher's ``teacher_scores [R, N, M]`` (and a logged teacher's
  ``teacher_mask``); every other field is read when asked for: :meth:`take` reads some
  requests as a :class:`Batch`, :meth:`blocks` walks the split a block at a time (the
  checks, the teacher's scoring), and training streams its steps through
  :class:`prerank_jax.data.streaming.RecordSource`. It has the :class:`Batch` attributes
  the host pipeline reads from a whole split (``num_requests``, ``list_size``, ``valid``,
  ``teacher_scores``, ``teacher_mask``, ``take``, ``_replace``).
  """

  EXTRA = ("teacher_scores", "teacher_mask")

  def __init__(self, reader: RecordReader, valid: np.ndarray, *,
               teacher_scores: np.ndarray | None = None,
               teacher_mask: np.ndarray | None = None):
    self.reader = reader
    self.valid = np.asarray(valid, bool)
    if self.valid.ndim != 2 or self.valid.shape[0] != len(reader):
      raise ValueError(f"RecordSplit: valid mask {self.valid.shape} does not match the "
                       f"{len(reader)} records")
    self.teacher_scores, self.teacher_mask = teacher_scores, teacher_mask

  @property
  def num_requests(self) -> int:
    return int(self.valid.shape[0])

  @property
  def list_size(self) -> int:
    return int(self.valid.shape[1])

  @property
  def nbytes(self) -> int:
    """Bytes held in host memory (the mask and the extra fields)."""
    return int(self.valid.nbytes) + sum(int(np.asarray(getattr(self, k)).nbytes)
                                        for k in self.EXTRA if getattr(self, k) is not None)

  def _replace(self, **fields) -> "RecordSplit":
    unknown = set(fields) - set(self.EXTRA)
    if unknown:
      raise ValueError(f"RecordSplit: only {self.EXTRA} can be replaced, not {sorted(unknown)}")
    kept = {k: getattr(self, k) for k in self.EXTRA}
    return RecordSplit(self.reader, self.valid, **{**kept, **fields})

  def take(self, index) -> Batch:
    """The requests at ``index`` (a slice or integer indices) as an in-memory Batch."""
    rows = np.arange(self.num_requests)[index]
    batch = to_batch(self.reader.read(rows))
    return batch._replace(**{k: np.asarray(getattr(self, k))[rows] for k in self.EXTRA
                             if getattr(self, k) is not None})

  def blocks(self, size: int = 1024) -> Iterator[tuple[int, Batch]]:
    """``(first request, Batch)`` of consecutive blocks of ``size`` requests."""
    for start in range(0, self.num_requests, size):
      yield start, self.take(slice(start, min(self.num_requests, start + size)))


#: Requests of a :class:`RecordSplit` read at a time by :func:`validate_split`.
CHECK_BLOCK = 1024


def validate_split(split: "Batch | RecordSplit", *, name: str, **kwargs) -> "Batch | RecordSplit":
  """:func:`prerank_jax.batch.validate_batch` of a whole split; a :class:`RecordSplit` is
  checked a block at a time (the message names the block's requests)."""
  from prerank_jax.batch import validate_batch

  if not isinstance(split, RecordSplit):
    return validate_batch(split, name=name, **kwargs)
  if split.num_requests == 0:
    validate_batch(split.take(slice(0, 0)), name=name, **kwargs)  # R=0, refused by name
  for start, block in split.blocks(CHECK_BLOCK):
    stop = start + block.num_requests
    validate_batch(block, name=f"{name} (requests {start}..{stop - 1})", **kwargs)
  return split


def host_bytes(split: "Batch | RecordSplit") -> int:
  """Bytes a split holds in host memory."""
  if isinstance(split, RecordSplit):
    return split.nbytes
  return sum(int(np.asarray(x).nbytes) for x in split if x is not None)


def request_ids(builder, split: str) -> list[str]:
  """The ``request_id`` of every record of a split (through TFDS's own data source)."""
  source = builder.as_data_source()[split]
  ids = []
  for start in range(0, len(source), 4096):
    for record in source.__getitems__(list(range(start, min(len(source), start + 4096)))):
      rid = record["request_id"]
      ids.append(rid.decode() if isinstance(rid, bytes) else str(rid))
  return ids


def read_text_fields(builder, split: str, names: Sequence[str]) -> dict[str, list[str]]:
  """``{name: [text of every record of the split, in order]}`` for text features such as
  ``request_id`` and :data:`CANDIDATE_IDS`, parsed straight from the ArrayRecord files."""
  from tensorflow_datasets.proto import tf_example_pb2

  reader = RecordReader(split_files(builder, split), {})
  out: dict[str, list[str]] = {name: [] for name in names}
  for start in range(0, len(reader), 4096):
    for raw in reader.raw(range(start, min(len(reader), start + 4096))):
      feature = tf_example_pb2.Example.FromString(raw).features.feature
      for name in names:
        out[name].append(feature[name].bytes_list.value[0].decode("utf-8"))
  return out


def read_array_field(builder, split: str, name: str) -> np.ndarray:
  """One array feature (e.g. :data:`LOGGED_SCORES`) of every record, stacked."""
  features = builder.info.features
  shapes = {name: (tuple(features[name].shape), np.dtype(features[name].np_dtype))}
  return RecordReader(split_files(builder, split), shapes).read_all()[name]


def split_ids(builder, split: str, *, request_column: str, candidate_column: str):
  """The user's IDs of a prepared split (:class:`~prerank_jax.data.ids.SplitIds`), or
  ``None`` when its records carry no candidate IDs."""
  from prerank_jax.data.ids import SplitIds

  if CANDIDATE_IDS not in builder.info.features.keys():
    return None
  text = read_text_fields(builder, split, ("request_id", CANDIDATE_IDS))
  candidate = np.asarray([json.loads(c) for c in text[CANDIDATE_IDS]], dtype=str)
  return SplitIds(np.asarray(text["request_id"], dtype=str), candidate, request_column,
                  candidate_column)
