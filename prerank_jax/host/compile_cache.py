"""JAX's persistent compilation cache, on by default for the command line.

A run compiles a few XLA programs (the teacher's and the students' training, the
evaluation); with the cache on, a second run of the same shapes reads them from disk
instead of compiling them again. Where the cache lives, in order:

1. ``JAX_COMPILATION_CACHE_DIR`` (JAX's own variable), when set: JAX uses it as is;
2. ``PRERANK_JAX_CACHE_DIR``;
3. ``~/.cache/prerank-jax/xla`` (the experiments' harness uses the same folder).

``prerank-jax <command> --no-compile-cache`` (or ``PRERANK_JAX_CACHE_DIR=off``) turns it
off. Entries are keyed by the program, the jax/jaxlib version and the device, so a stale
entry is never used; deleting the folder is always safe.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ENV_VAR = "PRERANK_JAX_CACHE_DIR"
DEFAULT_DIR = Path.home() / ".cache" / "prerank-jax" / "xla"
OFF_VALUES = ("off", "0", "false", "none", "")


def cache_dir() -> Path | None:
  """The folder the cache would use (``None``: turned off with ``PRERANK_JAX_CACHE_DIR=off``)."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
  value = os.environ.get(ENV_VAR)
  if value is None:
    return DEFAULT_DIR
  if value.strip().lower() in OFF_VALUES:
    return None
  return Path(value).expanduser()


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
  """Turns JAX's persistent compilation cache on (call before the first compilation).

  Every program is cached, however fast it compiled and however small it is (JAX's
  defaults skip programs under 1 s, which are most of a small run's), unless
  ``JAX_COMPILATION_CACHE_DIR`` is set: then JAX's own settings (its folder and
  ``JAX_PERSISTENT_CACHE_*`` thresholds) are used as they are. Returns the folder, or
  ``None`` when ``PRERANK_JAX_CACHE_DIR=off`` turned it off.
  """
  import jax

  if path is None and os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # JAX's own variables rule (the test suite sets them): leave its thresholds alone.
    jax.config.update("jax_enable_compilation_cache", True)
    return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
  folder = Path(path) if path is not None else cache_dir()
  if folder is None:
    disable_compilation_cache()
    return None
  folder.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return folder


def disable_compilation_cache() -> None:
  """Turns the persistent cache off for this process (also a ``JAX_COMPILATION_CACHE_DIR``)."""
  import jax

  jax.config.update("jax_enable_compilation_cache", False)
  jax.config.update("jax_compilation_cache_dir", None)


# --- The store of traced programs (prerank_jax/programs.py) -------------------------------

PROGRAMS_SUBDIR = "programs"
# Datasets whose arrays the config determines (the simulator's knobs and seed): only their
# runs keep traced programs, so a stored program can never outlive the data it was traced
# for. A run over files (whose contents the config does not pin) traces as before.
STORED_DATASETS = ("simulator",)
# Config fields that change where and how a run reports, never what it computes.
HOST_ONLY_FIELDS = ("name", "workdir", "overwrite", "resume", "progress", "checkpoint_every",
                    "wandb", "distributed")
# Config fields that reach a program only as its arguments: the sweep's values are traced
# hyperparameters (their names and the point count are in the arguments' tree and shapes),
# and its group size is in the programs' names (train/sweep.py::compile_sweep). Another
# T or alpha grid reuses the stored programs.
ARGUMENT_FIELDS = ("sweep",)

_source_digest: str | None = None


def source_fingerprint() -> str:
  """SHA-256 of every ``.py`` file of the installed package (path and bytes): a stored
  program is never used by other code than the one that traced it."""
  global _source_digest
  if _source_digest is None:
    import hashlib
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
      digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    _source_digest = digest.hexdigest()
  return _source_digest


# The libraries whose Python code a program traces (optax's updates, flax's layers, ...):
# another version of any of them traces to another program.
TRACED_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections")


def library_versions() -> dict[str, str]:
  """``{module: __version__}`` of :data:`TRACED_LIBRARIES` (all imported by a run already;
  reading the attribute costs nothing, unlike scanning the installed distributions)."""
  import importlib
  return {name: str(getattr(importlib.import_module(name), "__version__", "unknown"))
          for name in TRACED_LIBRARIES}


class ProgramStore:
  """The host's store of traced programs: one file per key in ``folder``, written
  atomically (a temporary file renamed over the name); a file that cannot be read or
  written is left alone and the program traced as usual. Entries are Python pickles, like
  the executables in JAX's own cache: keep the folder as private as your home directory."""

  def __init__(self, folder: Path):
    self.folder = Path(folder)
    self.context = ""  # set per run by program_context; "" stores nothing

  def _path(self, key: str) -> Path:
    return self.folder / f"{key}.program"

  def load(self, key: str) -> bytes | None:
    try:
      return self._path(key).read_bytes()
    except OSError:
      return None

  def save(self, key: str, blob: bytes) -> None:
    path = self._path(key)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
      self.folder.mkdir(parents=True, exist_ok=True)
      tmp.write_bytes(blob)
      os.replace(tmp, path)
    except OSError:  # a full or read-only disk: the run goes on, the next one traces again
      tmp.unlink(missing_ok=True)


def enable_program_store(folder: Path | None) -> ProgramStore | None:
  """Installs a :class:`ProgramStore` in ``<folder>/programs`` (``None``: none)."""
  from prerank_jax import programs
  store = None if folder is None else ProgramStore(Path(folder) / PROGRAMS_SUBDIR)
  programs.install(store)
  return store


def disable_program_store() -> None:
  from prerank_jax import programs
  programs.install(None)


def program_name(config, stem: str) -> str:
  """A program's name in the store: ``stem`` and the fingerprint of the config it was
  built from, without the fields that never change what it traces to."""
  from prerank_jax.fingerprint import fingerprint
  fields = {k: v for k, v in config.to_dict().items()
            if k not in HOST_ONLY_FIELDS + ARGUMENT_FIELDS}
  return f"{stem}:{fingerprint(fields)}"


@contextlib.contextmanager
def program_context(config):
  """While inside, the installed store keeps this run's programs (simulator datasets only,
  ``STORED_DATASETS``); the context is the package's sources, the traced libraries'
  versions (:func:`library_versions`) and the data's
  identity, so a program is reused only by the same code and libraries on the same data."""
  from prerank_jax import programs
  from prerank_jax.fingerprint import fingerprint
  from prerank_jax.host.identity import data_identity
  store = programs.installed()
  if not isinstance(store, ProgramStore):
    yield
    return
  previous = store.context
  if config.dataset in STORED_DATASETS:
    store.context = fingerprint({"sources": source_fingerprint(),
                                 "libraries": library_versions(),
                                 "data": data_identity(config)}, length=64)
  else:
    store.context = ""
  try:
    yield
  finally:
    store.context = previous
