"""Run directories: refuse foreign ones, never half-write results.

Layout of ``<workdir>/<name>/``::

  config.json                 the resolved config (written first)
  checkpoints/teacher/<n>/    Orbax checkpoints of the teacher phase
  checkpoints/students/<n>/   Orbax checkpoints of the student sweep
  results.csv results.md history.json   written atomically at the end
  wandb/                      offline W&B runs, one per sweep point
  run_id                      a random id made with the directory (W&B run ids derive from it)

Next to it, while a run uses it::

  .<name>.lock                the pid and host of the run using the directory
  .<name>.overwrite/          ``--overwrite`` trains here; swapped in when the run finished

A run directory is locked while a run uses it: a second run on it (or a ``--resume``
racing an ``--overwrite``) is refused; a lock left by a process that no longer exists (on
this host) is taken over with a message. ``--overwrite`` never deletes the previous result
before the new one exists: the new run trains into ``.<name>.overwrite`` and only the
finished directory replaces the old one (two renames, through
``.<name>.replaced-<pid>``; the old one is then deleted). A kill between the renames is
repaired by the next start on the directory (:func:`recover_interrupted_swap`), which
keeps the complete side and says so.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import ml_collections

from prerank_jax.config import validate_config
from prerank_jax.fingerprint import fingerprint
from prerank_jax.host.processes import is_main

# Fields that change how a run is watched, not what it computes.
_NOT_IDENTITY = ("overwrite", "resume", "progress", "wandb", "workdir", "distributed")


def config_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as a dict, minus the fields that don't change the results."""
  data = json.loads(config.to_json_best_effort(sort_keys=True))
  return {k: v for k, v in data.items() if k not in _NOT_IDENTITY}


class RunDirLocked(FileExistsError):
  """Another live process is using the run directory."""


class RunDirError(OSError):
  """The run directory (or a file in it) cannot be written: unwritable, or disk full."""


def _write_error(path: Path, e: OSError) -> RunDirError:
  code = errno.errorcode.get(e.errno, "") if e.errno else ""
  return RunDirError(e.errno, f"cannot write {path}: {e.strerror or e}"
                     + (f" ({code})" if code else "")
                     + "; check that the directory is writable and the disk has space")


def write_text_atomic(path: Path, text: str) -> None:
  """Writes a file via a temporary sibling, fsync and a rename: never a half-written
  file, and no temporary left behind when the write fails.

  Raises:
    RunDirError: the write failed (the previous file, if any, is unchanged).
  """
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    tmp.unlink(missing_ok=True)
    raise _write_error(path, e) from e


def lock_path(run_dir: Path) -> Path:
  """The lock file of a run directory: ``<workdir>/.<name>.lock``."""
  return Path(run_dir).parent / f".{Path(run_dir).name}.lock"


def staging_path(run_dir: Path) -> Path:
  """Where ``--overwrite`` trains before it replaces ``run_dir``."""
  return Path(run_dir).parent / f".{Path(run_dir).name}.overwrite"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def acquire_lock(run_dir: Path) -> Path:
  """Locks ``run_dir`` for this process (creating its parent); returns the lock file.

  The lock is created atomically (a hard link of a complete temporary file), so a reader
  never sees a half-written lock.

  Raises:
    RunDirLocked: a live process (or one on another host) holds the lock.
    RunDirError: the work directory is not writable.
  """
  run_dir = Path(run_dir)
  lock = lock_path(run_dir)
  me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
  tmp = lock.with_name(f"{lock.name}.tmp-{os.getpid()}")
  if lock.parent.exists() and not lock.parent.is_dir():
    raise _write_error(lock.parent, NotADirectoryError(errno.ENOTDIR,
                                                       os.strerror(errno.ENOTDIR)))
  try:
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(me))
    for _ in range(3):
      try:
        os.link(tmp, lock)
        return lock
      except FileExistsError:
        pass
      try:
        holder = json.loads(lock.read_text())
      except FileNotFoundError:
        continue  # released meanwhile: try again
      except ValueError:
        holder = {}
      pid, host = holder.get("pid"), holder.get("host")
      if host != me["host"] or not isinstance(pid, int):
        raise RunDirLocked(
            f"{run_dir} is locked by process {pid} on host {host!r} ({lock}); if no run "
            "is using it any more, delete the lock file")
      if pid == me["pid"] or _pid_alive(pid):
        raise RunDirLocked(
            f"{run_dir} is in use by process {pid} ({lock}); wait for it to finish, or "
            "stop it, before running on this directory again")
      print(f"note: taking over the stale lock of {run_dir} left by process {pid}, "
            "which no longer runs")
      lock.unlink(missing_ok=True)
    raise RunDirLocked(f"{run_dir}: could not take its lock {lock}; another process keeps "
                       "taking it")
  except OSError as e:
    if isinstance(e, RunDirLocked):
      raise
    raise _write_error(lock, e) from e
  finally:
    try:
      tmp.unlink(missing_ok=True)
    except OSError:  # the directory itself is unusable; reported above
      pass


