"""The README's quickstart table and its wall time, measured.

Runs the README's command, ``prerank-jax quickstart`` (the "small" simulator, the teacher,
the 3×3 (T, α) sweep plus the gt-only student, evaluation), in a fresh process with a
temporary work directory, and keeps what it produced:

  benchmarks/results/quickstart/results.csv   the run's full result table (39 columns)
  benchmarks/results/quickstart/run.json      wall time (process start to exit, compilation
                                              included), the printed output, the command,
                                              the machine, the date and the load average

``--from-results`` rebuilds the terminal table the README shows from ``results.csv``
alone (and checks it against the printed output kept in ``run.json``).

  python benchmarks/quickstart_run.py                  # about 35 s on an idle 2-core CPU
  python benchmarks/quickstart_run.py --from-results   # the README's table, no training
"""

from __future__ import annotations

import argparse
import csv
import json
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
CLI = [sys.executable, "-c", "import sys; from prerank_jax.cli import main; sys.exit(main())"]


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


def measure(out: Path, extra: list[str]) -> dict:
  """Runs the quickstart once in a fresh process; keeps results.csv and run.json."""
  out.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="quickstart-") as workdir:
    args = ["quickstart", f"--config.workdir={workdir}", *extra]
    before = load_average()
    cpu0 = _children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu_s() - cpu0
    if proc.returncode:
      raise SystemExit(f"prerank-jax {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    shutil.copy(Path(workdir) / "quickstart" / "results.csv", out / "results.csv")
  record = {"command": "prerank-jax quickstart", "args": args[2:], "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "load_average_before": before, "machine": machine(), "stdout": proc.stdout}
  (out / "run.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
  return record


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--from-results", action="store_true",
                      help="rebuild the README's table from the kept results, no training")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("overrides", nargs="*",
                      help="extra --config.x=y flags for the run (the README's run has none)")
  args = parser.parse_args(argv)
  out = Path(args.out)
  record = (json.loads((out / "run.json").read_text()) if args.from_results
            else measure(out, args.overrides))
  table = terminal_table(out / "results.csv")
  if table not in record["stdout"]:
    raise SystemExit(f"{out}/results.csv does not rebuild the table the run printed "
                     f"({out}/run.json 'stdout')")
  print(table)
  cpu = f", {record['cpu_s']:.0f} CPU-seconds" if "cpu_s" in record else ""
  print(f"\nwall time {record['wall_s']:.0f} s{cpu}, compilation included "
        f"({describe(record['machine'])}; load average before the run "
        f"{(record['load_average_before'] or ['?'])[0]})")


if __name__ == "__main__":
  main()
