"""``prerank-jax``: the command line. Thin: parse the config and overrides, call the runner.

  prerank-jax quickstart [--config=configs/quickstart.py[:smoke]] [--config.<field>=<value>]
  prerank-jax sweep --config=configs/<x>.py[:arg] [--config.<field>=<value> ...]
  prerank-jax eval <run dir>            re-evaluate a finished run from its checkpoints
  prerank-jax report <run dir> [...]    print the results; draw the Pareto plot, T × α
                                        heatmaps, keep-ratio and learning-curve figures

Common overrides: --config.name=<run name>  --config.resume=True  --config.overwrite=True
  --config.wandb.mode=offline|online|disabled  --config.sweep.<hparam>="(v1, v2, ...)"
Shorthands: --resume, --overwrite, --wandb=offline|online|disabled (the same fields).
"""

from __future__ import annotations

import linecache
import sys
from pathlib import Path

COMMANDS = ("quickstart", "sweep", "eval", "report")
USAGE = __doc__


def default_config_path() -> str:
  """``configs/quickstart.py`` of the source tree (the package is installed editable)."""
  for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
    path = root / "configs" / "quickstart.py"
    if path.exists():
      return str(path)
  return "configs/quickstart.py"


_PACKAGE = Path(__file__).resolve().parent
# Built-in error types the project raises itself for bad input (validation in config,
# data loaders, runner). They are reported in one line only when a `raise` statement in
# this package raised them; raised anywhere else (jax, numpy, a built-in call) they are
# bugs and show their traceback.
_OWN_BUILTIN_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError)


def project_errors() -> tuple[type[BaseException], ...]:
  """The project's own error types: bad config, data, run directory or checkpoints."""
  from prerank_jax.batch import BatchError
  from prerank_jax.config import ConfigError
  from prerank_jax.data.simulator import SimulatorConfigError
  from prerank_jax.data.teacher_cache import TeacherCacheMismatch
  from prerank_jax.data.tfds_base import DatasetMissingError
  from prerank_jax.host.checkpoint import CheckpointError
  from prerank_jax.host.rundir import RunDirError, RunDirLocked

  return (ConfigError, BatchError, SimulatorConfigError, TeacherCacheMismatch,
          DatasetMissingError, CheckpointError, RunDirError, RunDirLocked)


def raised_by_project(error: BaseException) -> bool:
  """Whether ``error`` is a user-facing error of this project (reported in one line).

  True for :func:`project_errors`, and for the built-in types of ``_OWN_BUILTIN_ERRORS``
  when the innermost frame of the traceback is a ``raise`` statement in this package.
  """
  if isinstance(error, project_errors()):
    return True
  if not isinstance(error, _OWN_BUILTIN_ERRORS) or error.__traceback__ is None:
    return False
  tb = error.__traceback__
  while tb.tb_next is not None:
    tb = tb.tb_next
  filename = tb.tb_frame.f_code.co_filename
  try:
    inside = Path(filename).resolve().is_relative_to(_PACKAGE)
  except (OSError, ValueError):
    return False
  return inside and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def init_distributed(config) -> None:
  """Joins a multi-process run (``config.distributed``) before JAX touches a device.

  Raises:
    ConfigError: a ``distributed.*`` field is out of range (checked first).
  """
  import jax

  from prerank_jax.config import validate_distributed

  validate_distributed(config)
  dist = config.distributed
  if dist.cpu_devices_per_process:
    jax.config.update("jax_num_cpu_devices", int(dist.cpu_devices_per_process))
  if dist.num_processes <= 1:
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; GPU/TPU ignore
  jax.distributed.initialize(coordinator_address=dist.coordinator_address,
                             num_processes=dist.num_processes, process_id=dist.process_id)


SHORTHANDS = {"--resume": "--config.resume=True", "--overwrite": "--config.overwrite=True"}


