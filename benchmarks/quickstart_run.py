"""The README's quickstart table and its wall time, cold and warm, measured.

Runs the README's command, ``prerank-jax quickstart`` (half the "small" simulator's
requests, the teacher, the 2×2 (T, α) sweep plus the gt-only student, evaluation), each
time in a fresh process
with a temporary work directory and a fresh, temporary compilation cache
(``PRERANK_JAX_CACHE_DIR``, :mod:`prerank_jax.host.compile_cache`):

  cold        the quickstart with an empty cache: everything is traced and compiled
  warm        the same again: the traced and compiled programs are read from the cache
  smoke_cold  ``--config=configs/quickstart.py:smoke`` with an empty cache
  smoke_warm  the smoke run again, warm

Each records the wall time (process start to exit), the child's CPU seconds (user + sys:
about the same on a shared machine as on an idle one, unlike the wall time), the load
average before it, and the run's own phase timings (data, teacher, students, evaluation)
from its history.json. Kept:

  benchmarks/results/quickstart/results.csv   the cold run's full result table
  benchmarks/results/quickstart/run.json      the four runs, the cold run's printed output,
                                              the command, the machine and the date
  benchmarks/results/quickstart/ablation.json (--ablation) the warm run's wall times as
                                              shipped and without each of the program
                                              store and exit_now

``--from-results`` rebuilds the terminal table the README shows from ``results.csv``
alone (and checks it against the printed output kept in ``run.json``). ``--only cold``
(or ``warm``, ``smoke``) runs fewer.

  python benchmarks/quickstart_run.py                  # all four; a few minutes
  python benchmarks/quickstart_run.py --repeat 3       # three rounds, each run's median kept
  python benchmarks/quickstart_run.py --from-results   # the README's table, no training
  python benchmarks/quickstart_run.py --ablation 5     # warm: shipped / no program store /
                                                       # no exit_now, alternated 5 times
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, load_average, machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quickstart"
# The installed ``prerank-jax`` command's entry point (prerank_jax.cli:console_main).
CLI = [sys.executable, "-c", "from prerank_jax.cli import console_main; console_main()"]
# The ablation's variants of the warm quickstart: the command as shipped, and without each
# of the two things that a warm run's time owes to besides the compilation cache.
_VARIANT_CODE = """
import sys
from prerank_jax import cli
from prerank_jax.host import compile_cache
variant = sys.argv.pop(1)
if variant == "without the program store":
  compile_cache.enable_program_store = lambda folder: None
sys.argv[0] = "prerank-jax"
code = cli.main()
if variant == "without exit_now":
  sys.exit(code)
cli.exit_now(code)
"""
VARIANTS = ("as shipped", "without the program store", "without exit_now")


def _value(text: str):
  """A results.csv cell as the runner had it: int, float, or text ("" stays "")."""
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _children_cpu_s() -> float:
  """User + system CPU seconds of finished child processes: unlike the wall time, about
  the same on a shared machine as on an idle one."""
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def terminal_table(results_csv: Path) -> str:
  """The quickstart's terminal table, rebuilt from its ``results.csv``."""
  from prerank_jax.config_files import repo_config
  from prerank_jax.host import report
  with results_csv.open(newline="") as f:
    reader = csv.DictReader(f)
    columns = list(reader.fieldnames or [])
    rows = [{k: _value(v) for k, v in row.items()} for row in reader]
  config = repo_config("quickstart")
  shown = report.terminal_columns(columns, k=config.eval.k,
                                  keep_ratios=config.eval.keep_ratios, has_truth=True)
  return report.format_table(rows, shown)


def docs_output(stdout: str) -> str:
  """A kept run's printed output as the quickstart page shows it: the temporary run
  directory named ``runs/quickstart/`` (where the README's command writes) and the wall
  time on the last line left out (it is a property of the machine, measured here)."""
  text = re.sub(r"/\S*?/quickstart-[^/\s]+/run/", "runs/quickstart/", stdout)
  return re.sub(r"\) in [0-9.]+ s$", ") in … s", text.rstrip("\n"), flags=re.M)


