"""W&B tracking: one W&B run per sweep point, logged on the host between chunks.

Runs are grouped by the sweep (``config.name``), named by their hyperparameters and carry
the full resolved config plus the point's hyperparameters. Per-epoch training curves are
logged with ``step=epoch``; the final evaluation metrics go into each run's summary.
``offline`` (the default) needs no network; upload later with ``wandb sync <run
dir>/wandb/offline-run-*``. The local files in the run directory (``history.json``,
``results.csv``) hold the same numbers and are the source of truth for reports.

All W&B calls run on one host thread per phase, in order, while the compiled program
trains (opening a run costs about 0.2 s, with the ``wandb-core`` process); ``finish``
waits for them and raises any error they met.

The first point's run of each phase holds the process's ``requirements.txt`` and system
metrics; the other points' runs skip them (:func:`run_settings`).

Resume: each point's W&B run has a stable id (from the run directory's random ``run_id``,
the phase, the point's index and name) and is opened with ``resume="allow"``, so a
resumed process continues the same runs instead of creating new ones (an ``--overwrite``
makes a new run directory, hence new ids). W&B buffers records in its ``wandb-core``
process, so a killed process loses an unknown tail of what it logged. On resume each
point's run therefore logs exactly the epochs W&B does not hold yet: offline, the steps
found in the run's earlier ``offline-run-*/run-<id>.wandb`` files (complete records only);
online, the steps before the resumed run's ``starting_step``. Because a resume is
bit-identical, skipping a re-trained epoch loses nothing.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

MODES = ("offline", "online", "disabled")


class Tracker:
  """W&B runs for the points of one training phase (a no-op when ``mode="disabled"``).

  Args:
    mode: ``"offline"``, ``"online"`` or ``"disabled"``.
    project: the W&B project.
    group: the sweep's name; all its points share it.
    job_type: ``"teacher"`` or ``"student"``.
    run_dir: the run directory; W&B files go to ``<run_dir>/wandb``.
    config: the resolved config as a plain dict.
    points: ``[(name, hparams)]`` of the sweep points, in sweep order.
    phase: the training phase's name in the run directory (``"student"``,
      ``"student-1"``, ``"teacher"``); part of the run ids.
    run_id: the run directory's random id (:func:`prerank_jax.host.rundir.run_id`).
  """

  def __init__(self, mode: str, *, project: str, group: str, job_type: str, run_dir: Path,
               config: Mapping[str, Any], points: Sequence[tuple[str, Mapping[str, float]]],
               phase: str = "", run_id: str = ""):
    if mode not in MODES:
      raise ValueError(f"wandb.mode: must be one of {list(MODES)}, got {mode!r}")
    self.runs = []
    self.ids = run_ids(run_id, phase or job_type, [name for name, _ in points])
    self._logged: list[set[int]] = []  # per point: the steps W&B already holds
    self._worker: concurrent.futures.ThreadPoolExecutor | None = None
    self._pending: list[concurrent.futures.Future] = []
    if mode == "disabled":
      return
    os.environ.setdefault("WANDB_SILENT", "true")
    # One host thread does all of W&B's work, in order: opening a run costs about 0.2 s
    # and a sweep opens one per point, so the runs are opened (and the epochs logged)
    # while the compiled program trains. A failed task's error is raised by the next
    # call (at the latest ``finish``); the tasks queued after it still run.
    self._worker = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="prerank-wandb")
    self._submit(self._open, mode, project=project, group=group, job_type=job_type,
                 run_dir=Path(run_dir), config=dict(config), points=list(points))

  def _submit(self, fn, *args, **kwargs) -> None:
    """Queues ``fn`` on the W&B thread; an earlier task's error is raised here."""
    self._raise_failed()
    self._pending.append(self._worker.submit(fn, *args, **kwargs))

  def _raise_failed(self) -> None:
    for future in [f for f in self._pending if f.done()]:
      self._pending.remove(future)
      future.result()  # re-raises the W&B thread's exception in the caller

  def _open(self, mode: str, *, project: str, group: str, job_type: str, run_dir: Path,
            config: dict, points: list) -> None:
    import wandb  # imported lazily: it is slow to import and unused when disabled

    for i, ((name, hparams), run_id_) in enumerate(zip(points, self.ids)):
      self.runs.append(wandb.init(
          mode=mode, project=project, group=group, job_type=job_type, name=name,
          id=run_id_, resume="allow", dir=str(run_dir), reinit="create_new",
          settings=run_settings(wandb, first=i == 0),
          # The point's hyperparameters at the top level too, so W&B's parallel
          # coordinates and tables can use them without unpacking "point".
          config={**config, **{f"hp_{k}": float(v) for k, v in hparams.items()},
                  "point": dict(hparams), "point_name": name, "job_type": job_type}))
      if mode == "offline":
        self._logged.append(offline_steps(run_dir / "wandb", run_id_))
      else:
        self._logged.append(set(range(int(getattr(self.runs[-1], "starting_step", 0) or 0))))

  def log_epochs(self, stats: Mapping[str, np.ndarray], *, first_epoch: int) -> None:
    """Logs per-epoch ``stats`` (``{name: [P, epochs]}``) for every point's run.

    Epochs W&B already holds (logged by this or an earlier, killed process) are skipped,
    so every epoch is logged once. Queued on the W&B thread; returns at once.
    """
    if self._worker is None:
      return
    self._submit(self._log, {k: np.array(v) for k, v in stats.items()}, first_epoch)

  def _log(self, stats: Mapping[str, np.ndarray], first_epoch: int) -> None:
    num = next(iter(stats.values())).shape[1]
    for i, run in enumerate(self.runs):
      for e in range(num):
        if first_epoch + e not in self._logged[i]:
          run.log({k: float(v[i, e]) for k, v in stats.items()}, step=first_epoch + e)
          self._logged[i].add(first_epoch + e)

  def finish(self, summaries: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Writes each point's final metrics into its run's summary, closes the runs and
    waits for the W&B thread; an error of any queued task is raised here."""
    if self._worker is None:
      return
    self._submit(self._finish, summaries)
    worker, pending = self._worker, self._pending
    self._worker, self._pending = None, []
    try:
      for future in pending:
        future.result()
    finally:
      worker.shutdown(wait=True)

  def _finish(self, summaries: Sequence[Mapping[str, Any]] | None) -> None:
    for i, run in enumerate(self.runs):
      if summaries is not None:
        run.summary.update(dict(summaries[i]))
      run.finish()
    self.runs = []


def run_settings(wandb, *, first: bool):
  """W&B settings of one point's run: the process's facts are recorded once per phase.

  All points of a phase run in one process, so its Python packages
  (``requirements.txt``) and system metrics (CPU, memory) are the same for every point.
  The first point's run records them; the others skip them. Saving the requirements scans
  every installed package's metadata (about 0.45 s a run on the 2-core CPU, 4.5 s of a
  10-point sweep), and each system monitor is a sampling thread per run.
  """
  if first:
    return wandb.Settings()
  return wandb.Settings(x_save_requirements=False, x_disable_stats=True)


def run_ids(run_id: str, phase: str, names: Sequence[str]) -> list[str]:
  """Stable W&B run ids, one per sweep point: ``<run_id>-<hash of phase, index, name>``.

  The same run directory, phase and points give the same ids in every process, so a
  resumed run continues its W&B runs; ids differ between points and phases.
  """
  return [f"{run_id or 'run'}-" + hashlib.sha256(
      json.dumps([phase, i, name]).encode()).hexdigest()[:12] for i, name in enumerate(names)]


_BLOCK, _HEADER = 32 * 1024, 7  # the LevelDB-log framing of .wandb files


def offline_steps(wandb_dir: Path, run_id: str) -> set[int]:
  """The history steps held by the complete records of a run's offline files.

  A ``.wandb`` file is a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte
  header ``<IHB`` (crc, length, type: 1 full, 2 first, 3 middle, 4 last) whose payloads
  join into serialized ``Record`` protobufs. A killed process leaves a cut tail; an
  incomplete or unparsable record ends the file's reading.
  """
  from wandb.proto import wandb_internal_pb2

  steps: set[int] = set()
  for path in Path(wandb_dir).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"):
    data = path.read_bytes()
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
      if _BLOCK - pos % _BLOCK < _HEADER:  # block trailer
        pos += _BLOCK - pos % _BLOCK
        continue
      _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
      payload = data[pos + _HEADER:pos + _HEADER + length]
      pos += _HEADER + length
      if len(payload) < length or kind not in (0, 1, 2, 3, 4):
        break
      if kind == 0:
        continue
      pending = payload if kind in (1, 2) else pending + payload
      if kind in (1, 4):
        record = wandb_internal_pb2.Record()
        try:
          record.ParseFromString(pending)
        except Exception:  # a cut record: nothing after it is complete
          break
        if record.WhichOneof("record_type") == "history":
          steps.update(int(json.loads(item.value_json)) for item in record.history.item
                       if (item.key or "/".join(item.nested_key)) == "_step")
  return steps
