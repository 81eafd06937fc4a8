"""The CLI's newcomer ergonomics: per-command --help, `config`, `resume`, copied config files.

Everything here runs through ``prerank_jax.cli.main`` without training (seconds): `resume`
is checked up to the runner's door, with the runner replaced by a recorder, and the
recorded config must be one the run directory accepts (``prepare_run_dir``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from prerank_jax import cli
from prerank_jax.cli import main
from prerank_jax.config_files import repo_config
from prerank_jax.host.config_reference import flatten

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", cli.COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_its_own_help(command, flag, capsys):
  assert main(["prerank-jax", command, flag]) == 0
  out = capsys.readouterr().out
  assert out.startswith(f"prerank-jax {command}")
  assert "Example" in out  # a command a user can copy


def test_help_after_other_arguments_runs_nothing(capsys, monkeypatch):
  import prerank_jax.host.runner as runner
  monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("--help ran the pipeline"))
  assert main(["prerank-jax", "sweep", "--config=configs/quickstart.py:smoke", "--help"]) == 0
  assert "prerank-jax sweep" in capsys.readouterr().out


def test_the_general_usage_names_every_command(capsys):
  assert main(["prerank-jax", "--help"]) == 0
  out = capsys.readouterr().out
  for command in cli.COMMANDS:
    assert f"prerank-jax {command}" in out, command


def _printed_fields(out: str) -> dict[str, str]:
  """``{field: printed value}`` of `prerank-jax config`'s ``field = value`` lines."""
  fields = {}
  for line in out.splitlines():
    if " = " in line and not line.startswith((" ", "#")):
      field, value = line.split(" = ", 1)
      fields[field] = value
  return fields


def test_config_prints_every_field_with_its_range_and_meaning(capsys):
  assert main(["prerank-jax", "config"]) == 0
  out = capsys.readouterr().out
  printed = _printed_fields(out)
  assert set(printed) == {f for f, _ in flatten(repo_config("quickstart", None))}
  assert printed["sweep.temperature"] == "(1, 4)"
  assert "(not documented)" not in out
  block = out[out.index("\nseed = 0") + 1:].splitlines()[1:3]
  assert block[0].strip() == "allowed: int in [0, 2147483647]"
  assert "world seed" in block[1]


def test_config_shows_overrides_beside_the_files_default(capsys):
  assert main(["prerank-jax", "config", "--config=configs/tabular.py:smoke",
               "--config.student.num_epochs=7", "--overwrite"]) == 0
  printed = _printed_fields(capsys.readouterr().out)
  assert printed["student.num_epochs"] == "7   (default: 4)"
  assert printed["overwrite"] == "True   (default: False)"
  assert printed["dataset"] == "'tabular'"  # the file's own value, not an override


@pytest.mark.parametrize("override, field", [
    ("--config.seed=-1", "seed"),
    ("--config.eval.gain=log", "eval.gain"),
    ("--config.student.loss.kd=nope", "student.loss.kd"),
])
def test_config_refuses_a_bad_value_naming_the_field(override, field, capsys):
  assert main(["prerank-jax", "config", override]) == 2
  assert f"prerank-jax config: {field}:" in capsys.readouterr().err


def test_config_refuses_an_unknown_field(capsys):
  assert main(["prerank-jax", "config", "--config.student.num_epoch=3"]) == 2
  assert "num_epoch" in capsys.readouterr().err


def test_a_config_file_copied_out_of_configs_works(tmp_path, capsys):
  copy = tmp_path / "my_logs.py"  # no quickstart.py beside it
  shutil.copyfile(ROOT / "configs" / "tabular.py", copy)
  assert main(["prerank-jax", "config", f"--config={copy}:smoke"]) == 0
  printed = _printed_fields(capsys.readouterr().out)
  assert printed["dataset"] == "'tabular'"
  assert printed["student.num_epochs"] == "4"  # the quickstart's smoke size
  # A quickstart.py beside the copy is the one it builds on.
  (tmp_path / "quickstart.py").write_text(
      (ROOT / "configs" / "quickstart.py").read_text().replace(
          'config.workdir = "runs"', 'config.workdir = "elsewhere"'))
  assert main(["prerank-jax", "config", f"--config={copy}"]) == 0
  assert _printed_fields(capsys.readouterr().out)["workdir"] == "'elsewhere'"


