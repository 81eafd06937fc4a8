"""``prerank-jax``: the command line. Thin: parse the config and overrides, call the runner.

  prerank-jax quickstart [--config=configs/quickstart.py[:smoke]] [--config.<field>=<value>]
  prerank-jax sweep --config=configs/<x>.py[:arg] [--config.<field>=<value> ...]
  prerank-jax eval <run dir>            re-evaluate a finished run from its checkpoints
  prerank-jax report <run dir> [...] [--out DIR]   print the results; draw the Pareto plot,
                                        temperature × alpha heatmaps, keep-ratio and
                                        learning-curve figures
  prerank-jax resume <run dir> [--config.<field>=<value> ...]   continue a killed run with
                                        the config it was started with (its config.json)
  prerank-jax config [--config=<file>[:arg]] [--config.<field>=<value> ...]   print every
                                        field: value, default, allowed range, meaning
  prerank-jax export <run dir> --point NAME --out DIR   one student as a self-contained
                                        artifact (jax.export StableHLO, params, feature spec)
  prerank-jax score DIR --input FILE --output scores.parquet   score new candidates
                                        (Parquet/CSV/LETOR) with an exported student
  prerank-jax <command> --help          what one command does, with examples

Common overrides: --config.name=<run name>  --config.resume=True  --config.overwrite=True
  --config.wandb.mode=offline|online|disabled  --config.sweep.<hparam>="(v1, v2, ...)"
Shorthands: --resume, --overwrite, --wandb=offline|online|disabled (the same fields).
Compiled (and, for simulator runs, traced) programs are cached in ~/.cache/prerank-jax/xla
(PRERANK_JAX_CACHE_DIR); any command but config takes --no-compile-cache to trace and
compile everything afresh.
"""

from __future__ import annotations

import linecache
import os
import sys
from pathlib import Path

COMMANDS = ("quickstart", "sweep", "eval", "report", "resume", "config", "export", "score")
USAGE = __doc__

# `prerank-jax <command> --help`: what each command does, its arguments and an example.
COMMAND_HELP = {
    "quickstart": """prerank-jax quickstart [--config=configs/quickstart.py[:smoke]] [--config.<field>=<value> ...]

Simulator → teacher → a 3×3 (T, alpha) distillation sweep plus a ground-truth-only
student → evaluation → a results table, written to runs/<name>/ (default runs/quickstart).
Without --config it runs configs/quickstart.py; :smoke is the tiny preset (seconds).

Examples:
  prerank-jax quickstart --config=configs/quickstart.py:smoke --config.name=first
  prerank-jax quickstart --config.sweep.temperature="(1.,4.)" --config.name=t_grid
""",
    "sweep": """prerank-jax sweep --config=configs/<file>.py[:arg] [--config.<field>=<value> ...]

The same pipeline for any config file (required): configs/letor.py, configs/tabular.py,
configs/movielens.py, configs/large_lists.py, a copy of one of them, or your own.
Shorthands: --resume, --overwrite, --wandb=offline|online|disabled.
`prerank-jax config --config=<file>` lists every field you can override.

Examples:
  prerank-jax sweep --config=configs/tabular.py --config.source.manual_dir=. --config.source.train_file=logs.parquet
  prerank-jax sweep --config=configs/quickstart.py --config.sweep.programs="student.loss.kd=hinton_listwise|logit_mse"
""",
    "eval": """prerank-jax eval <run dir> [<run dir> ...]

Re-evaluates finished runs from their checkpoints (nothing is retrained) and rewrites
results.csv, results.md and history.json.

Example:
  prerank-jax eval runs/quickstart
""",
    "report": """prerank-jax report <run dir> [<run dir> ...] [--out DIR]

Prints each run's results table and writes pareto.png/pareto.md, T × alpha heatmaps,
keep_ratio.png and learning_curves.png into DIR (default: the first run directory).

Example:
  prerank-jax report runs/mlp runs/dcn --out figures/
""",
    "resume": """prerank-jax resume <run dir> [--config.<field>=<value> ...]

Continues a killed or interrupted run from its newest checkpoint with the config it was
started with (read from <run dir>/config.json), so no override has to be typed again.
The result is the same as an uninterrupted run's. Extra overrides may change fields that
do not alter the results (e.g. --wandb=disabled, --config.progress=False); others are
refused because the run directory belongs to its config.

Example:
  prerank-jax resume runs/quickstart
""",
    "config": """prerank-jax config [--config=<file>[:arg]] [--config.<field>=<value> ...]

Prints the resolved config: every field with its value, the config file's default when an
override changed it, the allowed range and what it means. Without --config it shows
configs/quickstart.py. Nothing is run or written.

Examples:
  prerank-jax config
  prerank-jax config --config=configs/tabular.py --config.student.num_epochs=5
""",
    "export": """prerank-jax export <run dir> --point NAME --out DIR [--overwrite] [--platforms cpu,cuda,tpu]

Writes one sweep point of a finished run as a self-contained artifact: the student's
scoring function serialised with jax.export (StableHLO, any number of candidates, lowered
for cpu, cuda and tpu), its parameters, the feature spec (raw columns in order and the
normalisation learned on train), the config and the point's results row, with a manifest
of checksums. NAME is a `model` of the run's results.csv. DIR must not exist unless
--overwrite (it is then replaced only once the new artifact is complete).
See docs/guides/export_and_serve.md.

Example:
  prerank-jax export runs/tabular --point "student temperature=2 alpha=0.5" \\
      --out artifacts/student
""",
    "score": """prerank-jax score DIR --input FILE --output scores.parquet [--keep COLUMN ...] [--batch-rows N] [--embed items|users]

Scores every candidate row of a Parquet or CSV table (or a LETOR file, for an artifact of a
LETOR run) with the exported student in DIR. Needs only jax and this package's loader, not
the run or its data. Parquet is read one batch of rows at a time and CSV in blocks, so a
table larger than memory works. The output has the user's ID columns under their own
names (the request column, the candidate column if the run had one, and every --keep
column) and the score in a column `score`. A missing or non-numeric feature column is
refused, with its name, before anything is written. A student over categorical IDs also
reads its ID columns and its behaviour list column (Parquet), hashed as in training.

--embed items|users (a dssm artifact): writes each row's item vector (a catalogue) or user
vector instead of a score, in a column `embedding`, for a server that caches item vectors
and scores by dot products.

Example:
  prerank-jax score artifacts/student --input new_candidates.parquet --output scores.parquet
""",
}


