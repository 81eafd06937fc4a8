"""Run directories: refuse foreign ones, never half-write results.

Layout of ``<workdir>/<name>/``::

  config.json                 the resolved config (written first)
  checkpoints/teacher/<n>/    Orbax checkpoints of the teacher phase
  checkpoints/students/<n>/   Orbax checkpoints of the student sweep
  results.csv results.md history.json   written atomically at the end
  wandb/                      offline W&B runs, one per sweep point
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import ml_collections

# Fields that change how a run is watched, not what it computes.
_NOT_IDENTITY = ("overwrite", "resume", "progress", "wandb", "workdir", "distributed")


def config_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as a dict, minus the fields that don't change the results."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  return {k: v for k, v in data.items() if k not in _NOT_IDENTITY}


def fingerprint(obj: Any) -> str:
  """A short stable hash of a JSON-serialisable object."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_text_atomic(path: Path, text: str) -> None:
  """Writes a file via a temporary sibling and a rename: never a half-written file."""
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_text(text)
  os.replace(tmp, path)


def prepare_run_dir(config: ml_collections.ConfigDict, *, create: bool = True) -> Path:
  """Creates, reuses or refuses ``<workdir>/<name>`` according to the config.

  - new directory: created, ``config.json`` written;
  - existing and ``resume``: reused only if its ``config.json`` describes the same run;
  - existing and ``overwrite``: deleted and recreated;
  - otherwise refused, leaving it untouched.

  In a multi-process run every process calls this (so all raise the same error), and only
  the one with ``create=True`` changes the file system.

  Raises:
    FileExistsError: the directory exists and may not be touched, or belongs to a
      different config.
  """
  run_dir = Path(config.workdir) / config.name
  identity = config_identity(config)
  if run_dir.exists():
    if config.resume:
      saved_path = run_dir / "config.json"
      saved = json.loads(saved_path.read_text()) if saved_path.exists() else None
      if saved is None or {k: v for k, v in saved.items() if k not in _NOT_IDENTITY} != identity:
        diff = sorted(k for k in set(identity) | set(saved or {})
                      if k not in _NOT_IDENTITY and (saved or {}).get(k) != identity.get(k))
        raise FileExistsError(
            f"{run_dir} belongs to a different config (differs in {diff}); refusing to "
            "resume into it. Use another --config.name.")
      return run_dir
    if not config.overwrite:
      raise FileExistsError(f"{run_dir} exists; pass --config.resume=True to continue it, "
                            "--config.overwrite=True to replace it, or choose another "
                            "--config.name")
    if create:
      shutil.rmtree(run_dir)
  if not create:
    return run_dir
  run_dir.mkdir(parents=True)
  write_text_atomic(run_dir / "config.json", config.to_json_best_effort(indent=1,
                                                                        sort_keys=True))
  return run_dir
