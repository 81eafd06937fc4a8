"""End to end on the smoke config: students learn, files appear, bad input writes nothing."""

import json
import subprocess
import sys

import numpy as np
import pytest

from prerank_jax.config import ConfigError
from prerank_jax.host.runner import run


@pytest.mark.slow
def test_smoke_run_learns_and_writes_the_run_dir(smoke_config):
  smoke_config.student.num_epochs = 6
  result = run(smoke_config)
  rows = {r["model"]: r for r in result.rows}
  k = smoke_config.eval.k
  students = [r for r in result.rows if r["model"].startswith("student")]
  assert len(students) == 3 * 3 + 1 and all(r["status"] == "ok" for r in students)
  distilled = [r for r in students if r["alpha"] > 0]
  # Learning happened: every distilled student agrees with the teacher better than random
  # scores do, and the teacher-consistency recall rose over training.
  for r in distilled:
    assert r[f"R@({k},50%)"] > rows["random"][f"R@({k},50%)"]
  monitored = f"valid/R@({k},{100 * smoke_config.eval.monitor_keep_ratio:g}%)"
  for name, hist in result.history["students"].items():
    if not name.startswith("gt-only"):
      curve = hist[monitored]
      assert curve[-1] > curve[0], name
    # History metric names are results names: each curve's last epoch is the trained
    # point's value in its results column (the same metric of the same parameters).
    assert set(hist) - {"loss"} <= set(result.columns), sorted(hist)
    assert {f"valid/ndcg@{k}", f"valid/ndcg@{k}_logs", monitored} <= set(hist)
    for metric in set(hist) - {"loss"}:
      assert hist[metric][-1] == pytest.approx(rows[f"student {name}"][metric], abs=1e-4), (
          name, metric)
  assert set(result.history["teacher"]) - {"loss"} <= set(result.columns)
  assert result.history["teacher"]["loss"][0][-1] < result.history["teacher"]["loss"][0][0]
  assert rows["oracle (truth)"][f"ndcg@{k}"] == pytest.approx(1.0)
  costs = result.history["costs"]
  assert costs["teacher_flops_per_candidate"] >= 10 * costs["student_flops_per_candidate"]
  files = sorted(p.name for p in result.run_dir.iterdir())
  assert [f for f in files if not f.startswith(".")] == [
      "checkpoints", "config.json", "history.json", "results.csv", "results.md",
      "run_id", "scores.parquet", "trec"]
  assert json.loads((result.run_dir / "config.json").read_text())["sweep"]["alpha"] == [0.5, 0.9, 1.0]
  assert "teacher" in (result.run_dir / "results.md").read_text()
  assert all(np.isfinite(r[f"ndcg@{k}"]) for r in result.rows)
  # A second run with the same name is refused and leaves the first intact.
  before = (result.run_dir / "results.csv").read_text()
  with pytest.raises(FileExistsError, match="exists"):
    run(smoke_config)
  assert (result.run_dir / "results.csv").read_text() == before


@pytest.mark.parametrize("path, value", [
    ("sweep.temperature", (0.0,)), ("sweep.alpha", (2.0,)), ("eval.keep_ratios", (0.0,)),
    ("eval.k", 0), ("eval.gain", "log"), ("student.loss.kd", "nope"),
])
def test_bad_config_writes_nothing(smoke_config, path, value):
  *parents, leaf = path.split(".")
  node = smoke_config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
    run(smoke_config)
  assert not (smoke_config.workdir and __import__("pathlib").Path(smoke_config.workdir).exists())


@pytest.mark.slow
def test_cli_quickstart_smoke_and_bad_override(tmp_path):
  base = [sys.executable, "-m", "prerank_jax.cli", "quickstart",
          "--config=configs/quickstart.py:smoke", f"--config.workdir={tmp_path}",
          "--config.progress=False", "--config.sweep.temperature=(1.,3.)",
          "--config.sweep.alpha=(0.5,)"]
  bad = subprocess.run(base + ["--config.sweep.alpha=(1.5,)"], capture_output=True, text=True)
  assert bad.returncode == 2 and "sweep.alpha: must be in [0, 1]" in bad.stderr
  typo = subprocess.run(base + ["--config.sweep.temprature=(1.,)"], capture_output=True, text=True)
  assert typo.returncode == 2
  assert not any(tmp_path.iterdir())
  no_file = subprocess.run(base[:4] + ["--config.sweep.temprature=(1.,)"], capture_output=True,
                           text=True)
  assert no_file.returncode == 2 and "temperature" in no_file.stderr
  ok = subprocess.run(base + ["--wandb=disabled"], capture_output=True, text=True)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "student temperature=3 alpha=0.5" in ok.stdout and "gt-only" in ok.stdout
  assert "teacher" in ok.stdout
  assert (tmp_path / "quickstart" / "results.csv").exists()
  assert not (tmp_path / "quickstart" / "wandb").exists()  # --wandb=disabled took effect
  again = subprocess.run(base + ["--wandb=disabled"], capture_output=True, text=True)
  assert again.returncode == 2 and "overwrite" in again.stderr  # an existing run is kept
  again = subprocess.run(base + ["--wandb=disabled", "--overwrite"], capture_output=True,
                         text=True)
  assert again.returncode == 0, again.stderr[-2000:]


def test_cli_shorthands():
  from prerank_jax.cli import expand_shorthands
  assert expand_shorthands(["--resume", "--wandb=online", "--overwrite", "--config.x=1"]) == [
      "--config.resume=True", "--config.wandb.mode=online", "--config.overwrite=True",
      "--config.x=1"]