def command_help(command: str) -> str:
  """The ``--help`` text of one command (every command in :data:`COMMANDS` has one)."""
  return COMMAND_HELP[command]


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


def parse_config(command: str, argv: list[str], base=None):
  """The config of ``argv`` (``[prog, command, --config=..., --config.<field>=...]``).

  ``base``: a ``ConfigDict`` to apply the overrides to instead of a ``--config`` file
  (``resume``). Returns the locked config, or the exit status 2 after printing why.
  """
  from absl import flags
  from ml_collections import config_flags

  argv = argv[:2] + expand_shorthands(argv[2:])
  # config_flags reads the --config.* overrides from sys.argv, so it sees the expanded form.
  saved, sys.argv = sys.argv, [argv[0], *argv[2:]]
  # A fresh flag registry per call, so main() can be called more than once in a process.
  flag_values = flags.FlagValues()
  try:
    # With a default file, config_flags already applies the --config.* overrides here.
    if base is None:
      config_flags.DEFINE_config_file("config", default_config_path(),
                                      "a configs/*.py file, optionally with :arg",
                                      flag_values=flag_values, lock_config=True)
    else:
      config_flags.DEFINE_config_dict("config", base, "the run's saved config",
                                      flag_values=flag_values, lock_config=True)
    flag_values(sys.argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError,
          FileNotFoundError) as e:
    # config_flags reports an unknown --config.<field> as AttributeError/KeyError.
    from prerank_jax.config import renamed_override  # a renamed field: name the new one

    e = renamed_override(sys.argv) or e
    print(f"prerank-jax {command}: bad flag or config override: {e}", file=sys.stderr)
    return 2
  finally:
    sys.argv = saved
  return flag_values.config


def _run(argv: list[str], config=None) -> int:
  from prerank_jax.host.runner import run

  command = argv[1]
  if command == "sweep" and not any(a.startswith("--config=") for a in argv):
    print("prerank-jax sweep: --config=configs/<file>.py is required", file=sys.stderr)
    return 2
  config = parse_config(command, argv, base=config)
  if isinstance(config, int):
    return config
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