def expand_shorthands(args: list[str]) -> list[str]:
  """``--resume``, ``--overwrite`` and ``--wandb=<mode>`` as their ``--config.*`` forms."""
  out = []
  for a in args:
    if a in SHORTHANDS:
      out.append(SHORTHANDS[a])
    elif a.startswith("--wandb="):
      out.append(f"--config.wandb.mode={a.split('=', 1)[1]}")
    else:
      out.append(a)
  return out


def _run(argv: list[str]) -> int:
  from absl import flags
  from ml_collections import config_flags

  from prerank_jax.host.runner import run

  command = argv[1]
  argv = argv[:2] + expand_shorthands(argv[2:])
  if command == "sweep" and not any(a.startswith("--config=") for a in argv):
    print("prerank-jax sweep: --config=configs/<file>.py is required", file=sys.stderr)
    return 2
  # config_flags reads the --config.* overrides from sys.argv, so it sees the expanded form.
  saved, sys.argv = sys.argv, [argv[0], *argv[2:]]
  # A fresh flag registry per call, so main() can be called more than once in a process.
  flag_values = flags.FlagValues()
  try:
    # With a default file, config_flags already applies the --config.* overrides here.
    config_flags.DEFINE_config_file("config", default_config_path(),
                                    "a configs/*.py file, optionally with :arg",
                                    flag_values=flag_values, lock_config=True)
    flag_values(sys.argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags reports an unknown --config.<field> as AttributeError/KeyError.
    print(f"prerank-jax {command}: bad flag or config override: {e}", file=sys.stderr)
    return 2
  finally:
    sys.argv = saved
  config = flag_values.config
  try:
    init_distributed(config)
    result = run(config)
  except Exception as e:
    if not raised_by_project(e):
      raise  # a bug: its traceback, not a one-line message that hides it
    print(f"prerank-jax {command}: {e}", file=sys.stderr)
    return 2
  print()
  print(result.table)
  print(f"\nwrote {result.run_dir}/ (results.csv, results.md, config.json, history.json) "
        f"in {result.timings['total_s']:.1f} s")
  return 0


def _run_dir_command(command: str, paths: list[str]) -> int:
  from prerank_jax.host import runner

  if not paths:
    print(f"prerank-jax {command}: give at least one run directory", file=sys.stderr)
    return 2
  missing = [p for p in paths if not (Path(p) / "config.json").exists()]
  if missing:
    print(f"prerank-jax {command}: not a run directory (no config.json): {missing}",
          file=sys.stderr)
    return 2
  if command == "eval":
    for path in paths:
      try:
        result = runner.evaluate_run(Path(path))
      except Exception as e:
        if not raised_by_project(e):
          raise
        print(f"prerank-jax eval: {e}", file=sys.stderr)
        return 2
      print(result.table)
      print(f"\nrewrote {result.run_dir}/results.csv, results.md, history.json")
    return 0
  for path in paths:
    results = Path(path) / "results.md"
    if not results.exists():
      print(f"prerank-jax report: {path} has no results yet; run `prerank-jax eval {path}` "
            "(or resume it) first", file=sys.stderr)
      return 2
    print(results.read_text())
  from prerank_jax.host.pareto import write_pareto_report

  png, md = write_pareto_report([Path(p) for p in paths], out_dir=Path(paths[0]))
  print(f"wrote {png} and {md}")
  from prerank_jax.host.report import write_figures

  figures = write_figures([Path(p) for p in paths], out_dir=Path(paths[0]))
  print(f"wrote {', '.join(str(f) for f in figures)}")
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if len(argv) >= 2 else 2
  if argv[1] not in COMMANDS:
    print(f"prerank-jax: unknown command {argv[1]!r}; valid commands are {list(COMMANDS)}",
          file=sys.stderr)
    return 2
  if argv[1] in ("eval", "report"):
    return _run_dir_command(argv[1], argv[2:])
  return _run(argv)


if __name__ == "__main__":
  sys.exit(main())