@pytest.mark.slow
def test_a_diverging_point_is_marked_and_the_rest_are_reported(smoke_config):
  smoke_config.sweep.temperature = (2.0,)
  smoke_config.sweep.alpha = (0.9,)
  smoke_config.sweep.learning_rate = (3e-3, 1e30)
  smoke_config.sweep.gt_only_baseline = False
  result = run(smoke_config)
  status = {r["model"]: r["status"] for r in result.rows}
  assert status["student temperature=2 alpha=0.9 learning_rate=0.003"] == "ok"
  assert status["student temperature=2 alpha=0.9 learning_rate=1e+30"] == "diverged"
  assert all(name.isascii() for name in status)  # machine-readable names are ASCII


@pytest.mark.slow
def test_structural_programs_share_the_teacher_and_report_together(smoke_config, capsys):
  smoke_config.sweep.temperature = (2.0,)
  smoke_config.sweep.alpha = (1.0,)
  smoke_config.sweep.gt_only_baseline = False
  smoke_config.sweep.programs = "student.loss.kd=hinton_listwise|logit_mse"
  result = run(smoke_config, show_progress=True)
  out = capsys.readouterr()
  assert "plan: 3 compiled programs" in out.out
  models = [r["model"] for r in result.rows]
  assert models[:2] == ["student [kd=hinton_listwise] temperature=2 alpha=1 learning_rate=0.003",
                        "student [kd=logit_mse] temperature=2 alpha=1 learning_rate=0.003"]
  assert models.count("teacher") == 1
  ckpts = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
  assert ckpts == ["student-0", "student-1", "teacher"]
  smoke_config.sweep.programs = "student.loss.kd=hinton_listwise|nope"
  smoke_config.name = "bad"
  with pytest.raises(ConfigError, match=r"sweep.programs: .*student.loss.kd: unknown name 'nope'"):
    run(smoke_config)


@pytest.mark.slow
def test_teachers_of_other_runs_join_the_ensemble(smoke_config):
  """An mlp_teacher run and a dcn_v2 run over the same data, distilled into one student."""
  from prerank_jax.host import runner

  c = smoke_config
  c.sweep.temperature, c.sweep.alpha = (1.0,), (0.5,)
  c.sweep.gt_only_baseline = False
  c.name = "mlp"
  mlp = run(c)
  c.name, c.teacher.model.name = "dcn", "dcn_v2"
  dcn = run(c)

  c.teacher.model.name = "mlp_teacher"
  c.teacher.restore_from = str(mlp.run_dir)
  c.teacher.ensemble_with = (str(dcn.run_dir),)
  c.name, c.student.loss.ensemble_weights = "bad", (1.0,)  # two teachers need two weights
  with pytest.raises(ConfigError, match=r"ensemble_weights: .*2 with teacher.ensemble_with"):
    run(c)
  c.student.loss.ensemble_weights, c.seed = (), 1  # a member trained on other data
  with pytest.raises(ValueError, match="ensemble_with: .* other data"):
    run(c)
  assert not (mlp.run_dir.parent / "bad").exists()

  c.name, c.seed = "both", 0
  both = run(c)
  members = both.history["teacher_members"]
  assert [(m["model"], m["count"]) for m in members] == [("mlp_teacher", 1), ("dcn_v2", 1)]
  rows = {r["model"]: r for r in both.rows}
  assert rows["teacher"]["flops/cand"] == pytest.approx(
      sum(m["flops_per_candidate"] for m in members))
  # The student saw both teachers: with the mlp teacher alone (same seed, same data) it
  # would have reproduced the first run's student exactly.
  student = lambda result: next(r for r in result.rows if r["model"].startswith("student"))
  assert student(both)["ndcg@10"] != student(mlp)["ndcg@10"]
  # Scores are stacked along M in order: this run's teacher, then ensemble_with's.
  splits, *_ = runner.load_data(c)
  data = runner.SweepData(splits["train"], splits["valid"])
  phases = [runner.restore_teacher(runner.load_run_config(r.run_dir), data, r.run_dir)
            for r in (mlp, dcn)]
  joint, _ = runner.score_splits(phases, splits)
  alone = [runner.score_splits([p], splits)[0]["test"].teacher_scores for p in phases]
  np.testing.assert_array_equal(joint["test"].teacher_scores, np.concatenate(alone, -1))
  # eval re-scores with the same members and reproduces the results.
  again = runner.evaluate_run(both.run_dir)
  assert [r["ndcg@10"] for r in again.rows] == [r["ndcg@10"] for r in both.rows]


@pytest.mark.slow
def test_se_gate_importance_is_reported(smoke_config):
  smoke_config.sweep.temperature, smoke_config.sweep.alpha = (1.0,), (0.5,)
  smoke_config.student.model.se_gate = True
  smoke_config.student.model.item_features = (0, 2, 4)
  result = run(smoke_config)
  importance = result.history["feature_importance"]
  assert list(importance) == ["temperature=1 alpha=0.5 learning_rate=0.003", "gt-only"]
  for gates in importance.values():  # one value in (0, 1) per feature the student reads
    assert [k for k in gates if k.startswith("items")] == ["items[0]", "items[2]", "items[4]"]
    assert all(0.0 < v < 1.0 for v in gates.values())
  text = (result.run_dir / "results.md").read_text()
  assert "SE-gate feature importance" in text and "items[4]" in text
  assert json.loads((result.run_dir / "history.json").read_text())["feature_importance"]
