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