class _Recorder:
  """Stands in for ``prerank_jax.host.runner.run``: records the config it is given."""

  def __init__(self):
    self.configs = []

  def __call__(self, config, **kwargs):
    self.configs.append(config)
    return types.SimpleNamespace(table="(table)", run_dir=Path(config.workdir) / config.name,
                                 timings={"total_s": 0.0})


def _made_run_dir(tmp_path) -> Path:
  """A run directory as a first `prerank-jax quickstart` with overrides leaves it when
  killed: its config.json written, nothing finished."""
  from prerank_jax.host.rundir import prepare_run_dir

  config = repo_config("quickstart", "smoke")
  config.workdir, config.name = str(tmp_path / "runs"), "tgrid"
  config.sweep.temperature, config.sweep.alpha = (1.0, 4.0), (0.5,)
  config.student.num_epochs = 2
  return prepare_run_dir(config)


def test_resume_continues_with_the_runs_saved_overrides(tmp_path, monkeypatch, capsys):
  from prerank_jax.host import runner
  from prerank_jax.host.rundir import prepare_run_dir

  run_dir = _made_run_dir(tmp_path)
  recorder = _Recorder()
  monkeypatch.setattr(runner, "run", recorder)
  assert main(["prerank-jax", "resume", str(run_dir), "--wandb=disabled"]) == 0
  assert f"resuming {run_dir}" in capsys.readouterr().out
  (config,) = recorder.configs
  assert config.resume and not config.overwrite
  assert (config.workdir, config.name) == (str(run_dir.parent), "tgrid")
  assert config.sweep.temperature == (1.0, 4.0) and config.sweep.alpha == (0.5,)
  assert config.student.num_epochs == 2 and config.wandb.mode == "disabled"
  assert prepare_run_dir(config) == run_dir  # the run directory accepts it as its own


def test_resume_with_an_override_that_changes_the_results_is_refused(tmp_path, capsys):
  run_dir = _made_run_dir(tmp_path)
  before = (run_dir / "config.json").read_text()
  assert main(["prerank-jax", "resume", str(run_dir), "--config.seed=3"]) == 2
  assert "different config" in capsys.readouterr().err
  assert (run_dir / "config.json").read_text() == before


def test_resume_needs_one_run_directory(tmp_path, capsys):
  assert main(["prerank-jax", "resume"]) == 2
  assert main(["prerank-jax", "resume", str(tmp_path)]) == 2
  assert "not a run directory" in capsys.readouterr().err


def _exit_now_child(body: str) -> subprocess.CompletedProcess:
  code = ("import atexit, sys, threading, time\n"
          "from prerank_jax.cli import exit_now\n" + body)
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120)


def test_exit_now_flushes_runs_the_exit_handlers_and_keeps_the_code():
  proc = _exit_now_child("atexit.register(lambda: print('handler ran', flush=True))\n"
                         "print('written', end='')\n"
                         "sys.stderr.write('to stderr')\n"
                         "exit_now(3)\n")
  assert proc.returncode == 3
  assert proc.stdout == "writtenhandler ran\n" and proc.stderr == "to stderr"


def test_exit_now_waits_for_a_live_non_daemon_thread():
  proc = _exit_now_child("t = threading.Thread(target=lambda: (time.sleep(0.5), "
                         "print('thread finished', flush=True)))\n"
                         "t.start()\n"
                         "exit_now(0)\n")
  assert proc.returncode == 0 and proc.stdout == "thread finished\n"
