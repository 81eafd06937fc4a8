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

**The scoring function.** Every student scores each candidate from the request's context
features and the candidate's own features alone (``prerank_jax/models``: the student never
sees cross features), so the export takes one row per candidate:
``context [n, Fc]`` (the request's context repeated on each of its candidates) and
``items [n, Fi]``, both float32 model inputs, and returns float32 scores ``[n]``. This is
the run's ``apply`` on lists of one candidate; the two-tower students compute their context
tower once per row here (their cached serving path lives in
:meth:`~prerank_jax.models.PureModel.score_cached`).

**Loading** (:func:`load_artifact`) imports only ``jax``, ``numpy`` and the standard
library: no flax, optax, orbax, TFDS or training code. It refuses, naming the file and what
differs, an artifact whose format version is not :data:`FORMAT_VERSION`, a file that is
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
FORMAT_VERSION = 1
PLATFORMS = ("cpu", "cuda", "tpu")
MANIFEST = "manifest.json"
FUNCTION_FILE = "scoring.jax_export"
PARAMS_FILE = "params.npz"
FEATURES_FILE = "features.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
FILES = (FUNCTION_FILE, PARAMS_FILE, FEATURES_FILE, CONFIG_FILE, METRICS_FILE)


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
               metrics: dict, exported: Any, params: list[np.ndarray]):
    import jax

    self.path, self.manifest, self.features = path, manifest, features
    self.config, self.metrics, self.exported, self.params = config, metrics, exported, params
    self._call = jax.jit(exported.call)
    self._device_params = None

  @property
  def num_context(self) -> int:
    """``Fc``: the number of context inputs."""
    return len(self.features["context"])

  @property
  def num_items(self) -> int:
    """``Fi``: the number of item inputs."""
    return len(self.features["items"])

  def score(self, context: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Scores ``[n]`` (float32 logits) of ``n`` candidates.

    Args:
      context: ``[n, Fc]`` model inputs of each candidate's request context (already
        transformed as ``features.json`` says; :mod:`prerank_jax.host.scoring` does that
        from raw rows).
      items: ``[n, Fi]`` model inputs of each candidate.

    Each distinct ``n`` compiles once; callers that stream pad to a fixed size.
    """
    import jax

    context = np.asarray(context, np.float32)
    items = np.asarray(items, np.float32)
    n = items.shape[0]
    if context.shape != (n, self.num_context) or items.shape != (n, self.num_items):
      raise ArtifactError(f"score: expected context [n, {self.num_context}] and items "
                          f"[n, {self.num_items}], got {context.shape} and {items.shape}")
    if self._device_params is None:
      self._device_params = [jax.device_put(p) for p in self.params]
    return np.asarray(self._call(self._device_params, context, items))


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
      format version other than :data:`FORMAT_VERSION`.
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
  if version != FORMAT_VERSION:
    raise ArtifactError(f"{file}: format_version {version!r}; this prerank-jax reads format "
                        f"version {FORMAT_VERSION} only (export the run again with this "
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
  avals = exported.in_avals
  if len(avals) != len(params) + 2:
    raise ArtifactError(f"{path / PARAMS_FILE}: {len(params)} parameter arrays, the exported "
                        f"function takes {len(avals) - 2}")
  for name, p, aval in zip(names, params, avals):
    if tuple(p.shape) != tuple(aval.shape) or p.dtype != aval.dtype:
      raise ArtifactError(f"{path / PARAMS_FILE}: {name} is {p.dtype}{list(p.shape)}, the "
                          f"exported function takes {aval.dtype}{list(aval.shape)}")
  for group, aval in (("context", avals[-2]), ("items", avals[-1])):
    listed = len(features.get(group, ()))
    if aval.shape[-1] != listed:
      raise ArtifactError(f"{path / FEATURES_FILE}: lists {listed} {group} column(s), the "
                          f"exported function takes {aval.shape[-1]}; the feature spec does "
                          "not belong to this function")
  here = _platform()
  if here not in exported.platforms:
    raise ArtifactError(f"{path / FUNCTION_FILE}: lowered for {list(exported.platforms)}, "
                        f"not for this machine's {here!r}; export it again with "
                        f"--platforms including {here}")
  return StudentArtifact(path, manifest, features, config, metrics, exported, params)


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
  from prerank_jax.analysis.load import normalize_name  # old names (T=, α=, lr=) match too

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
  return spec


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
  flattened ``params`` in its argument order.

  Raises:
    ValueError: the model reads cross features (a student never does).
  """
  import jax
  import jax.numpy as jnp
  from jax import export

  from prerank_jax.batch import Batch

  if "cross" in model.inputs:
    raise ValueError(f"export: model {model.name!r} reads cross features, which are not "
                     "available when serving; only students can be exported")
  options = model.options or {}
  if (options.get("context_vocab") or options.get("item_vocab")
      or model.feature_sizes.get("sequence_ids")):
    raise ValueError(f"export: model {model.name!r} reads categorical ID embeddings or a "
                     "behaviour sequence; this export takes float features only (a dssm "
                     "without ID vocabularies exports)")
  leaves, treedef = jax.tree.flatten(params)
  leaves = [np.asarray(x) for x in leaves]

  def score(flat, context, items):
    n = items.shape[0]
    batch = Batch(context=context, items=items[:, None, :],
                  cross=jnp.zeros((n, 1, 0), jnp.float32), label=jnp.zeros((n, 1)),
                  exposed=jnp.zeros((n, 1), bool), valid=jnp.ones((n, 1), bool))
    return model.apply(jax.tree.unflatten(treedef, flat), batch)[:, 0].astype(jnp.float32)

  (n,) = export.symbolic_shape("n")
  fc, fi = (int(model.feature_sizes[g]) for g in ("context", "items"))
  specs = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
           jax.ShapeDtypeStruct((n, fc), jnp.float32), jax.ShapeDtypeStruct((n, fi), jnp.float32))
  exported = export.export(jax.jit(score), platforms=tuple(platforms))(*specs)
  return exported, leaves


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
    point: a ``model`` of ``results.csv``, e.g. ``"student T=2 α=0.5"`` or, with
      ``sweep.programs``, ``"student [name=linear] T=2 α=0.5"``.
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
  manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "point": point,
              "model": model.name, "run": run, "dataset": dataset,
              "platforms": list(exported.platforms), "jax_version": jax.__version__,
              "prerank_jax_version": __version__,
              "inputs": {"context": len(spec["context"]), "items": len(spec["items"])}}
  return write_directory_atomic(Path(out), files, manifest, overwrite=overwrite)
  from prerank_jax.analysis.load import normalize_name

  point = normalize_name(point)  # the names of this version (old spellings accepted)
