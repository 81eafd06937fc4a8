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


def init_distributed(config) -> None:
  """Joins a multi-process run (``config.distributed``) before JAX touches a device."""
  import jax

  from prerank_jax.config import ConfigError

  dist = config.distributed
  if dist.cpu_devices_per_process:
    jax.config.update("jax_num_cpu_devices", int(dist.cpu_devices_per_process))
  if dist.num_processes <= 1:
    return
  if not dist.coordinator_address or not 0 <= dist.process_id < dist.num_processes:
    raise ConfigError(f"distributed: needs coordinator_address='host:port' and process_id "
                      f"in [0, {dist.num_processes - 1}], got "
                      f"{dist.coordinator_address!r}, {dist.process_id}")
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

  from prerank_jax.config import ConfigError
  from prerank_jax.host.runner import run

  command = argv[1]
  argv = argv[:2] + expand_shorthands(argv[2:])
  if command == "sweep" and not any(a.startswith("--config=") for a in argv):
    print("prerank-jax sweep: --config=configs/<file>.py is required", file=sys.stderr)
    return 2
  # config_flags reads the --config.* overrides from sys.argv, so it sees the expanded form.
  saved, sys.argv = sys.argv, [argv[0], *argv[2:]]
  try:
    # With a default file, config_flags already applies the --config.* overrides here.
    config_flags.DEFINE_config_file("config", default_config_path(),
                                    "a configs/*.py file, optionally with :arg",
                                    lock_config=True)
    flags.FLAGS(sys.argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags reports an unknown --config.<field> as AttributeError/KeyError.
    print(f"prerank-jax {command}: bad flag or config override: {e}", file=sys.stderr)
    return 2
  finally:
    sys.argv = saved
  config = flags.FLAGS.config
  try:
    init_distributed(config)
    result = run(config)
  except (ConfigError, FileExistsError, FileNotFoundError, FloatingPointError,
          ValueError) as e:
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
      except (FileNotFoundError, ValueError) as e:
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
