"""A trained student as a self-contained artifact: exported from a run, loaded anywhere.

``prerank-jax export RUN --point NAME --out DIR`` (:func:`export_point`) writes one sweep
point of a finished run as a directory that needs neither the run directory nor the
training data to score new candidates:

======================  ====================================================================
``manifest.json``       format name and version, the point, the model, the jax version, the
                        platforms lowered for, and the SHA-256 and size of every other file
``scoring.jax_export``  the scoring function ``score(params, context, items) -> [n]``
                        serialised by ``jax.export`` (StableHLO), symbolic in the number of
                        candidates ``n``, lowered for cpu, cuda and tpu
``params.npz``          the point's parameters: the flattened leaves, in the exported
                        function's order (``p0000``, ``p0001``, ...)
``features.json``       the feature spec: the raw input columns in model order, how each is
                        turned into a model input (the normalisation learned on train), the
                        user's ID columns
``config.json``         the run's config (of the point's program)
``metrics.json``        the point's row of the run's ``results.csv``
======================  ====================================================================

A ``dssm`` artifact also holds ``user_tower.jax_export`` and ``item_tower.jax_export``:
``u(params, context, context_ids, sequence_ids, sequence_mask) -> [n, D]`` and
``v(params, items, item_ids) -> [n, D]``, the towers whose dot product is the score, for a
server that caches item vectors (:func:`tower_functions`; ``prerank-jax score --embed
items|users``).

**The scoring function.** Every student scores each candidate from the request's context
features and the candidate's own features alone (``prerank_jax/models``: the student never
sees cross features), so the export takes one row per candidate:
``context [n, Fc]`` (the request's context repeated on each of its candidates) and
``items [n, Fi]``, both float32 model inputs, and returns float32 scores ``[n]``. This is
the run's ``apply`` on lists of one candidate; the two-tower students compute their context
tower once per row here (their cached serving path lives in
:meth:`~prerank_jax.models.PureModel.score_cached`).

A student over categorical IDs (``dssm`` with vocabularies) takes four more arrays, also one
row per candidate (the request's IDs and behaviour repeated on each of its candidates, so
rows of many requests share one compiled call): ``context_ids [n, Cc]``, ``item_ids
[n, Ci]``, ``sequence_ids [n, L, Cs]`` (int32 embedding rows) and ``sequence_mask [n, L]``
(bool); ``Cc``, ``Ci``, ``Cs`` or ``L`` is 0 where the model has no such field. The feature
spec's ``ids`` entry (:func:`id_spec`) says how raw IDs become those rows. Such an artifact
is written as format version 2 (an older prerank-jax then refuses it by its version instead
of misreading it); a float-only one stays version 1.

**Loading** (:func:`load_artifact`) imports only ``jax``, ``numpy`` and the standard
library: no flax, optax, orbax, TFDS or training code. It refuses, naming the file and what
differs, an artifact whose format version is not in :data:`READ_VERSIONS`, a file that is
missing, truncated or edited (size or checksum differs from the manifest), parameters that
do not match the exported function, a feature spec whose column count differs from the
function's inputs, and a platform the function was not lowered for.

**Writing** is atomic: the artifact is written to a temporary sibling directory and renamed
into place; an existing ``DIR`` is refused unless ``overwrite``, and is then replaced only
once the new artifact is complete.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

FORMAT = "prerank-jax student"
FORMAT_VERSION = 2  # written for students over IDs; float-only artifacts stay version 1
READ_VERSIONS = (1, 2)
PLATFORMS = ("cpu", "cuda", "tpu")
MANIFEST = "manifest.json"
FUNCTION_FILE = "scoring.jax_export"
PARAMS_FILE = "params.npz"
FEATURES_FILE = "features.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
FILES = (FUNCTION_FILE, PARAMS_FILE, FEATURES_FILE, CONFIG_FILE, METRICS_FILE)
USER_TOWER_FILE = "user_tower.jax_export"
ITEM_TOWER_FILE = "item_tower.jax_export"
TOWER_FILES = {"users": USER_TOWER_FILE, "items": ITEM_TOWER_FILE}  # optional (dssm only)
# The ID inputs of a student over categorical IDs, in the exported function's order.
ID_FIELDS = ("context_ids", "item_ids", "sequence_ids", "sequence_mask")


class ArtifactError(ValueError):
  """An artifact is damaged, of another format version, or does not fit its input."""


# --- checksums and atomic directories -------------------------------------------------------

def sha256_file(path: Path) -> str:
  """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _json(data: Any) -> bytes:
  return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_directory_atomic(out: Path, files: Mapping[str, bytes], manifest: dict, *,
                           overwrite: bool) -> Path:
  """Writes ``files`` and ``manifest.json`` (with every file's SHA-256 and size) into
  ``out`` via a temporary sibling directory and a rename.

  An existing ``out`` is refused unless ``overwrite``; it is then moved aside only after the
  new directory is complete, and removed once the new one is in place.

  Raises:
    FileExistsError: ``out`` exists and ``overwrite`` is False (nothing is written).
  """
  out = Path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out}: already exists; choose another --out or pass --overwrite "
                          "to replace it")
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
  old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
  if tmp.exists():
    shutil.rmtree(tmp)
  try:
    tmp.mkdir()
    entries = {}
    for name, data in files.items():
      _write_bytes(tmp / name, data)
      entries[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_bytes(tmp / MANIFEST, _json({**manifest, "files": entries}))
    if out.exists():
      os.replace(out, old)
    try:
      os.replace(tmp, out)
    except OSError:
      if old.exists() and not out.exists():  # put the previous artifact back
        os.replace(old, out)
      raise
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  if old.exists():
    shutil.rmtree(old, ignore_errors=True)
  return out


# --- loading ------------------------------------------------------------------------------

def _platform() -> str:
  import jax

  backend = jax.default_backend()
  return {"gpu": "cuda"}.get(backend, backend)


class StudentArtifact:
  """A loaded student artifact (see the module docstring for its files).

  Attributes:
    path: the artifact directory.
    manifest: ``manifest.json``.
    features: ``features.json``: ``kind``, ``context`` and ``items`` (lists of
      ``{"name", ...}`` in model order), ``request_column``, ``candidate_column``.
    config: the run's config as a dict.
    metrics: the point's row of ``results.csv``.
    exported: the deserialised :class:`jax.export.Exported`.
    params: the parameter leaves, in the exported function's order.
  """

  def __init__(self, path: Path, manifest: dict, features: dict, config: dict,
               metrics: dict, exported: Any, params: list[np.ndarray],
               towers: Mapping[str, Any] | None = None):
    import jax

    self.path, self.manifest, self.features = path, manifest, features
    self.config, self.metrics, self.exported, self.params = config, metrics, exported, params
    self.towers = dict(towers or {})  # {"users": Exported, "items": Exported} of a dssm
    self._call = jax.jit(exported.call)
    self._tower_calls = {side: jax.jit(e.call) for side, e in self.towers.items()}
    self._device_params = None

  def embed(self, side: str, floats: np.ndarray,
            ids: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Tower vectors ``[n, D]`` (float32) of a ``dssm`` artifact: ``side="items"`` gives
    ``v`` from ``floats = items [n, Fi]`` and ``ids["item_ids"]``; ``side="users"`` gives
    ``u`` from ``floats = context [n, Fc]`` and ``ids["context_ids"]``,
    ``ids["sequence_ids"]``, ``ids["sequence_mask"]``. ``score`` is ``Σ_d u·v``.

    Raises:
      ArtifactError: the artifact has no towers (not a ``dssm``), or shapes differ.
    """
    import jax

    if side not in self.towers:
      raise ArtifactError(f"embed: this artifact has no {side!r} tower (model "
                          f"{self.manifest.get('model')!r}; the dssm exports its towers); "
                          f"towers: {sorted(self.towers)}")
    group = "items" if side == "items" else "context"
    width = self.num_items if side == "items" else self.num_context
    floats = np.asarray(floats, np.float32)
    n = floats.shape[0]
    if floats.shape != (n, width):
      raise ArtifactError(f"embed: expected {group} [n, {width}], got {floats.shape}")
    fields = ("item_ids",) if side == "items" else ("context_ids", "sequence_ids",
                                                    "sequence_mask")
    shapes, ids = self.id_shapes(n), ids or {}
    extra = []
    for field in fields:
      value = np.asarray(ids.get(field, np.zeros(shapes[field])),
                         bool if field == "sequence_mask" else np.int32)
      if value.shape != shapes[field]:
        raise ArtifactError(f"embed: ids[{field!r}] is {list(value.shape)}, expected "
                            f"{list(shapes[field])}")
      extra.append(value)
    if self._device_params is None:
      self._device_params = [jax.device_put(p) for p in self.params]
    return np.asarray(self._tower_calls[side](self._device_params, floats, *extra))

  @property
  def num_context(self) -> int:
    """``Fc``: the number of context inputs."""
    return len(self.features["context"])

  @property
  def num_items(self) -> int:
    """``Fi``: the number of item inputs."""
    return len(self.features["items"])

  @property
  def ids(self) -> dict | None:
    """The feature spec's ``ids`` entry (:func:`id_spec`); None for a float-only student."""
    return self.features.get("ids")

  def id_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
    """``{field: shape}`` of the ID arrays :meth:`score` takes for ``n`` candidates."""
    spec = self.ids or {}
    cc, ci = len(spec.get("context", ())), len(spec.get("items", ()))
    cs, length = len(spec.get("sequence", ())), int(spec.get("sequence_length", 0))
    return {"context_ids": (n, cc), "item_ids": (n, ci), "sequence_ids": (n, length, cs),
            "sequence_mask": (n, length)}

  def score(self, context: np.ndarray, items: np.ndarray,
            ids: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Scores ``[n]`` (float32 logits) of ``n`` candidates.

    Args:
      context: ``[n, Fc]`` model inputs of each candidate's request context (already
        transformed as ``features.json`` says; :mod:`prerank_jax.host.scoring` does that
        from raw rows).
      items: ``[n, Fi]`` model inputs of each candidate.
      ids: for a student over IDs (:attr:`ids` not None), the embedding rows
        ``context_ids [n, Cc]``, ``item_ids [n, Ci]``, ``sequence_ids [n, L, Cs]`` (int32)
        and ``sequence_mask [n, L]`` (bool), already mapped as ``features.json`` says;
        None otherwise.

    Each distinct ``n`` compiles once; callers that stream pad to a fixed size.
    """
    import jax

    context = np.asarray(context, np.float32)
    items = np.asarray(items, np.float32)
    n = items.shape[0]
    if context.shape != (n, self.num_context) or items.shape != (n, self.num_items):
      raise ArtifactError(f"score: expected context [n, {self.num_context}] and items "
                          f"[n, {self.num_items}], got {context.shape} and {items.shape}")
    extra = []
    if self.ids is not None:
      if ids is None:
        raise ArtifactError("score: this student reads categorical IDs; pass ids= "
                            f"{{field: array}} of shapes {self.id_shapes(n)}")
      for field, shape in self.id_shapes(n).items():
        value = np.asarray(ids[field], bool if field == "sequence_mask" else np.int32)
        if value.shape != shape:
          raise ArtifactError(f"score: ids[{field!r}] is {list(value.shape)}, expected "
                              f"{list(shape)}")
        extra.append(value)
    elif ids is not None:
      raise ArtifactError("score: this student reads no categorical IDs; ids must be None")
    if self._device_params is None:
      self._device_params = [jax.device_put(p) for p in self.params]
    return np.asarray(self._call(self._device_params, context, items, *extra))


def _read_checked(path: Path, name: str, entry: Mapping[str, Any] | None) -> bytes:
  file = path / name
  if entry is None:
    raise ArtifactError(f"{path / MANIFEST}: lists no {name!r}; the artifact is incomplete "
                        "(export it again)")
  if not file.is_file():
    raise ArtifactError(f"{file}: missing (the manifest lists it); the artifact is damaged")
  data = file.read_bytes()
  if len(data) != entry.get("bytes"):
    raise ArtifactError(f"{file}: {len(data)} bytes, the manifest says {entry.get('bytes')}: "
                        "the file is truncated or changed; export the artifact again")
  if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
    raise ArtifactError(f"{file}: SHA-256 differs from the manifest's: the file was "
                        "edited or damaged; export the artifact again")
  return data


def read_manifest(path: Path) -> dict:
  """``manifest.json`` of an artifact, checked for this format and version.

  Raises:
    ArtifactError: not an artifact directory, unreadable manifest, another format, or a
      format version not in :data:`READ_VERSIONS`.
  """
  path = Path(path)
  file = path / MANIFEST
  if not file.is_file():
    raise ArtifactError(f"{path}: not a prerank-jax artifact (no {MANIFEST}); make one with "
                        "`prerank-jax export RUN --point NAME --out DIR`")
  try:
    manifest = json.loads(file.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ArtifactError(f"{file}: not valid JSON ({e}); the artifact is damaged") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ArtifactError(f"{file}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                        f"not {FORMAT!r}")
  version = manifest.get("format_version")
  if version not in READ_VERSIONS:
    raise ArtifactError(f"{file}: format_version {version!r}; this prerank-jax reads format "
                        f"versions {list(READ_VERSIONS)} only (export the run again with this "
                        "version, or score with the version that wrote it)")
  if not isinstance(manifest.get("files"), dict):
    raise ArtifactError(f"{file}: no 'files' table; the artifact is damaged")
  return manifest


def load_artifact(path: str | Path) -> StudentArtifact:
  """Loads and checks an artifact written by :func:`export_point`.

  Every file's size and SHA-256 are checked against ``manifest.json`` before it is used.

  Raises:
    ArtifactError: see the module docstring; the message names the file and what differs.
  """
  from jax import export

  path = Path(path)
  manifest = read_manifest(path)
  entries = manifest["files"]
  data = {name: _read_checked(path, name, entries.get(name)) for name in FILES}
  try:
    exported = export.deserialize(bytearray(data[FUNCTION_FILE]))
  except Exception as e:  # flatbuffers raises struct/index errors on bad bytes
    raise ArtifactError(f"{path / FUNCTION_FILE}: cannot be deserialised "
                        f"({type(e).__name__}: {e})") from None
  try:
    features, config, metrics = (json.loads(data[n]) for n in
                                 (FEATURES_FILE, CONFIG_FILE, METRICS_FILE))
  except ValueError as e:
    raise ArtifactError(f"{path}: a JSON file is not valid JSON ({e})") from None
  import io
  with np.load(io.BytesIO(data[PARAMS_FILE]), allow_pickle=False) as npz:
    names = sorted(npz.files)
    params = [npz[n] for n in names]
  inputs = 2 + (len(ID_FIELDS) if isinstance(features.get("ids"), dict) else 0)
  avals = exported.in_avals
  if len(avals) != len(params) + inputs:
    raise ArtifactError(f"{path / PARAMS_FILE}: {len(params)} parameter arrays and "
                        f"{inputs} inputs ({FEATURES_FILE}), the exported function takes "
                        f"{len(avals)} arguments")
  for name, p, aval in zip(names, params, avals):
    if tuple(p.shape) != tuple(aval.shape) or p.dtype != aval.dtype:
      raise ArtifactError(f"{path / PARAMS_FILE}: {name} is {p.dtype}{list(p.shape)}, the "
                          f"exported function takes {aval.dtype}{list(aval.shape)}")
  for group, aval in (("context", avals[len(params)]), ("items", avals[len(params) + 1])):
    listed = len(features.get(group, ()))
    if aval.shape[-1] != listed:
      raise ArtifactError(f"{path / FEATURES_FILE}: lists {listed} {group} column(s), the "
                          f"exported function takes {aval.shape[-1]}; the feature spec does "
                          "not belong to this function")
  if inputs > 2:
    spec = features["ids"]
    want = {"context_ids": (len(spec.get("context", ())),),
            "item_ids": (len(spec.get("items", ())),),
            "sequence_ids": (int(spec.get("sequence_length", 0)), len(spec.get("sequence", ()))),
            "sequence_mask": (int(spec.get("sequence_length", 0)),)}
    for field, aval in zip(ID_FIELDS, avals[len(params) + 2:]):
      if tuple(aval.shape[1:]) != want[field]:
        raise ArtifactError(f"{path / FEATURES_FILE}: its ids give {field} "
                            f"[n, {', '.join(map(str, want[field]))}], the exported function "
                            f"takes {aval.shape}; the feature spec does not belong to this "
                            "function")
  here = _platform()
  if here not in exported.platforms:
    raise ArtifactError(f"{path / FUNCTION_FILE}: lowered for {list(exported.platforms)}, "
                        f"not for this machine's {here!r}; export it again with "
                        f"--platforms including {here}")
  towers = {}
  for side, name in TOWER_FILES.items():
    if name in entries:  # optional: listed by the manifest only when exported
      try:
        towers[side] = export.deserialize(bytearray(_read_checked(path, name, entries[name])))
      except ArtifactError:
        raise
      except Exception as e:
        raise ArtifactError(f"{path / name}: cannot be deserialised "
                            f"({type(e).__name__}: {e})") from None
      if len(towers[side].in_avals) != len(params) + (2 if side == "items" else 4):
        raise ArtifactError(f"{path / name}: takes {len(towers[side].in_avals)} arguments, "
                            f"not the {len(params)} parameter arrays and its inputs")
  return StudentArtifact(path, manifest, features, config, metrics, exported, params, towers)


# --- export -------------------------------------------------------------------------------

def results_row(run_dir: Path, point: str) -> dict[str, Any]:
  """The row of ``results.csv`` whose ``model`` is ``point`` (numbers as floats).

  Raises:
    FileNotFoundError: the run has no ``results.csv`` yet.
    ValueError: no such row; the message lists the student rows there are.
  """
  path = Path(run_dir) / "results.csv"
  if not path.exists():
    raise FileNotFoundError(f"{run_dir}: no results.csv (the run has not finished); finish "
                            "it, or run `prerank-jax eval` on it, first")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  from prerank_jax.analysis.load import normalize_name  # old names (T=, α=, lr=) match too

  students = [r["model"] for r in rows if r.get("status") != "reference"]
  for row in rows:
    if normalize_name(row["model"]) == normalize_name(point):
      if row.get("status") == "reference":
        raise ValueError(f"--point: {point!r} is a reference row, not a student; the "
                         f"students are {students}")
      out = {}
      for k, v in row.items():
        try:
          out[k] = float(v)
        except (TypeError, ValueError):
          out[k] = v
      return out
  raise ValueError(f"--point: no row {point!r} in {path}; the students are {students}")


def _find_point(config, point: str):
  """``(tag, program config, sweep points, index)`` of the results name ``point``."""
  from prerank_jax.host.plan import student_points, student_programs

  programs = student_programs(config)
  for j, (label, program) in enumerate(programs):
    prefix = f"[{label}] " if len(programs) > 1 else ""
    points = student_points(program)
    for i, p in enumerate(points):
      if f"student {prefix}{p.name}" == point:
        return ("" if len(programs) == 1 else f"-{j}"), program, points, i
  raise ValueError(f"--point: {point!r} is in results.csv but not in the run's sweep "
                   "(config.json); the run directory is inconsistent")


def feature_spec(config, loaded, model) -> dict[str, Any]:
  """``features.json`` of a run's data: the raw columns the model's inputs come from.

  * ``tabular``: ``context`` = ``source.context_columns``, ``items`` =
    ``source.item_columns``, each ``{"name", "transform": "raw"}`` (the loader feeds the
    values as they are; a null reads as 0; non-finite values are refused);
  * ``letor``: ``items`` = the student's feature ids, each normalised as on train
    (``{"name": "feature <id>", "feature_id", "transform", "mean", "std"}``; ``transform``
    ``log_zscore``: ``(sign(x)·log1p(|x|) − mean) / std``, ``zscore``: ``(x − mean) / std``,
    ``none``: ``x``); ``context`` = one ``list_length`` input,
    ``log1p(L) / log1p(list_size)`` of the request's number of candidates ``L``;
  * other datasets (``arrays``): columns ``context_<i>`` / ``items_<i>``, used as they are.
  """
  from prerank_jax.data.registry import DATASETS

  kind = DATASETS[config.dataset].kind
  s = config.source
  fc, fi = (int(model.feature_sizes[g]) for g in ("context", "items"))
  if kind == "tabular":
    spec = {"kind": "tabular",
            "context": [{"name": c, "transform": "raw"} for c in s.context_columns],
            "items": [{"name": c, "transform": "raw"} for c in s.item_columns],
            "request_column": s.request_column,
            "candidate_column": s.get("candidate_column", "") or "",
            "null": 0.0}
  elif kind == "letor":
    spec = _letor_spec(config, loaded)
  else:
    spec = {"kind": "arrays",
            "context": [{"name": f"context_{i}", "transform": "raw"} for i in range(fc)],
            "items": [{"name": f"items_{i}", "transform": "raw"} for i in range(fi)],
            "request_column": "", "candidate_column": "", "null": 0.0}
  if (len(spec["context"]), len(spec["items"])) != (fc, fi):
    raise ValueError(f"export: the data give {len(spec['context'])} context and "
                     f"{len(spec['items'])} item columns, the model was built for {fc} and "
                     f"{fi}; the run's data changed since it trained")
  ids = id_spec(config, model, loaded)
  if ids is not None:
    spec["ids"] = ids
  return spec


def id_inputs(model) -> tuple[int, int, int, int]:
  """``(Cc, Ci, Cs, L)``: the ID columns a student reads (context, item, behaviour columns)
  and its behaviour length; all 0 for a model without ID embeddings (or a ``dssm`` built
  with no vocabularies and no behaviour sequence)."""
  options = model.options or {}
  if "context_vocab" not in options:  # the models with ID embeddings declare vocabularies
    return 0, 0, 0, 0
  cs = int(model.feature_sizes.get("sequence_ids", 0))
  length = int(model.feature_sizes.get("sequence_length", 0)) if cs else 0
  return len(options["context_vocab"]), len(options["item_vocab"]), cs, length


def id_type(arrow_type) -> str:
  """The kind of an ID column's Arrow type, as ``features.json`` records it and scoring
  checks it: ``integer``, ``string``, ``float``, ``boolean``, ``binary``, ``null`` (a column
  with no values) or ``list<...>`` (a behaviour list of IDs of that kind)."""
  import pyarrow as pa

  t = arrow_type
  if pa.types.is_dictionary(t):
    t = t.value_type
  if pa.types.is_list(t) or pa.types.is_large_list(t):
    return f"list<{id_type(t.value_type)}>"
  for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                     ("boolean", pa.types.is_boolean), ("null", pa.types.is_null),
                     ("string", lambda x: pa.types.is_string(x) or pa.types.is_large_string(x)),
                     ("binary", lambda x: pa.types.is_binary(x) or pa.types.is_large_binary(x))):
    if test(t):
      return kind
  return str(t)


def _source_id_types(path: str, names: Sequence[str]) -> dict[str, str | None]:
  """``{column: id_type}`` of a training table (Parquet schema, or the types pyarrow's CSV
  reader infers from its first block); ``None`` each when the file is gone."""
  if not path or not Path(path).is_file():
    return {n: None for n in names}
  if Path(path).suffix.lower() in (".parquet", ".pq"):
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
  else:
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(path)
    schema = reader.schema
    reader.close()
  return {n: (id_type(schema.field(n).type) if n in schema.names else None) for n in names}


def id_spec(config, model, loaded=None) -> dict[str, Any] | None:
  """The ``ids`` entry of ``features.json``: how raw IDs become the student's embedding
  rows; None for a student without ID inputs (:func:`id_inputs`).

  ``{"map", "buckets", "context": [...], "items": [...], "sequence": [...],
  "sequence_length": L}``; each column ``{"name", "rows", "type"}`` (``rows``: the model's
  table size, the reserved row 0 included; ``type``: :func:`id_type` of the training
  column, None if unknown). ``map`` is

  * ``hash`` (tabular data): an ID column is read as text (Arrow's cast to string; null →
    ``""``) and mapped with :func:`prerank_jax.batch.hash_ids` into ``buckets`` rows
    (``source.id_buckets``), ``""`` to the reserved row 0, exactly as the loader did; the
    behaviour ``sequence`` is one Parquet list column (its elements hashed as the Python
    values they read as, its first ``L`` entries kept, the rest padded with row 0,
    ``sequence_mask`` = row > 0). A hashed ID never seen in training still lands in its
    bucket (there is no vocabulary to be out of);
  * ``rows`` (the simulator's and other built-in datasets, whose batches hold table rows
    already): an integer column ``context_ids_<i>`` / ``item_ids_<i>`` and integer list
    columns ``sequence_ids_<j>`` are the rows themselves; a value outside ``[1, rows)``
    (unseen, negative) or a null is the reserved row 0.

  Raises:
    ValueError: the tabular source names other ID columns than the model was built for.
  """
  from prerank_jax.data.registry import DATASETS

  cc, ci, cs, length = id_inputs(model)
  if not (cc or ci or cs):
    return None
  options = model.options
  kind = DATASETS[config.dataset].kind
  vocab_c, vocab_i = list(options["context_vocab"]), list(options["item_vocab"])
  if kind == "tabular":
    s = config.source
    names_c = list(s.get("context_id_columns", ()))
    names_i = list(s.get("item_id_columns", ()))
    names_s = [s.sequence_column] if s.get("sequence_column") else []
    if (len(names_c), len(names_i), len(names_s)) != (cc, ci, cs):
      raise ValueError(f"export: source.context_id_columns {names_c}, item_id_columns "
                       f"{names_i} and sequence_column {names_s} do not match the model's "
                       f"{cc} context, {ci} item and {cs} behaviour ID columns; the run's "
                       "config changed since it trained")
    files = loaded.builder.builder_config.files if loaded is not None else {}
    types = _source_id_types(files.get("train", ""), [*names_c, *names_i, *names_s])
    head = {"map": "hash", "buckets": int(s.get("id_buckets", 100_003))}
  else:
    names_c = [f"context_ids_{i}" for i in range(cc)]
    names_i = [f"item_ids_{i}" for i in range(ci)]
    names_s = [f"sequence_ids_{j}" for j in range(cs)]
    types = {**{n: "integer" for n in [*names_c, *names_i]},
             **{n: "list<integer>" for n in names_s}}
    head = {"map": "rows"}
  column = lambda name, rows: {"name": name, "rows": int(rows), "type": types.get(name)}
  return {**head,
          "context": [column(n, v) for n, v in zip(names_c, vocab_c)],
          "items": [column(n, v) for n, v in zip(names_i, vocab_i)],
          "sequence": [column(n, vocab_i[j] if j < len(vocab_i) else 0)
                       for j, n in enumerate(names_s)],
          "sequence_length": length}


def _letor_spec(config, loaded) -> dict[str, Any]:
  from prerank_jax.data import letor

  c = loaded.builder.builder_config
  missing = [f for f in c.files.values() if f and not Path(f).is_file()]
  if missing:
    raise FileNotFoundError(f"export: the LETOR files {missing} are needed to learn the "
                            "train split's normalisation statistics again; put them back")
  queries = letor.split_queries(letor.parse_files(c.files), c.params)
  normalizer = letor.Normalizer(c.params["normalize"], [q[2] for q in queries["train"]])
  letor.clear_cache()
  kind = c.params["normalize"]
  items = []
  for fid in c.items_ids:
    entry = {"name": f"feature {fid}", "feature_id": int(fid), "transform": kind}
    if kind != "none":
      entry.update(mean=float(normalizer.mean[fid]), std=float(normalizer.std[fid]))
    items.append(entry)
  return {"kind": "letor", "items": items,
          "context": [{"name": "list_length", "transform": "log1p(L)/log1p(list_size)",
                       "list_size": int(c.params["list_size"])}],
          "request_column": "qid", "candidate_column": "docid", "null": 0.0}


def scoring_function(model, params: Any, *, platforms: Sequence[str] = PLATFORMS):
  """``(exported, leaves)``: ``model``'s scoring of single candidates, exported.

  The exported function is ``score(leaves, context [n, Fc], items [n, Fi]) -> [n]``,
  ``model.apply`` on ``n`` lists of one candidate, with ``n`` symbolic; ``leaves`` are the
  flattened ``params`` in its argument order. A student over IDs (:func:`id_inputs`) takes
  ``context_ids [n, Cc]``, ``item_ids [n, Ci]``, ``sequence_ids [n, L, Cs]`` (int32) and
  ``sequence_mask [n, L]`` (bool) after ``items``.

  Raises:
    ValueError: the model reads cross features (a student never does; ``din`` is a
      teacher for this reason).
  """
  import jax
  import jax.numpy as jnp
  from jax import export

  from prerank_jax.batch import Batch

  if "cross" in model.inputs:
    raise ValueError(f"export: model {model.name!r} reads cross features, which are not "
                     "available when serving; only students can be exported (din is a "
                     "teacher: its MLP reads the cross features)")
  cc, ci, cs, length = id_inputs(model)
  with_ids = bool(cc or ci or cs)
  leaves, treedef = jax.tree.flatten(params)
  leaves = [np.asarray(x) for x in leaves]

  def score(flat, context, items, *ids):
    n = items.shape[0]
    fields = {}
    if with_ids:  # absent groups stay None, as in the batches the model trained on
      context_ids, item_ids, sequence_ids, sequence_mask = ids
      fields = dict(context_ids=context_ids if cc else None,
                    item_ids=item_ids[:, None, :] if ci else None,
                    sequence_ids=sequence_ids if cs else None,
                    sequence_mask=sequence_mask if cs else None)
    batch = Batch(context=context, items=items[:, None, :],
                  cross=jnp.zeros((n, 1, 0), jnp.float32), label=jnp.zeros((n, 1)),
                  exposed=jnp.zeros((n, 1), bool), valid=jnp.ones((n, 1), bool), **fields)
    return model.apply(jax.tree.unflatten(treedef, flat), batch)[:, 0].astype(jnp.float32)

  (n,) = export.symbolic_shape("n")
  fc, fi = (int(model.feature_sizes[g]) for g in ("context", "items"))
  specs = [[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
           jax.ShapeDtypeStruct((n, fc), jnp.float32), jax.ShapeDtypeStruct((n, fi), jnp.float32)]
  if with_ids:
    specs += [jax.ShapeDtypeStruct((n, cc), jnp.int32), jax.ShapeDtypeStruct((n, ci), jnp.int32),
              jax.ShapeDtypeStruct((n, length, cs), jnp.int32),
              jax.ShapeDtypeStruct((n, length), jnp.bool_)]
  exported = export.export(jax.jit(score), platforms=tuple(platforms))(*specs)
  return exported, leaves


def tower_functions(model, params: Any, *,
                    platforms: Sequence[str] = PLATFORMS) -> dict[str, Any] | None:
  """``{"users": exported, "items": exported}``: a ``dssm``'s two towers, exported; None for
  other models.

  ``users(leaves, context [n, Fc], context_ids [n, Cc], sequence_ids [n, L, Cs],
  sequence_mask [n, L]) -> u [n, D]`` and ``items(leaves, items [n, Fi], item_ids [n, Ci])
  -> v [n, D]`` (float32, ``n`` symbolic), the module's ``user_embedding`` and
  ``item_embeddings``; the score of :func:`scoring_function` is ``Σ_d u·v``. An absent
  field is a 0-wide array (``Cc = 0`` and so on).
  """
  import jax
  import jax.numpy as jnp
  from jax import export

  from prerank_jax.batch import Batch

  if model.name != "dssm":
    return None
  cc, ci, cs, length = id_inputs(model)
  fc, fi = (int(model.feature_sizes[g]) for g in ("context", "items"))
  leaves, treedef = jax.tree.flatten(params)
  leaves = [np.asarray(x) for x in leaves]

  def batch(n, **fields):
    return Batch(**{"context": jnp.zeros((n, fc)), "items": jnp.zeros((n, 1, fi)),
                    "cross": jnp.zeros((n, 1, 0)), "label": jnp.zeros((n, 1)),
                    "exposed": jnp.zeros((n, 1), bool), "valid": jnp.ones((n, 1), bool),
                    **fields})

  def users(flat, context, context_ids, sequence_ids, sequence_mask):
    b = batch(context.shape[0], context=context, context_ids=context_ids if cc else None,
              sequence_ids=sequence_ids if cs else None,
              sequence_mask=sequence_mask if cs else None)
    return model.bind(jax.tree.unflatten(treedef, flat)).user_embedding(b).astype(jnp.float32)

  def items(flat, items, item_ids):
    b = batch(items.shape[0], items=items[:, None, :],
              item_ids=item_ids[:, None, :] if ci else None)
    module = model.bind(jax.tree.unflatten(treedef, flat))
    return module.item_embeddings(b)[:, 0, :].astype(jnp.float32)

  (n,) = export.symbolic_shape("n")
  shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  out = {"users": export.export(jax.jit(users), platforms=tuple(platforms))(
             shapes, jax.ShapeDtypeStruct((n, fc), jnp.float32), i32(n, cc),
             i32(n, length, cs), jax.ShapeDtypeStruct((n, length), jnp.bool_)),
         "items": export.export(jax.jit(items), platforms=tuple(platforms))(
             shapes, jax.ShapeDtypeStruct((n, fi), jnp.float32), i32(n, ci))}
  return out


def _params_bytes(leaves: Sequence[np.ndarray]) -> bytes:
  import io

  buffer = io.BytesIO()
  np.savez(buffer, **{f"p{i:04d}": x for i, x in enumerate(leaves)})
  return buffer.getvalue()


def export_point(run_dir: str | Path, point: str, out: str | Path, *, overwrite: bool = False,
                 platforms: Sequence[str] = PLATFORMS) -> Path:
  """Exports sweep point ``point`` of the finished run ``run_dir`` to the artifact ``out``.

  Args:
    run_dir: a finished run directory (``config.json``, ``results.csv``, checkpoints).
    point: a ``model`` of ``results.csv``, e.g. ``"student temperature=2 alpha=0.5"`` or,
      with ``sweep.programs``, ``"student [name=linear] temperature=2 alpha=0.5"`` (the
      older spelling ``"student T=2 α=0.5"`` is accepted).
    out: the artifact directory to write.
    overwrite: replace an existing ``out`` (only once the new artifact is complete).
    platforms: ``jax.export`` platforms to lower for.

  Returns:
    ``out``.

  Raises:
    FileExistsError: ``out`` exists and not ``overwrite`` (checked before any work).
    ValueError: unknown point (listing the students), a diverged point, a platform name.
    FileNotFoundError: no results yet; the student phase is not finished; LETOR files
      needed for the normalisation statistics are gone.
  """
  import jax

  from prerank_jax.data.registry import load_dataset
  from prerank_jax.host.rundir import load_run_config
  from prerank_jax.host.sweep_driver import restore_phase
  from prerank_jax.train.loop import SweepData

  run_dir, out = Path(run_dir), Path(out)
  if out.exists() and not overwrite:
    raise FileExistsError(f"{out}: already exists; choose another --out or pass --overwrite "
                          "to replace it")
  bad = [p for p in platforms if p not in PLATFORMS]
  if bad or not platforms:
    raise ValueError(f"--platforms: {bad or 'none given'}; choose among {list(PLATFORMS)}")
  from prerank_jax.analysis.load import normalize_name

  point = normalize_name(point)  # the names of this version (old spellings accepted)
  config = load_run_config(run_dir)
  row = results_row(run_dir, point)
  if row.get("status") == "diverged":
    raise ValueError(f"--point: {point!r} diverged in training (status 'diverged'); "
                     "export another point")
  tag, program, points, index = _find_point(config, point)
  loaded = load_dataset(config)
  data = SweepData(loaded.splits["train"], loaded.splits["valid"])
  phase = restore_phase(program, "student", points, data, run_dir, tag=tag)
  params = jax.tree.map(lambda x: np.asarray(x[index]), phase.state.params)
  model = phase.trainer.model
  return write_artifact(out, model=model, params=params,
                        spec=feature_spec(config, loaded, model),
                        config=json.loads(program.to_json_best_effort()), metrics=row,
                        point=point, run=str(run_dir.resolve()), dataset=config.dataset,
                        overwrite=overwrite, platforms=platforms)


def write_artifact(out: str | Path, *, model, params: Any, spec: dict, config: dict,
                   metrics: dict, point: str, run: str = "", dataset: str = "",
                   overwrite: bool = False, platforms: Sequence[str] = PLATFORMS) -> Path:
  """Writes the artifact of ``model`` with ``params`` (one point's, unstacked) to ``out``.

  :func:`export_point` calls this with a run's restored point; a test or a benchmark may
  call it with any :class:`~prerank_jax.models.PureModel` and parameters.

  Args:
    out: the artifact directory (written atomically; see the module docstring).
    model: the student as built for training (its ``apply`` is what is exported).
    params: its parameters (a pytree).
    spec: the feature spec (:func:`feature_spec`).
    config: the run's config as a dict; ``metrics``: the point's results row.
    point, run, dataset: recorded in the manifest.
    overwrite, platforms: as :func:`export_point`.

  Returns:
    ``out``.
  """
  import jax

  from prerank_jax import __version__

  spec = dict(spec)
  cc, ci, cs, length = id_inputs(model)
  if (cc or ci or cs) and not isinstance(spec.get("ids"), dict):
    raise ValueError(f"export: model {model.name!r} reads categorical IDs, but the feature "
                     "spec has no 'ids' entry (id_spec) saying how raw IDs become rows")
  exported, leaves = scoring_function(model, params, platforms=platforms)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  spec["parameters"] = [{"array": f"p{i:04d}", "path": p, "shape": list(x.shape)}
                        for i, (p, x) in enumerate(zip(paths, leaves))]
  files = {
      FUNCTION_FILE: bytes(exported.serialize()),
      PARAMS_FILE: _params_bytes(leaves),
      FEATURES_FILE: _json(spec),
      CONFIG_FILE: _json(config),
      METRICS_FILE: _json(metrics),
  }
  towers = tower_functions(model, params, platforms=platforms)
  for side, exported_tower in (towers or {}).items():
    files[TOWER_FILES[side]] = bytes(exported_tower.serialize())
  inputs = {"context": len(spec["context"]), "items": len(spec["items"])}
  if cc or ci or cs:
    inputs.update(context_ids=cc, item_ids=ci, sequence_ids=cs, sequence_length=length)
  manifest = {"format": FORMAT, "format_version": FORMAT_VERSION if cc or ci or cs else 1,
              "point": point, "model": model.name, "run": run, "dataset": dataset,
              "platforms": list(exported.platforms), "jax_version": jax.__version__,
              "prerank_jax_version": __version__, "inputs": inputs}
  return write_directory_atomic(Path(out), files, manifest, overwrite=overwrite)
