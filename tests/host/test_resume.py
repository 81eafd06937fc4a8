"""Orbax resume: damaged checkpoints, foreign run dirs, teachers (SIGKILL: test_kill.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from prerank_jax.host.runner import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def finished(smoke_config):
  smoke_config.checkpoint_every = 1
  smoke_config.sweep.temperature = (1.0, 3.0)
  result = run(smoke_config)
  return smoke_config, result


@pytest.mark.slow
def test_damaged_latest_checkpoint_falls_back_to_the_previous(finished, capsys):
  config, first = finished
  ckpts = first.run_dir / "checkpoints" / "student"
  latest = max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
  for f in (ckpts / str(latest) / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # truncate
  before = (first.run_dir / "results.csv").read_text()
  config.resume = True
  again = run(config)
  assert "unreadable" in capsys.readouterr().out
  assert (again.run_dir / "results.csv").read_text() == before
  # The damaged step was moved aside and saved again by the retraining, so the phase is
  # finished on disk: `prerank-jax eval` restores it (before issue 12 it said "not
  # finished", as Orbax silently skipped saving a step at or below the damaged one).
  assert (ckpts / f"damaged-{latest}").is_dir() and (ckpts / str(latest)).is_dir()
  (again.run_dir / "results.csv").unlink()
  from prerank_jax.host.runner import evaluate_run
  evaluate_run(again.run_dir)
  assert (again.run_dir / "results.csv").read_text() == before


@pytest.mark.slow
def test_every_checkpoint_damaged_is_an_error_not_a_restart(finished):
  from prerank_jax.host.checkpoint import CheckpointError

  config, first = finished
  ckpts = first.run_dir / "checkpoints" / "student"
  for f in ckpts.rglob("*"):
    if f.is_file() and "state" in f.parts and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  config.resume = True
  with pytest.raises(CheckpointError, match="every checkpoint .* is unreadable"):
    run(config)


@pytest.mark.slow
def test_resume_into_a_different_config_is_refused(finished):
  config, first = finished
  config.resume = True
  config.sweep.alpha = (0.25,)
  before = sorted(p.name for p in first.run_dir.rglob("*"))
  with pytest.raises(FileExistsError, match=r"belongs to a different config.*sweep"):
    run(config)
  assert sorted(p.name for p in first.run_dir.rglob("*")) == before


@pytest.mark.slow
def test_teacher_is_reused_from_an_earlier_run_and_mismatches_refused(finished):
  config, first = finished
  config.name = "reuse"
  config.teacher.restore_from = str(first.run_dir)
  reused = run(config)
  assert not (reused.run_dir / "checkpoints" / "teacher").exists()
  assert reused.history["teacher_source"].startswith(str(first.run_dir))
  # Same teacher, same data, same students: the same table.
  assert (reused.run_dir / "results.csv").read_text() == \
      (first.run_dir / "results.csv").read_text()
  config.name = "mismatch"
  config.teacher.num_epochs = 4
  with pytest.raises(ValueError, match="teacher.restore_from: .*identity mismatch"):
    run(config)


@pytest.mark.slow
def test_eval_command_restores_and_reproduces_the_results(finished):
  _, first = finished
  before = (first.run_dir / "results.csv").read_text()
  (first.run_dir / "results.csv").unlink()
  out = subprocess.run([sys.executable, "-m", "prerank_jax.cli", "eval", str(first.run_dir)],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert (first.run_dir / "results.csv").read_text() == before
  shutil.rmtree(first.run_dir / "checkpoints" / "student")
  out = subprocess.run([sys.executable, "-m", "prerank_jax.cli", "eval", str(first.run_dir)],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2 and "student phase is not finished" in out.stderr
