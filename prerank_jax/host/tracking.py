"""W&B tracking: one W&B run per sweep point, logged on the host between chunks.

Runs are grouped by the sweep (``config.name``), named by their hyperparameters and carry
the full resolved config plus the point's hyperparameters. Per-epoch training curves are
logged with ``step=epoch``; the final evaluation metrics go into each run's summary.
``offline`` (the default) needs no network; upload later with ``wandb sync <run
dir>/wandb/offline-run-*``. The local files in the run directory (``history.json``,
``results.csv``) hold the same numbers and are the source of truth for reports.

Resume: each point's W&B run has a stable id (from the run directory's random ``run_id``,
the phase, the point's index and name) and is opened with ``resume="allow"``, so a
resumed process continues the same runs instead of creating new ones (an ``--overwrite``
makes a new run directory, hence new ids). ``<run dir>/wandb/logged-<phase>.json`` records
how many epochs have been logged, so the epochs a killed process logged are not logged
twice, and those it trained and checkpointed but had not logged are logged on resume.
Because a resume is bit-identical, skipping a re-trained epoch loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from prerank_jax.host.rundir import write_text_atomic

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
    self._progress = Path(run_dir) / "wandb" / f"logged-{phase or job_type}.json"
    self._logged = 0
    if mode == "disabled":
      return
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb  # imported lazily: it is slow to import and unused when disabled

    if self._progress.exists():
      saved = json.loads(self._progress.read_text())
      if saved.get("ids") == self.ids:
        self._logged = int(saved["epochs"])
    self._progress.parent.mkdir(parents=True, exist_ok=True)
    for (name, hparams), run_id_ in zip(points, self.ids):
      self.runs.append(wandb.init(
          mode=mode, project=project, group=group, job_type=job_type, name=name,
          id=run_id_, resume="allow", dir=str(run_dir), reinit="create_new",
          # The point's hyperparameters at the top level too, so W&B's parallel
          # coordinates and tables can use them without unpacking "point".
          config={**dict(config), **{f"hp_{k}": float(v) for k, v in hparams.items()},
                  "point": dict(hparams), "point_name": name, "job_type": job_type}))

  def log_epochs(self, stats: Mapping[str, np.ndarray], *, first_epoch: int) -> None:
    """Logs per-epoch ``stats`` (``{name: [P, epochs]}``) for every point's run.

    Epochs before the number already logged (by this or an earlier, killed process) are
    skipped, so every epoch is logged once.
    """
    if not self.runs:
      return
    num = next(iter(stats.values())).shape[1]
    todo = range(max(0, self._logged - first_epoch), num)
    if not todo:
      return
    for i, run in enumerate(self.runs):
      for e in todo:
        run.log({k: float(v[i, e]) for k, v in stats.items()}, step=first_epoch + e)
    self._logged = first_epoch + num
    write_text_atomic(self._progress, json.dumps({"ids": self.ids, "epochs": self._logged}))

  def finish(self, summaries: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Writes each point's final metrics into its run's summary and closes the runs."""
    for i, run in enumerate(self.runs):
      if summaries is not None:
        run.summary.update(dict(summaries[i]))
      run.finish()
    self.runs = []


def run_ids(run_id: str, phase: str, names: Sequence[str]) -> list[str]:
  """Stable W&B run ids, one per sweep point: ``<run_id>-<hash of phase, index, name>``.

  The same run directory, phase and points give the same ids in every process, so a
  resumed run continues its W&B runs; ids differ between points and phases.
  """
  return [f"{run_id or 'run'}-" + hashlib.sha256(
      json.dumps([phase, i, name]).encode()).hexdigest()[:12] for i, name in enumerate(names)]
