"""Runs the CLI with a SIGKILL planted at a chosen moment (see test_kill.py).

``python -m tests.host.kill_child <prerank-jax args...>`` with
``PRERANK_KILL_AT=<role>:<chunk>:<moment>[:<seconds>]`` kills this process with SIGKILL when
the ``<role>`` phase (``teacher`` or ``student``) reaches ``<moment>`` of its checkpoint
after ``<chunk>`` chunks:

- ``before_save``: the chunk is trained, nothing of its checkpoint is written;
- ``in_write``: Orbax has written every file of the step into its temporary directory
  but not yet renamed it to the step (the commit);
- ``before_manifest``: Orbax has committed the step, our manifest is not written yet;
- ``after_save``: the checkpoint is complete;
- ``timer``: ``<seconds>`` after ``after_save``, wherever the process then is (training the
  next chunk, writing its checkpoint, restoring, evaluating, writing the results); if the
  run finishes first, the process exits normally (the timer is a daemon thread), so a kill
  never lands on a finished run.

The hooks wrap functions from the outside (nothing in the package knows about them), so
the child runs the package's code unchanged up to the moment of the kill.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

MOMENTS = ("before_save", "in_write", "before_manifest", "after_save", "timer")


def _die() -> None:
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def install(spec: str) -> None:
  """Plants the kill described by ``spec`` (``role:chunk:moment[:seconds]``)."""
  role, chunk, moment, *rest = spec.split(":")
  chunk = int(chunk)
  if moment not in MOMENTS:
    raise ValueError(f"PRERANK_KILL_AT: moment {moment!r} not in {MOMENTS}")
  from orbax.checkpoint._src.path import async_path

  from prerank_jax.host import checkpoint

  def ours(directory: Path, step: int) -> bool:
    return Path(directory).name == role and step == chunk

  save = checkpoint.SweepCheckpointer.save

  def save_and_maybe_die(self, c, state, meta, **kwargs):
    if ours(self.directory, c) and moment == "before_save":
      _die()
    save(self, c, state, meta, **kwargs)
    if ours(self.directory, c):
      if moment == "after_save":
        _die()
      if moment == "timer":
        # A daemon: a timer still pending when ``main`` returns dies with the process
        # instead of keeping it alive to "kill" a finished run (which would exit −9 as if
        # the kill had landed mid-run); such a run exits 0 and test_kill.py fails on it.
        timer = threading.Timer(float(rest[0]), _die)
        timer.daemon = True
        timer.start()

  write_manifest = checkpoint.SweepCheckpointer._write_manifest

  def write_manifest_or_die(self, step):
    if ours(self.directory, step) and moment == "before_manifest":
      _die()
    write_manifest(self, step)

  rename = async_path.rename

  async def rename_or_die(src, dst):
    # Orbax commits a step by renaming <step>.orbax-checkpoint-tmp* to <step>.
    if (moment == "in_write" and ".orbax-checkpoint-tmp" in Path(src).name
        and ours(Path(dst).parent, int(Path(dst).name) if Path(dst).name.isdigit() else -1)):
      _die()
    return await rename(src, dst)

  checkpoint.SweepCheckpointer.save = save_and_maybe_die
  checkpoint.SweepCheckpointer._write_manifest = write_manifest_or_die
  async_path.rename = rename_or_die


if __name__ == "__main__":
  if os.environ.get("PRERANK_KILL_AT"):
    install(os.environ["PRERANK_KILL_AT"])
  from prerank_jax.cli import main
  sys.exit(main(["prerank-jax", *sys.argv[1:]]))
