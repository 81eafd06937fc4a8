"""``prerank-jax eval`` repairs an ``--overwrite`` swap that a kill interrupted
(:func:`prerank_jax.host.rundir.recover_interrupted_swap`) before it reads the run, as
training and ``resume`` do: without it, a run killed between the swap's two renames has no
``<name>`` directory and ``eval`` would refuse it as "not a run directory"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prerank_jax import cli
from prerank_jax.host import rundir, runner


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _killed_between_renames(tmp_path: Path, *, new_complete: bool) -> tuple[Path, Path]:
  """``<name>`` renamed to ``.<name>.replaced-<dead pid>``, the staging directory (finished
  or not) not yet renamed in."""
  run_dir = tmp_path / "runs" / "r"
  old = run_dir.parent / f".r.replaced-{_dead_pid()}"
  old.mkdir(parents=True)
  (old / "config.json").write_text("{}")
  (old / "results.csv").write_text("model\nold\n")
  staging = rundir.staging_path(run_dir)
  staging.mkdir()
  (staging / "config.json").write_text("{}")
  if new_complete:
    (staging / "results.csv").write_text("model\nnew\n")
  return run_dir, old


class _Result:
  table = "(table)"

  def __init__(self, run_dir):
    self.run_dir = run_dir


def _eval(monkeypatch, run_dir: Path) -> list[Path]:
  seen = []

  def evaluate(path):
    seen.append(Path(path))
    assert (Path(path) / "results.csv").is_file()  # the repaired directory is what it reads
    return _Result(path)

  monkeypatch.setattr(runner, "evaluate_run", evaluate)
  assert cli.main(["prerank-jax", "eval", str(run_dir)]) == 0
  return seen


def test_eval_moves_a_finished_new_run_into_place_first(tmp_path, monkeypatch, capsys):
  run_dir, old = _killed_between_renames(tmp_path, new_complete=True)
  assert not run_dir.exists()
  assert _eval(monkeypatch, run_dir) == [run_dir]
  assert "moved it into place" in capsys.readouterr().out
  assert (run_dir / "results.csv").read_text() == "model\nnew\n"
  assert not old.exists() and not rundir.staging_path(run_dir).exists()


def test_eval_puts_the_previous_run_back_when_the_new_one_was_unfinished(tmp_path,
                                                                         monkeypatch, capsys):
  run_dir, old = _killed_between_renames(tmp_path, new_complete=False)
  assert _eval(monkeypatch, run_dir) == [run_dir]
  assert "put the previous result back" in capsys.readouterr().out
  assert (run_dir / "results.csv").read_text() == "model\nold\n" and not old.exists()