def holds_lock(run_dir: Path) -> bool:
  """Whether this process holds ``run_dir``'s lock."""
  try:
    holder = json.loads(lock_path(run_dir).read_text())
  except (OSError, ValueError):
    return False
  return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def release_lock(run_dir: Path) -> None:
  """Removes ``run_dir``'s lock if this process holds it (safe to call twice)."""
  if holds_lock(run_dir):
    lock_path(run_dir).unlink(missing_ok=True)


def commit_run_dir(config: ml_collections.ConfigDict, working: Path) -> Path:
  """Makes the finished ``working`` directory the run directory; returns the latter.

  For a run that trained in place this does nothing. For ``--overwrite`` of an existing
  directory the old one is renamed aside, the staging directory renamed into its place,
  and only then the old one deleted.
  """
  run_dir = Path(config.workdir) / config.name
  if Path(working) == run_dir:
    return run_dir
  old = run_dir.parent / f".{run_dir.name}.replaced-{os.getpid()}"
  try:
    if run_dir.exists():
      os.replace(run_dir, old)
    os.replace(working, run_dir)
  except OSError as e:
    if old.exists() and not run_dir.exists():
      os.replace(old, run_dir)  # put the previous result back
    raise _write_error(run_dir, e) from e
  shutil.rmtree(old, ignore_errors=True)
  return run_dir


def _complete(directory: Path) -> bool:
  """A finished run directory: its config and its results were written."""
  return (directory / "config.json").is_file() and (directory / "results.csv").is_file()


def recover_interrupted_swap(run_dir: Path) -> list[str]:
  """Repairs an ``--overwrite`` swap (:func:`commit_run_dir`) that a kill interrupted;
  returns the messages it printed (none when there was nothing to repair).

  The swap renames ``<name>`` to ``.<name>.replaced-<pid>``, then the finished staging
  directory ``.<name>.overwrite`` to ``<name>``, then deletes the former. What a kill
  leaves, and what is kept:

  - no ``<name>``, a ``.replaced-<pid>`` and a complete staging directory (its
    ``config.json`` and ``results.csv`` written; it is swapped in only then): the new run
    is renamed into place, then the previous one deleted;
  - no ``<name>`` and no complete staging directory: the previous result is put back
    (the incomplete staging directory is left for the next ``--overwrite`` to clear);
  - ``<name>`` and a ``.replaced-<pid>`` (killed while deleting it): the swap had
    finished, the leftover is deleted.

  A ``.replaced-<pid>`` of a process that still runs on this host (a swap in progress)
  is left alone. Nothing is deleted before the directory it would leave as ``<name>`` is
  in place.
  """
  run_dir = Path(run_dir)
  messages = []
  prefix = f".{run_dir.name}.replaced-"
  if not run_dir.parent.is_dir():
    return messages
  leftovers = sorted(p for p in run_dir.parent.iterdir()
                     if p.name.startswith(prefix) and p.is_dir())
  for old in leftovers:
    pid = old.name[len(prefix):]
    if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
      continue  # a swap in progress; that process finishes it
    staging = staging_path(run_dir)
    try:
      if run_dir.exists():
        shutil.rmtree(old)
        messages.append(f"note: removed {old}, the previous result left by an --overwrite "
                        f"of {run_dir} that was killed after its swap (process {pid})")
      elif staging.is_dir() and _complete(staging):
        os.replace(staging, run_dir)
        shutil.rmtree(old)
        messages.append(f"note: an --overwrite of {run_dir} was killed between its two "
                        f"renames (process {pid}); its new run was complete: moved it into "
                        f"place from {staging} and removed the previous result {old}")
      else:
        os.replace(old, run_dir)
        messages.append(f"note: an --overwrite of {run_dir} was killed between its two "
                        f"renames (process {pid}) before its new run was complete; put the "
                        f"previous result back from {old}")
    except OSError as e:
      raise _write_error(run_dir, e) from e
  for message in messages:
    print(message)
  return messages


