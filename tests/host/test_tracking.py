"""W&B offline runs, one per sweep point, hold the same numbers as the local results."""

import csv
import json

import numpy as np
import pytest

from prerank_jax.host.runner import run
from tests.host.wandb_records import history_and_summary


@pytest.mark.slow
def test_offline_runs_match_local_results(smoke_config):
  smoke_config.wandb.mode = "offline"
  smoke_config.sweep.temperature = (1.0, 3.0)
  smoke_config.sweep.alpha = (1.0,)
  result = run(smoke_config)
  files = sorted((result.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
  runs = [history_and_summary(f) for f in files]
  students = {info["name"]: (rows, summary) for rows, summary, info in runs
              if info["job_type"] == "student"}
  teachers = [info for _, _, info in runs if info["job_type"] == "teacher"]
  assert len(teachers) == 1
  assert sorted(students) == ["gt-only", "temperature=1 alpha=1 learning_rate=0.003",
                              "temperature=3 alpha=1 learning_rate=0.003"]
  assert all(info["group"] == smoke_config.name for _, _, info in runs)
  local = json.loads((result.run_dir / "history.json").read_text())["students"]
  with open(result.run_dir / "results.csv") as f:
    table = {r["model"]: r for r in csv.DictReader(f)}
  # The process's requirements are saved once per phase, by its first point's run.
  with_requirements = {info["job_type"]: [] for _, _, info in runs}
  for f, (_, _, info) in zip(files, runs):
    if (f.parent / "files" / "requirements.txt").is_file():
      with_requirements[info["job_type"]].append(info["name"])
  assert with_requirements == {"teacher": [teachers[0]["name"]], "student":
                               ["temperature=1 alpha=1 learning_rate=0.003"]}
  for name, (rows, summary) in students.items():
    logged = [r["loss"] for r in rows if "loss" in r]
    np.testing.assert_allclose(logged, local[name]["loss"], rtol=1e-6)
    assert [r["_step"] for r in rows] == list(range(len(rows)))
    for metric in ("ndcg@10", "R@(10,25%)"):
      assert summary[metric] == pytest.approx(float(table[f"student {name}"][metric]), rel=1e-6)


def _finished_chunks(phase_dir) -> int:
  if not phase_dir.exists():
    return 0
  return max((int(p.name) for p in phase_dir.iterdir()
              if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()), default=0)


@pytest.mark.slow
def test_kill_and_resume_continue_each_points_wandb_run(tmp_path):
  """SIGKILL after student chunk 2 of 4, then --resume: one W&B run per point (by id),
  holding every epoch exactly once, with the same numbers as history.json."""
  import os
  import signal
  import subprocess
  import sys
  import time
  from pathlib import Path

  root = Path(__file__).resolve().parents[2]
  cmd = [sys.executable, "-m", "prerank_jax.cli", "quickstart",
         "--config=configs/quickstart.py:smoke", f"--config.workdir={tmp_path}",
         "--config.name=w", "--config.progress=False", "--wandb=offline",
         "--config.checkpoint_every=1", "--config.sweep.temperature=(1.,3.)",
         "--config.sweep.alpha=(1.,)"]
  # Without WANDB_SERVICE: an earlier in-process test's wandb-core would otherwise be
  # shared by both children and still hold the killed child's open runs.
  env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"},
         "PYTHONUNBUFFERED": "1"}
  run_dir = tmp_path / "w"
  proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while _finished_chunks(run_dir / "checkpoints" / "student") < 2 and proc.poll() is None:
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (run_dir / "results.csv").exists(), "killed too late to test resume"
  resumed = subprocess.run(cmd + ["--resume"], cwd=root, env=env, capture_output=True,
                           text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]

  files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
  by_id: dict[str, list] = {}
  for f in files:
    by_id.setdefault(f.stem.removeprefix("run-"), []).append(history_and_summary(f))
  assert len(files) > len(by_id), "no W&B run was resumed"
  # W&B buffers in wandb-core: the killed process's file may hold only part of its records.
  info = {i: next(part[2] for part in parts if part[2]) for i, parts in by_id.items()}
  students = {info[i]["name"]: parts for i, parts in by_id.items()
              if info[i]["job_type"] == "student"}
  assert sorted(students) == ["gt-only", "temperature=1 alpha=1 learning_rate=0.003",
                              "temperature=3 alpha=1 learning_rate=0.003"]
  assert sum(x["job_type"] == "teacher" for x in info.values()) == 1
  local = json.loads((run_dir / "history.json").read_text())["students"]
  with open(run_dir / "results.csv") as f:
    table = {r["model"]: r for r in csv.DictReader(f)}
  for name, parts in students.items():
    rows = sorted((r for rows, _, _ in parts for r in rows if "loss" in r),
                  key=lambda r: r["_step"])
    assert [r["_step"] for r in rows] == list(range(4)), name  # every epoch once
    np.testing.assert_allclose([r["loss"] for r in rows], local[name]["loss"], rtol=1e-6)
    summary = parts[-1][1]
    assert summary["ndcg@10"] == pytest.approx(float(table[f"student {name}"]["ndcg@10"]),
                                               rel=1e-6)


def test_an_error_on_the_wandb_thread_is_raised_by_the_caller(tmp_path, monkeypatch):
  """W&B runs are opened and logged on a host thread; a failure there is not lost: the
  next call on the tracker (here ``finish``) raises it, and the tracker is closed."""
  import wandb

  from prerank_jax.host.tracking import Tracker

  def refuse(**kwargs):
    raise RuntimeError(f"no W&B for {kwargs['name']}")

  monkeypatch.setattr(wandb, "init", refuse)
  tracker = Tracker("offline", project="p", group="g", job_type="student", run_dir=tmp_path,
                    config={}, points=[("a", {"alpha": 0.5})], run_id="r")
  with pytest.raises(RuntimeError, match="no W&B for a"):
    tracker.log_epochs({"loss": np.zeros((1, 2))}, first_epoch=0)
    tracker.finish()
  tracker.finish()  # closed: a second finish is a no-op


def test_the_wandb_thread_logs_in_order_while_the_caller_goes_on(tmp_path, monkeypatch):
  """Queued logs reach each point's run in call order, all before ``finish`` returns."""
  import wandb

  from prerank_jax.host.tracking import Tracker

  class Run:
    def __init__(self):
      self.steps, self.summary, self.finished = [], {}, False

    def log(self, values, step):
      self.steps.append((step, values["loss"]))

    def finish(self):
      self.finished = True

  runs = []
  monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(Run()) or runs[-1])
  tracker = Tracker("online", project="p", group="g", job_type="student", run_dir=tmp_path,
                    config={}, points=[("a", {}), ("b", {})], run_id="r")
  for chunk in range(3):
    tracker.log_epochs({"loss": np.array([[chunk], [10 + chunk]], float)}, first_epoch=chunk)
  tracker.finish([{"m": 1}, {"m": 2}])
  assert [r.steps for r in runs] == [[(0, 0.), (1, 1.), (2, 2.)], [(0, 10.), (1, 11.), (2, 12.)]]
  assert [r.summary for r in runs] == [{"m": 1}, {"m": 2}] and all(r.finished for r in runs)