def _config_command(argv: list[str]) -> int:
  """``prerank-jax config``: every field of the resolved config (nothing runs)."""
  from prerank_jax.config import validate_config
  from prerank_jax.config_files import load_config_file
  from prerank_jax.host.config_reference import describe_fields, format_table

  config = parse_config("config", argv)
  if isinstance(config, int):
    return config
  given = [a.split("=", 1)[1] for a in argv[2:] if a.startswith("--config=")]
  path, _, arg = (given[-1] if given else default_config_path()).partition(":")
  try:
    defaults = load_config_file(path, arg or None)
    validate_config(config)
  except Exception as e:
    if not raised_by_project(e):
      raise
    print(f"prerank-jax config: {e}", file=sys.stderr)
    return 2
  print(f"# {path}{':' + arg if arg else ''}: every field = value (default when overridden)")
  print(format_table(describe_fields(config, defaults)))
  return 0


def _resume_command(argv: list[str]) -> int:
  """``prerank-jax resume <run dir> [overrides]``: the run's saved config, resume=True."""
  import json

  import ml_collections

  paths = [a for a in argv[2:] if not a.startswith("-")]
  if len(paths) != 1:
    print("prerank-jax resume: give exactly one run directory, e.g. prerank-jax resume "
          "runs/quickstart", file=sys.stderr)
    return 2
  run_dir = Path(paths[0])
  saved = run_dir / "config.json"
  if not saved.exists():
    print(f"prerank-jax resume: {run_dir} is not a run directory (no config.json)",
          file=sys.stderr)
    return 2
  tuples = lambda x: (tuple(tuples(v) for v in x) if isinstance(x, list) else
                      {k: tuples(v) for k, v in x.items()} if isinstance(x, dict) else x)
  config = ml_collections.ConfigDict(tuples(json.loads(saved.read_text())))
  config.workdir, config.name = str(run_dir.parent), run_dir.name
  config.resume, config.overwrite = True, False
  overrides = [a for a in argv[2:] if a != paths[0]]
  print(f"resuming {run_dir} with its config.json"
        + (f" and {' '.join(overrides)}" if overrides else ""))
  return _run([argv[0], "resume", *overrides], config=config)


def _run_dir_command(command: str, paths: list[str]) -> int:
  from prerank_jax.host import runner

  out_dir = None
  if command == "report" and "--out" in paths:
    i = paths.index("--out")
    if i + 1 >= len(paths):
      print("prerank-jax report: --out needs a directory", file=sys.stderr)
      return 2
    out_dir, paths = Path(paths[i + 1]), paths[:i] + paths[i + 2:]
  elif command == "report":
    outs = [p for p in paths if p.startswith("--out=")]
    if outs:
      out_dir, paths = Path(outs[-1].split("=", 1)[1]), [p for p in paths if p not in outs]
  if not paths:
    print(f"prerank-jax {command}: give at least one run directory", file=sys.stderr)
    return 2
  if command == "eval":  # an --overwrite killed mid-swap: keep its complete side first
    from prerank_jax.host.rundir import recover_interrupted_swap

    for path in paths:
      try:
        recover_interrupted_swap(Path(path))
      except Exception as e:
        if not raised_by_project(e):
          raise
        print(f"prerank-jax eval: {e}", file=sys.stderr)
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
  from prerank_jax.host.report import selection_report  # chosen on valid/, test reported

  print(selection_report([Path(p) for p in paths]) + "\n")
  from prerank_jax.host.pareto import write_pareto_report

  out_dir = out_dir or Path(paths[0])
  out_dir.mkdir(parents=True, exist_ok=True)
  png, md = write_pareto_report([Path(p) for p in paths], out_dir=out_dir)
  print(f"wrote {png} and {md}")
  from prerank_jax.host.report import write_figures

  figures = write_figures([Path(p) for p in paths], out_dir=out_dir)
  print(f"wrote {', '.join(str(f) for f in figures)}")
  return 0


