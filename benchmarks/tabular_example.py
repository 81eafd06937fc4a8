"""The README's bring-your-own-data example, end to end, timed.

Takes the README's example code (the ```python block of "## Data" that writes
``logs.parquet``) as written, runs it in a temporary folder, then runs the README's
commands in fresh processes:

  smoke   prerank-jax sweep --config=configs/tabular.py:smoke ...   (prepares the table)
  full    prerank-jax sweep --config=configs/tabular.py ...         (the prepared table)

Each wall time is process start to exit (imports, preparation where it happens and
compilation included). Raw results: ``benchmarks/results/tabular_example.json`` (times,
the commands, the runs' result tables, the machine, the date, the load average).

  python benchmarks/tabular_example.py                  # about 1 minute on 2 idle cores
  python benchmarks/tabular_example.py --from-results   # the README's figures, no running
"""

from __future__ import annotations

import argparse
import json
import resource
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, load_average, machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tabular_example.json"
CLI = [sys.executable, "-c", "import sys; from prerank_jax.cli import main; sys.exit(main())"]
MARKER = "# One row per (request, candidate)"


def readme_example(readme: Path = ROOT / "README.md") -> str:
  """The README's example code that writes ``logs.parquet`` (the ```python block that
  starts with ``MARKER``)."""
  for block in re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.S):
    if block.startswith(MARKER):
      return block
  raise ValueError(f"{readme}: no ```python block starting with {MARKER!r}")


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: Path) -> tuple[float, float, str]:
  """``(wall s, CPU s, stdout)`` of one CLI call in a fresh process."""
  cpu0 = _children_cpu_s()
  t0 = time.perf_counter()
  proc = subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode:
    raise SystemExit(f"prerank-jax {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
  return wall, _children_cpu_s() - cpu0, proc.stdout


def measure() -> dict:
  runs = []
  with tempfile.TemporaryDirectory(prefix="tabular-example-") as tmp:
    folder = Path(tmp)
    code = readme_example()
    (folder / "make_table.py").write_text(code)
    subprocess.run([sys.executable, "make_table.py"], cwd=folder, check=True)
    common = ["--config.source.manual_dir=.", "--config.source.train_file=logs.parquet",
              f"--config.source.data_dir={folder / 'tfds'}", f"--config.workdir={folder}"]
    for name, config in (("smoke", "configs/tabular.py:smoke"), ("full", "configs/tabular.py")):
      args = ["sweep", f"--config={ROOT / config}", f"--config.name={name}", *common]
      before = load_average()
      wall, cpu, stdout = timed(args, folder)
      runs.append({"name": name, "command": f"prerank-jax sweep --config={config} "
                   "--config.source.manual_dir=. --config.source.train_file=logs.parquet",
                   "prepares": name == "smoke", "wall_s": round(wall, 1),
                   "cpu_s": round(cpu, 1),
                   "load_average_before": before,
                   "results_md": (folder / name / "results.md").read_text(),
                   "stdout": stdout})
      print(f"{name}: {wall:.1f} s", flush=True)
  return {"example_code": code, "machine": machine(), "runs": runs}


def summary(record: dict) -> str:
  lines = [f"README example table (300 requests × 40 candidates), "
           f"{describe(record['machine'])}:"]
  for r in record["runs"]:
    lines.append(f"- `{r['command']}`: {r['wall_s']:.0f} s end to end, "
                 f"{r['cpu_s']:.0f} CPU-seconds "
                 f"({'preparing the table included' if r['prepares'] else 'table prepared'}; "
                 f"load average before {(r['load_average_before'] or ['?'])[0]})")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--from-results", action="store_true",
                      help="print the README's figures from --out, no running")
  parser.add_argument("--out", default=str(RESULTS))
  args = parser.parse_args(argv)
  out = Path(args.out)
  if args.from_results:
    record = json.loads(out.read_text())
    if record["example_code"] != readme_example():
      print("note: the README's example code changed since these results were taken")
  else:
    record = measure()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
  print(summary(record))


if __name__ == "__main__":
  main()
