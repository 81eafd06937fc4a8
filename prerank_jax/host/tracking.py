"""W&B tracking: one W&B run per sweep point, logged on the host between chunks.

Runs are grouped by the sweep (``config.name``), named by their hyperparameters and carry
the full resolved config plus the point's hyperparameters. Per-epoch training curves are
logged with ``step=epoch``; the final evaluation metrics go into each run's summary.
``offline`` (the default) needs no network; upload later with ``wandb sync <run
dir>/wandb/offline-run-*``. The local files in the run directory (``history.json``,
``results.csv``) hold the same numbers and are the source of truth for reports.
"""

from __future__ import annotations

import os
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
  """

  def __init__(self, mode: str, *, project: str, group: str, job_type: str, run_dir: Path,
               config: Mapping[str, Any], points: Sequence[tuple[str, Mapping[str, float]]]):
    if mode not in MODES:
      raise ValueError(f"wandb.mode: must be one of {list(MODES)}, got {mode!r}")
    self.runs = []
    if mode == "disabled":
      return
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb  # imported lazily: it is slow to import and unused when disabled

    for name, hparams in points:
      self.runs.append(wandb.init(
          mode=mode, project=project, group=group, job_type=job_type, name=name,
          dir=str(run_dir), reinit="create_new",
          config={**dict(config), "point": dict(hparams), "job_type": job_type}))

  def log_epochs(self, stats: Mapping[str, np.ndarray], *, first_epoch: int) -> None:
    """Logs per-epoch ``stats`` (``{name: [P, epochs]}``) for every point's run."""
    for i, run in enumerate(self.runs):
      for e in range(next(iter(stats.values())).shape[1]):
        run.log({k: float(v[i, e]) for k, v in stats.items()}, step=first_epoch + e)

  def finish(self, summaries: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Writes each point's final metrics into its run's summary and closes the runs."""
    for i, run in enumerate(self.runs):
      if summaries is not None:
        run.summary.update(dict(summaries[i]))
      run.finish()
    self.runs = []
