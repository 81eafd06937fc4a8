"""Orbax checkpoints of a whole sweep: stacked params, optimizer states, keys, position.

A checkpoint holds the :class:`~prerank_jax.train.loop.TrainState` of every sweep point
(typed PRNG keys are stored as raw key data) plus small JSON metadata: the number of chunks
done, the point names, the input position. The data order needs no extra state: each
epoch's permutation is drawn from the key carried in the state, so restoring the state
restores the order, and a resumed run is bit-identical to an uninterrupted one on CPU.

The per-epoch history is not in the checkpoint, whose size therefore does not grow with
the epoch count (issue 20 §5: rewriting the whole history into every checkpoint made a
checkpoint of a 12,000-epoch run 12 MB, and the resident memory of a long run grow with
it). Each save first writes the history of the chunks since the previous save as one
segment, ``<directory>/history/<chunk>.json`` (``{"first": a, "last": chunk, "chunks":
[...]}``), and then the step; a restore of step c walks the segments back from
``history/<c>.json`` to chunk 1. A segment is written (atomically) before its step, so a
step never exists without its history; segments of chunks that are later retrained are
simply written again. A checkpoint written by an older version, with the history inline in
its metadata, is still restored (and its history is written out as a segment then).

Damage is told apart from other restore errors by a manifest: after Orbax has finished a
step, ``<step>/manifest.sha256.json`` records the SHA-256 of every file in it. A step whose
files no longer match its manifest is *damaged*: it is skipped, and once an older step has
been restored it is moved aside to ``<directory>/damaged-<step>[-n]`` (Orbax only lists
integer step names), so that retraining can save that step again (Orbax's
``CheckpointManager.save(step)`` silently writes nothing for a step at or below the latest
existing one). A restore error of a step whose manifest matches (a structure mismatch, a
bug) is not damage and propagates. A step without a manifest (killed between Orbax's commit
and the manifest, or written by an older version) is damaged if it cannot be restored.

Paths are ``etils.epath`` paths, as Orbax's own: a checkpoint directory may be local or any
URI Orbax writes to (``gs://bucket/runs/x/checkpoints/student``); every file operation here
(manifests, moving a damaged step aside, removing a partial one) goes through ``epath``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from prerank_jax.train.loop import TrainState

log = logging.getLogger(__name__)


MANIFEST = "manifest.sha256.json"
HISTORY = "history"  # <directory>/history/<last chunk>.json, one segment per save


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or no checkpoint of a phase can be read."""


def checkpoint_path(directory: Any) -> epath.Path:
  """``directory`` as an ``epath.Path``: a local path made absolute (as Orbax wants it), a
  URI such as ``gs://bucket/x`` kept as it is (``resolve`` would treat it as relative)."""
  path = epath.Path(directory)
  return path if "://" in os.fspath(directory) else path.resolve()


def _files(directory: epath.Path):
  """Every file under ``directory``, recursively (epath has no ``rglob``: on a bucket it
  would be one listing per pattern match)."""
  for p in directory.iterdir():
    if p.is_dir():
      yield from _files(p)
    else:
      yield p


def _digests(step_dir: epath.Path) -> dict[str, str]:
  """``{relative path: sha256}`` of every file under ``step_dir`` except the manifest."""
  out = {}
  for f in sorted(_files(step_dir)):
    if f.name != MANIFEST:
      digest = hashlib.sha256()
      with f.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
          digest.update(block)
      out[str(f.relative_to(step_dir))] = digest.hexdigest()
  return out


def _is_main() -> bool:
  return jax.process_index() == 0


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _to_disk(state: TrainState) -> TrainState:
  return state._replace(rng=jax.random.key_data(state.rng))


def _from_disk(state: TrainState, like: TrainState) -> TrainState:
  impl = jax.random.key_impl(like.rng)
  return state._replace(rng=jax.random.wrap_key_data(state.rng, impl=impl))