def discard_staging(config: ml_collections.ConfigDict) -> None:
  """Deletes the staging directory of a failed ``--overwrite`` (the old result stays)."""
  shutil.rmtree(staging_path(Path(config.workdir) / config.name), ignore_errors=True)


def run_id(run_dir: Path) -> str:
  """The random id stored in ``run_dir/run_id`` when the directory was made.

  W&B run ids derive from it, so a resumed run continues the same W&B runs while a run
  made again with ``--overwrite`` starts new ones. A directory made by an older version
  (without the file) gets its fingerprint of the path instead.
  """
  path = Path(run_dir) / "run_id"
  if path.exists():
    return path.read_text().strip()
  return fingerprint(str(Path(run_dir).resolve()))


def prepare_run_dir(config: ml_collections.ConfigDict, *, create: bool = True) -> Path:
  """Creates, reuses or refuses ``<workdir>/<name>`` according to the config; returns
  the directory the run writes into (its *working* directory).

  - new directory: created, ``config.json`` written;
  - existing and ``resume``: reused only if its ``config.json`` describes the same run;
  - existing and ``overwrite``: left as it is; the run works in a fresh staging
    directory (:func:`staging_path`), which :func:`commit_run_dir` swaps in at the end;
  - otherwise refused, leaving it untouched.

  First, an ``--overwrite`` swap that a kill interrupted is repaired
  (:func:`recover_interrupted_swap`, process 0 only).

  In a multi-process run every process calls this (so all raise the same error and
  get the same path), and only the one with ``create=True`` changes the file system;
  that one must hold the lock (:func:`acquire_lock`).

  Raises:
    FileExistsError: the directory exists and may not be touched, or belongs to a
      different config.
    RunDirError: the directory cannot be created or written.
  """
  run_dir = Path(config.workdir) / config.name
  if is_main():  # an --overwrite killed mid-swap: keep the complete side (says so)
    recover_interrupted_swap(run_dir)
  identity = config_identity(config)
  if run_dir.exists() and config.overwrite and not config.resume:
    working = staging_path(run_dir)
    if create:
      shutil.rmtree(working, ignore_errors=True)  # left by a killed --overwrite
      _make(config, working)
    return working
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
    raise FileExistsError(f"{run_dir} exists; pass --config.resume=True to continue it, "
                          "--config.overwrite=True to replace it, or choose another "
                          "--config.name")
  if create:
    _make(config, run_dir)
  return run_dir


def _make(config: ml_collections.ConfigDict, directory: Path) -> None:
  try:
    directory.mkdir(parents=True)
  except OSError as e:
    raise _write_error(directory, e) from e
  try:
    write_text_atomic(directory / "run_id", secrets.token_hex(8))
    write_text_atomic(directory / "config.json", config.to_json_best_effort(indent=1,
                                                                            sort_keys=True))
  except RunDirError:
    shutil.rmtree(directory, ignore_errors=True)  # no half-made run directory
    raise


def load_run_config(run_dir: Path) -> ml_collections.ConfigDict:
  """The locked config a run directory was made with (its ``config.json``)."""
  path = Path(run_dir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
  tuples = lambda x: (tuple(tuples(v) for v in x) if isinstance(x, list) else
                      {k: tuples(v) for k, v in x.items()} if isinstance(x, dict) else x)
  config = ml_collections.ConfigDict(tuples(json.loads(path.read_text())))
  config.workdir, config.name = str(Path(run_dir).parent), Path(run_dir).name
  config.progress, config.wandb.mode = False, "disabled"
  config.lock()
  return validate_config(config)