def _serve_command(command: str, args: list[str]) -> int:
  """``export <run dir> --point NAME --out DIR`` or ``score DIR --input F --output F``."""
  import argparse

  parser = argparse.ArgumentParser(prog=f"prerank-jax {command}", add_help=False)
  if command == "export":
    parser.add_argument("run_dir")
    parser.add_argument("--point", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--platforms", default="cpu,cuda,tpu")
  else:
    parser.add_argument("artifact")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("--batch-rows", type=int, default=16_384)
    parser.add_argument("--embed", choices=("items", "users"), default=None)
  try:
    ns = parser.parse_args(args)
  except SystemExit:  # argparse printed what is wrong
    return 2
  try:
    if command == "export":
      from prerank_jax.host.artifact import export_point

      out = export_point(ns.run_dir, ns.point, ns.out, overwrite=ns.overwrite,
                         platforms=tuple(p.strip() for p in ns.platforms.split(",") if p.strip()))
      print(f"wrote {out}/ (manifest.json, scoring.jax_export, params.npz, features.json, "
            "config.json, metrics.json)")
    else:
      from prerank_jax.host.scoring import embed_file, score_file

      if ns.embed:  # a dssm's cached path: tower vectors instead of scores
        summary = embed_file(ns.artifact, ns.input, ns.output, side=ns.embed, keep=ns.keep,
                             batch_rows=ns.batch_rows)
        print(f"wrote {summary.output}: {summary.rows} {ns.embed[:-1]} vectors in "
              f"{summary.seconds:.1f} s")
      else:
        summary = score_file(ns.artifact, ns.input, ns.output, keep=ns.keep,
                             batch_rows=ns.batch_rows)
        print(f"wrote {summary.output}: {summary.rows} candidates scored in "
              f"{summary.seconds:.1f} s")
  except Exception as e:
    if not raised_by_project(e):
      raise
    print(f"prerank-jax {command}: {e}", file=sys.stderr)
    return 2
  return 0


NO_COMPILE_CACHE = "--no-compile-cache"


def set_compile_cache(argv: list[str]) -> list[str]:
  """Turns JAX's persistent compilation cache on before anything compiles, or off with
  ``--no-compile-cache`` (removed from the returned argv); see
  :mod:`prerank_jax.host.compile_cache` for where it lives (``PRERANK_JAX_CACHE_DIR``)."""
  from prerank_jax.host import compile_cache

  if NO_COMPILE_CACHE in argv[2:]:
    compile_cache.disable_compilation_cache()
    compile_cache.disable_program_store()
    return argv[:2] + [a for a in argv[2:] if a != NO_COMPILE_CACHE]
  # Traced programs are kept beside the compiled ones: a repeated run traces nothing.
  compile_cache.enable_program_store(compile_cache.enable_compilation_cache())
  return argv


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
    print(USAGE)
    return 0 if len(argv) >= 2 else 2
  if argv[1] not in COMMANDS:
    print(f"prerank-jax: unknown command {argv[1]!r}; valid commands are {list(COMMANDS)}",
          file=sys.stderr)
    return 2
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[2:]):
    print(command_help(argv[1]))
    return 0
  if argv[1] == "config":
    return _config_command(argv)
  argv = set_compile_cache(argv)
  try:
    if argv[1] in ("export", "score"):
      return _serve_command(argv[1], argv[2:])
    if argv[1] == "resume":
      return _resume_command(argv)
    if argv[1] in ("eval", "report"):
      return _run_dir_command(argv[1], argv[2:])
    return _run(argv)
  finally:  # a caller in the same process (a test, a notebook) gets plain jax.jit back
    from prerank_jax.host import compile_cache
    compile_cache.disable_program_store()


def exit_now(code: int) -> None:
  """Ends the process with ``code`` once a command has returned, skipping only CPython's
  interpreter teardown (freeing every module and JAX's backends: about 0.9 s of a
  seconds-long run on a 2-core CPU, measured with the quickstart). Everything the command
  wrote is closed by then (files are written atomically, W&B runs and checkpoints are
  finished before ``main`` returns); the streams are flushed and the ``atexit`` handlers
  (W&B's, Orbax's, absl's) run as at a normal exit. With a non-daemon thread still alive
  the process exits normally, so that thread is joined as usual."""
  import atexit
  import threading

  main_thread = threading.main_thread()
  if any(t is not main_thread and t.is_alive() and not t.daemon
         for t in threading.enumerate()):
    sys.exit(code)
  sys.stdout.flush()
  sys.stderr.flush()
  atexit._run_exitfuncs()  # noqa: SLF001 (what interpreter shutdown would run)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def console_main() -> None:
  """The ``prerank-jax`` command (and ``python -m prerank_jax.cli``): :func:`main`, then
  :func:`exit_now`."""
  exit_now(main())


if __name__ == "__main__":
  console_main()