class SweepCheckpointer:
  """Saves and restores one training phase (``teacher`` or ``students``) of a run.

  Args:
    directory: where the phase's checkpoints live, e.g. ``runs/x/checkpoints/students``
      (a local path or a URI Orbax supports, e.g. ``gs://bucket/runs/x/...``).
    max_to_keep: how many recent checkpoints to keep (≥ 2, so a damaged latest one can
      fall back to the previous).
  """

  def __init__(self, directory: Any, *, max_to_keep: int = 3):
    self.directory = checkpoint_path(directory)
    self.max_to_keep = max(2, max_to_keep)
    self._history_through = 0  # the chunks whose history segments are on disk
    self._open()

  def _open(self) -> None:
    try:
      self.manager = ocp.CheckpointManager(
          self.directory,
          options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True,
                                               enable_async_checkpointing=False))
    except OSError as e:
      raise CheckpointError(f"checkpoints: cannot create {self.directory} "
                            f"({e.strerror or e}); check that the run directory is "
                            "writable") from e

  def save(self, chunk: int, state: TrainState, meta: dict[str, Any], *,
           history: Optional[list[dict[str, Any]]] = None) -> None:
    """Saves the state after ``chunk`` chunks; blocks until it is on disk.

    Args:
      chunk: the number of chunks done (the step).
      state: the stacked train state.
      meta: small JSON metadata stored in the step (its size must not grow with the run).
      history: the per-chunk history of every chunk so far, ``history[c - 1]`` =
        ``{metric: [P, epochs per chunk]}`` of chunk c (arrays or lists); the chunks not yet
        on disk are written as the segment ``history/<chunk>.json`` before the step.
        :meth:`restore_latest` returns the whole list as ``meta["history"]``.

    Raises:
      CheckpointError: the write failed (disk full, unwritable directory: the partial
        step is removed and the previous checkpoints stay as they were), or Orbax refused
        the step (it is not newer than the latest existing one).
    """
    if history is not None and len(history) != chunk:
      raise ValueError(f"checkpoints: history has {len(history)} chunks, expected {chunk}")
    try:
      if history is not None and _is_main():
        self._write_history(history, first=self._history_through + 1, last=chunk)
      saved = self.manager.save(chunk, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_to_disk(state)),
          meta=ocp.args.JsonSave({**meta, "chunk": chunk})))
      self.manager.wait_until_finished()
      if saved and _is_main():
        self._write_manifest(chunk)
    except OSError as e:
      self._remove_partial(chunk)
      previous = [s for s in self.manager.all_steps() if s != chunk]
      raise CheckpointError(
          f"checkpoints: could not write {self.directory}/{chunk}: {e.strerror or e}"
          + (f" (errno {errno.errorcode.get(e.errno, e.errno)})" if e.errno else "")
          + f"; the previous checkpoint ({max(previous) if previous else 'none'}) is "
          "intact. Free space or fix the directory, then continue with --resume") from e
    if not saved:
      raise CheckpointError(
          f"checkpoints: Orbax did not save step {chunk} in {self.directory} (the latest "
          f"existing step is {self.manager.latest_step()}); a newer step is in the way")
    if history is not None:
      self._history_through = chunk

  def _write_history(self, history: list[dict[str, Any]], *, first: int, last: int) -> None:
    """Writes chunks ``first..last`` of ``history`` as ``history/<last>.json``
    (atomically: a temporary sibling, then a rename)."""
    folder = self.directory / HISTORY
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [{k: np.asarray(v).tolist() for k, v in h.items()}
              for h in history[first - 1:last]]
    final = folder / f"{last}.json"
    tmp = folder / f".{last}.json.tmp-{os.getpid()}"
    try:
      tmp.write_text(json.dumps({"first": first, "last": last, "chunks": chunks}))
      tmp.replace(final)
    finally:
      tmp.unlink(missing_ok=True)

  def _read_history(self, step: int) -> list[dict[str, Any]]:
    """Chunks 1..``step`` of the history, from the segments ending at ``step``, at the
    chunk before that segment's first, and so on back to chunk 1.

    Raises:
      ValueError: a segment of the chain is missing, unreadable or inconsistent.
    """
    chunks: list[dict[str, Any]] = []
    last = step
    while last > 0:
      path = self.directory / HISTORY / f"{last}.json"
      try:
        segment = json.loads(path.read_text())
        first = int(segment["first"])
        ok = (int(segment["last"]) == last and 1 <= first <= last
              and len(segment["chunks"]) == last - first + 1)
      except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"history segment {path} is missing or unreadable "
                         f"({type(e).__name__})") from e
      if not ok:
        raise ValueError(f"history segment {path} does not hold chunks ..{last}")
      chunks[:0] = segment["chunks"]
      last = first - 1
    return chunks

  def _write_manifest(self, step: int) -> None:
    step_dir = self.directory / str(step)
    final = step_dir / MANIFEST
    tmp = step_dir / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
      tmp.write_text(json.dumps(_digests(step_dir), indent=0, sort_keys=True))
      tmp.replace(final)
    finally:
      tmp.unlink(missing_ok=True)

  def _remove_partial(self, step: int) -> None:
    """Removes what a failed save of ``step`` left: Orbax's temporary directory and a
    step without its manifest. Older steps are not touched."""
    try:  # let every Orbax background writer of the failed step stop before removing it
      self.manager.close()
    except Exception:  # the same failure again; it was reported by the caller
      log.debug("orbax background save of step %d failed", step, exc_info=True)
    # Orbax's writer threads of the other items keep going after one item failed, and
    # close() does not join them; they would re-create files under the removed directory.
    for thread in threading.enumerate():
      if type(thread).__name__ == "_SignalingThread" and thread is not threading.current_thread():
        thread.join(timeout=60)
    if _is_main() and self.directory.exists():
      for p in self.directory.iterdir():
        if p.name.startswith(f"{step}.orbax-checkpoint-tmp") or (
            p.name == str(step) and not (p / MANIFEST).exists()):
          try:
            p.rmtree()
          except OSError:  # best effort, as before: the save error was already reported
            log.debug("could not remove %s", p, exc_info=True)
    self._open()

  def _verified(self, step: int) -> Optional[bool]:
    """``True``: the step's files match its manifest; ``False``: they don't (damaged);
    ``None``: no manifest to check against."""
    manifest = self.directory / str(step) / MANIFEST
    if not manifest.exists():
      return None
    try:
      expected = json.loads(manifest.read_text())
    except (OSError, ValueError):
      return False
    return _digests(self.directory / str(step)) == expected

  def _move_aside(self, steps: list[int]) -> list[epath.Path]:
    moved = []
    if _is_main():
      for step in steps:
        target = self.directory / f"damaged-{step}"
        n = 1
        while target.exists():
          target, n = self.directory / f"damaged-{step}-{n}", n + 1
        (self.directory / str(step)).rename(target)
        moved.append(target)
    _sync(f"checkpoint_move_aside_{self.directory}")
    self.manager.reload()
    return moved

  def restore_latest(self, like: TrainState) -> Optional[tuple[TrainState, dict[str, Any]]]:
    """The newest readable checkpoint, or ``None`` if there is none.

    A damaged checkpoint (files that no longer match its manifest, or that cannot be read
    when it has none) is reported and skipped in favour of the one before it; once one
    has been restored, the damaged newer steps are moved aside to ``damaged-<step>`` so
    that the retrained steps can be saved again.

    Args:
      like: a state with the right structure, shapes, dtypes and shardings (e.g. fresh
        from ``init``); restored arrays take its shardings.

    Raises:
      CheckpointError: there are checkpoints, but none of them is readable (nothing is
        moved; the user decides whether to start over).
      Exception: a restore error of a checkpoint whose files are intact (not damage).
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_disk(like))
    self.manager.reload()
    steps = sorted(self.manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      verified = self._verified(step)
      if verified is False:
        reason = "its files do not match its manifest"
      else:
        try:
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for damaged files
          if verified:  # intact files: not damage, e.g. a structure mismatch
            raise
          reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        else:
          meta = dict(restored.meta)
          reason = self._attach_history(step, meta)
          if reason is None:
            moved = self._move_aside(damaged) if damaged else []
            if moved:
              print(f"warning: moved the damaged checkpoint(s) aside to "
                    f"{', '.join(map(str, moved))}; continuing from step {step}")
            self._history_through = step
            return _from_disk(restored.state, like), meta
      log.warning("checkpoint %s/%d is unreadable (%s); falling back to the previous",
                  self.directory, step, reason)
      print(f"warning: checkpoint {self.directory}/{step} is unreadable ({reason}); "
            "falling back to the previous one")
      damaged.append(step)
    if damaged:
      raise CheckpointError(
          f"checkpoints: every checkpoint in {self.directory} is unreadable (steps "
          f"{sorted(damaged)}); nothing was moved or deleted. Start over with --overwrite "
          "(or another --config.name), or restore the files")
    return None

  def _attach_history(self, step: int, meta: dict[str, Any]) -> Optional[str]:
    """Puts chunks 1..``step`` of the history into ``meta["history"]``; returns why it
    cannot (the step then counts as unreadable), or ``None``.

    A step of an older version holds its history inline: it is kept, and written out as
    the segment ``history/<step>.json`` so that the next segments chain onto it."""
    if "history" in meta:
      if meta["history"] and _is_main():
        self._write_history(meta["history"], first=1, last=step)
      return None
    try:
      meta["history"] = self._read_history(step)
    except ValueError as e:
      return str(e)
    return None

  def close(self) -> None:
    self.manager.close()
