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


def _step_bytes(step_dir: Path) -> int:
  return sum(f.stat().st_size for f in step_dir.rglob("*") if f.is_file())


@pytest.mark.slow
def test_a_checkpoint_does_not_grow_with_the_epoch_count(smoke_config, monkeypatch):
  """Issue 20 §5: the per-epoch history used to be rewritten into every checkpoint (a
  step of a 12,000-epoch smoke run was 12 MB). Now a step holds the state and small
  metadata only: in one tiny run of 8 student epochs with a checkpoint every epoch (all
  steps kept), the steps after k = 2 and 4k = 8 epochs have the same size, and the history
  segments beside them hold every epoch, equal to the run's history.json. The history
  kept in memory holds copies, not views of device buffers."""
  import json

  from prerank_jax.host import sweep_driver
  from prerank_jax.host.checkpoint import SweepCheckpointer

  kept = []

  class KeepAll(SweepCheckpointer):
    def __init__(self, directory, **kwargs):
      super().__init__(directory, max_to_keep=10)

    def save(self, chunk, state, meta, *, history=None):
      kept.extend(h for h in (history or [])[len(kept):])
      super().save(chunk, state, meta, history=history)

  monkeypatch.setattr(sweep_driver, "SweepCheckpointer", KeepAll)
  smoke_config.checkpoint_every = 1
  smoke_config.student.num_epochs = 8
  result = run(smoke_config)
  steps = result.run_dir / "checkpoints" / "student"
  sizes = {k: _step_bytes(steps / str(k)) for k in (2, 8)}
  meta_sizes = {k: _step_bytes(steps / str(k) / "meta") for k in (2, 8)}
  # The JSON metadata is the same size up to the digits of the chunk number (with the
  # history in it, 6 more epochs of every point's metrics added 5.7 kB); the whole step
  # to 2 % (the compressed arrays' sizes vary with their values: 1.2 % between epochs 2
  # and 8 in one run; the history itself is checked in the metadata, to 16 bytes).
  assert abs(meta_sizes[8] - meta_sizes[2]) <= 16, meta_sizes
  assert abs(sizes[8] - sizes[2]) < 0.02 * sizes[2], sizes
  ckpt = SweepCheckpointer(steps)
  chunks = ckpt._read_history(8)
  ckpt.close()
  saved = json.loads((result.run_dir / "history.json").read_text())["students"]
  assert len(chunks) == 8 and saved
  # The history the run keeps in memory owns its arrays: a view of a fetched device
  # buffer kept that whole buffer alive, about 7 kB a chunk (the soak's memory growth).
  assert kept and all(v.base is None for h in kept for v in h.values())
  for i, point in enumerate(saved):
    for metric, per_epoch in saved[point].items():
      assert [c[metric][i][0] for c in chunks] == per_epoch, (point, metric)
