"""``prerank-jax``: the command line. Thin: parse the config and overrides, call the runner.

  prerank-jax quickstart [--config=configs/quickstart.py[:smoke]] [--config.<field>=<value>]
  prerank-jax sweep --config=configs/<x>.py[:arg] [--config.<field>=<value> ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

COMMANDS = ("quickstart", "sweep")
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


def _run(argv: list[str]) -> int:
  from absl import flags
  from ml_collections import config_flags

  from prerank_jax.config import ConfigError
  from prerank_jax.host.runner import run

  command = argv[1]
  if command == "sweep" and not any(a.startswith("--config=") for a in argv):
    print("prerank-jax sweep: --config=configs/<file>.py is required", file=sys.stderr)
    return 2
  try:
    # With a default file, config_flags already applies the --config.* overrides here.
    config_flags.DEFINE_config_file("config", default_config_path(),
                                    "a configs/*.py file, optionally with :arg",
                                    lock_config=True)
    flags.FLAGS([argv[0], *argv[2:]])
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags reports an unknown --config.<field> as AttributeError/KeyError.
    print(f"prerank-jax {command}: bad flag or config override: {e}", file=sys.stderr)
    return 2
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


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if len(argv) >= 2 else 2
  if argv[1] not in COMMANDS:
    print(f"prerank-jax: unknown command {argv[1]!r}; valid commands are {list(COMMANDS)}",
          file=sys.stderr)
    return 2
  return _run(argv)


if __name__ == "__main__":
  sys.exit(main())