def _run_once(args: list[str], cache: Path, keep: Path | None = None,
              cli: list[str] = CLI) -> dict:
  """One ``prerank-jax`` process with the compilation cache in ``cache``: its wall time,
  CPU seconds, load average before, the run's phase timings and its printed output;
  copies results.csv to ``keep`` when given."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env["PRERANK_JAX_CACHE_DIR"] = str(cache)
  with tempfile.TemporaryDirectory(prefix="quickstart-") as workdir:
    argv = [*args, f"--config.workdir={workdir}", "--config.name=run"]
    before = load_average()
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run([*cli, *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    if proc.returncode:
      raise SystemExit(f"prerank-jax {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    run_dir = Path(workdir) / "run"
    history = json.loads((run_dir / "history.json").read_text())
    if keep is not None:
      shutil.copy(run_dir / "results.csv", keep)
  phases = {k: round(v, 1) for k, v in history.get("timings", {}).items()}
  return {"args": args[1:], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
          "load_average_before": before, "phases_s": phases, "stdout": proc.stdout}


RUNS = {"cold": ("quickstart", False), "warm": ("quickstart", True),
        "smoke_cold": ("smoke", False), "smoke_warm": ("smoke", True)}


def measure(out: Path, extra: list[str], only: str = "", repeat: int = 1) -> dict:
  """Runs the quickstart cold and warm (and the smoke preset cold and warm), each in a
  fresh process, ``repeat`` rounds of the four one after another (each round with fresh
  caches); keeps, for each, the run of median wall time (with every round's wall time
  in ``wall_s_all``), and the cold run's results.csv and run.json."""
  out.mkdir(parents=True, exist_ok=True)
  rounds: dict[str, list[dict]] = {}
  for rnd in range(repeat):
    with tempfile.TemporaryDirectory(prefix="quickstart-xla-") as caches:
      for name, (preset, warm) in RUNS.items():
        if only and not name.startswith(only) and not (only == "warm" and name == "cold"):
          continue
        args = ["quickstart", *(["--config=configs/quickstart.py:smoke"] if preset == "smoke"
                                else []), *extra]
        cache = Path(caches) / preset
        if warm and not cache.exists():  # fill the cache first
          _run_once(args, cache)
        run = _run_once(args, cache, keep=(out / "results.csv") if name == "cold" and rnd == 0
                        else None)
        rounds.setdefault(name, []).append(run)
        print(f"round {rnd + 1}/{repeat} {name:10s} wall {run['wall_s']:6.1f} s  cpu "
              f"{run['cpu_s']:6.1f} s  load before {(run['load_average_before'] or ['?'])[0]}  "
              f"phases {run['phases_s']}", flush=True)
  runs = {}
  for name, done in rounds.items():
    ranked = sorted(done, key=lambda r: r["wall_s"])
    runs[name] = {**ranked[(len(ranked) - 1) // 2],
                  "wall_s_all": [r["wall_s"] for r in done]}  # lower median for even counts
  main_run = runs.get("cold") or next(iter(runs.values()))
  record = {"command": "prerank-jax quickstart", "args": main_run["args"],
            "wall_s": main_run["wall_s"], "cpu_s": main_run["cpu_s"],
            "load_average_before": main_run["load_average_before"], "machine": machine(),
            "runs": {k: {f: v for f, v in r.items() if f != "stdout"} for k, r in runs.items()},
            "stdout": main_run["stdout"]}
  if "cold" in runs:
    (out / "run.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
  return record


def ablation(out: Path, rounds: int) -> dict:
  """The warm quickstart as shipped, without the program store and without ``exit_now``,
  alternated ``rounds`` times on one warm cache (each variant first run once to fill it),
  so that the machine's drift falls on all three alike; kept in ``ablation.json``."""
  with tempfile.TemporaryDirectory(prefix="quickstart-xla-") as caches:
    cache = Path(caches) / "quickstart"
    cli = lambda variant: [sys.executable, "-c", _VARIANT_CODE, variant]
    for variant in VARIANTS:
      _run_once(["quickstart"], cache, cli=cli(variant))
    walls: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rnd in range(rounds):
      for variant in VARIANTS:
        run = _run_once(["quickstart"], cache, cli=cli(variant))
        walls[variant].append(run["wall_s"])
        print(f"round {rnd + 1}/{rounds} {variant:26s} wall {run['wall_s']:5.1f} s", flush=True)
  record = {"command": "prerank-jax quickstart, warm", "rounds": rounds, "machine": machine(),
            "variants": {v: {"wall_s_all": w, "wall_s_median": sorted(w)[(len(w) - 1) // 2]}
                         for v, w in walls.items()}}
  out.mkdir(parents=True, exist_ok=True)
  (out / "ablation.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
  return record


def describe_ablation(record: dict) -> str:
  shipped = record["variants"][VARIANTS[0]]["wall_s_median"]
  lines = [f"warm quickstart, {record['rounds']} alternated rounds ({describe(record['machine'])}):"]
  for variant, v in record["variants"].items():
    lines.append(f"  {variant:26s} median {v['wall_s_median']:5.1f} s "
                 f"(+{v['wall_s_median'] - shipped:.1f} s; rounds "
                 f"{', '.join(f'{w:.1f}' for w in v['wall_s_all'])})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--from-results", action="store_true",
                      help="rebuild the README's table from the kept results, no training")
  parser.add_argument("--only", choices=("cold", "warm", "smoke"), default="",
                      help="only these runs (warm runs cold first); results kept with cold")
  parser.add_argument("--repeat", type=int, default=1,
                      help="rounds of the four runs; each run kind keeps its median round")
  parser.add_argument("--ablation", type=int, default=0, metavar="ROUNDS",
                      help="instead: the warm run as shipped, without the program store and "
                           "without exit_now, alternated ROUNDS times (ablation.json)")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("overrides", nargs="*",
                      help="extra --config.x=y flags for the run (the README's run has none)")
  args = parser.parse_args(argv)
  out = Path(args.out)
  if args.ablation:
    print(describe_ablation(ablation(out, args.ablation)))
    return
  record = (json.loads((out / "run.json").read_text()) if args.from_results
            else measure(out, args.overrides, args.only, args.repeat))
  if "cold" not in record.get("runs", {"cold": 1}):
    return
  table = terminal_table(out / "results.csv")
  if table not in record["stdout"]:
    raise SystemExit(f"{out}/results.csv does not rebuild the table the run printed "
                     f"({out}/run.json 'stdout')")
  print(table)
  print(f"\n({describe(record['machine'])})")
  for name, run in record.get("runs", {"cold": record}).items():
    cpu = f", {run['cpu_s']:.0f} CPU-seconds" if "cpu_s" in run else ""
    rounds = (f" (median of {len(run['wall_s_all'])}: "
              f"{', '.join(f'{w:.1f}' for w in run['wall_s_all'])} s)"
              if len(run.get("wall_s_all", [])) > 1 else "")
    print(f"{name}: wall time {run['wall_s']:.0f} s{rounds}{cpu}, process start to exit; load "
          f"average before the run {(run['load_average_before'] or ['?'])[0]}")
  if args.from_results and (out / "ablation.json").exists():
    print(describe_ablation(json.loads((out / "ablation.json").read_text())))


if __name__ == "__main__":
  main()
