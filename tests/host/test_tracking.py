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
  assert sorted(students) == ["T=1 α=1 lr=0.003", "T=3 α=1 lr=0.003", "gt-only"]
  assert all(info["group"] == smoke_config.name for _, _, info in runs)
  local = json.loads((result.run_dir / "history.json").read_text())["students"]
  with open(result.run_dir / "results.csv") as f:
    table = {r["model"]: r for r in csv.DictReader(f)}
  for name, (rows, summary) in students.items():
    logged = [r["loss"] for r in rows if "loss" in r]
    np.testing.assert_allclose(logged, local[name]["loss"], rtol=1e-6)
    assert [r["_step"] for r in rows] == list(range(len(rows)))
    for metric in ("ndcg@10", "R@(10,25%)"):
      assert summary[metric] == pytest.approx(float(table[f"student {name}"][metric]), rel=1e-6)
