"""A real smoke run made in a tmp dir, read back through prerank_jax.analysis and reported."""

import csv
import json

import numpy as np
import pytest

from prerank_jax.analysis import load_history, load_runs, mean_ci, paired_diff

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  from prerank_jax.config_files import repo_config
  from prerank_jax.host.runner import run

  config = repo_config("quickstart", "smoke")
  config.workdir = str(tmp_path_factory.mktemp("runs"))
  config.name = "grid"
  config.progress, config.wandb.mode = False, "disabled"
  config.sweep.temperature, config.sweep.alpha = (1.0, 4.0), (0.5, 1.0)
  config.sweep.seeds = (0, 1)  # student replicates inside the run
  return run(config).run_dir


@pytest.mark.slow
def test_smoke_run_through_the_analysis_floor_and_the_report(smoke_run, capsys):
  with (smoke_run / "results.csv").open(newline="") as f:
    rows = list(csv.DictReader(f))
  config = json.loads((smoke_run / "config.json").read_text())
  frame = load_runs(smoke_run)
  assert len(frame) == len(rows)
  assert list(frame["results_model"]) == [r["model"] for r in rows]
  for column in ("recall@25%", "R@(10,25%)"):
    np.testing.assert_allclose(frame[column], [float(r[column]) for r in rows], rtol=1e-12)
  assert (frame["seed"] == config["seed"]).all()
  assert (frame["student.loss.kd"] == config["student"]["loss"]["kd"]).all()
  students = frame[frame["role"] == "student"]
  # 2 × 2 grid + gt-only, each with replicates 0 and 1, under one name per point.
  assert len(students) == 10 and students.groupby("model").size().eq(2).all()
  assert sorted(students["replicate_seed"].unique()) == [0, 1]
  assert set(frame.loc[frame["role"] != "student", "model"]) == {
      "teacher", "oracle (truth)", "random"}

  stats = mean_ci(frame, "recall@25%").set_index("model")
  gt = students[students["point"] == "gt-only"]["recall@25%"].to_numpy()
  assert stats.loc["student gt-only", "recall@25%"] == pytest.approx(gt.mean())
  _, summary = paired_diff(frame, "recall@25%", baseline="student gt-only")
  assert set(summary["model"]) == set(students["model"]) - {"student gt-only"}
  assert (summary["n"] == 2).all()

  history = load_history(smoke_run)
  saved = json.loads((smoke_run / "history.json").read_text())["students"]
  first = rows[0]["model"].removeprefix("student ")
  curve = history[history["results_model"] == rows[0]["model"]]
  np.testing.assert_allclose(curve["loss"], saved[first]["loss"])
  assert list(curve["epoch"]) == list(range(1, len(saved[first]["loss"]) + 1))

  from prerank_jax.cli import main

  assert main(["prerank-jax", "report", str(smoke_run)]) == 0
  out = capsys.readouterr().out
  # The point is chosen on validation (pooled over the replicates), its test value reported.
  from prerank_jax.analysis import best_on_valid

  best = best_on_valid(frame, "ndcg@10").iloc[0]
  assert f"**{best['model']}**, valid/ndcg@10 {best['valid/ndcg@10']:.4f}" in out
  assert f"test ndcg@10 {best['ndcg@10']:.4f}" in out
  for name in ("pareto.png", "heatmap_R_10_25.png", "heatmap_recall_25.png",
               "keep_ratio.png", "learning_curves.png"):
    assert (smoke_run / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert name in out


@pytest.mark.slow
def test_report_out_writes_the_figures_into_another_directory(smoke_run, tmp_path, capsys):
  from prerank_jax.cli import main

  out_dir = tmp_path / "figures" / "new"  # made by the command
  before = sorted(p.name for p in smoke_run.iterdir())
  assert main(["prerank-jax", "report", str(smoke_run), "--out", str(out_dir)]) == 0
  assert "student gt-only" in capsys.readouterr().out  # the results table is printed
  for name in ("pareto.png", "pareto.md", "keep_ratio.png", "learning_curves.png"):
    assert (out_dir / name).exists(), name
  assert (out_dir / "pareto.png").read_bytes()[:8] == PNG_SIGNATURE
  # `--out=DIR` works too, and a missing DIR after --out is refused.
  assert main(["prerank-jax", "report", f"--out={tmp_path / 'b'}", str(smoke_run)]) == 0
  assert (tmp_path / "b" / "keep_ratio.png").exists()
  assert main(["prerank-jax", "report", str(smoke_run), "--out"]) == 2
  # The run directory itself gains nothing it did not have (the earlier test may have
  # written its figures there already; this one writes elsewhere).
  assert sorted(p.name for p in smoke_run.iterdir()) == before
