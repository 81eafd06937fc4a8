"""Host memory of a RecFlow run with its train split in memory or left in its records.

Writes a RecFlow-shaped world (``experiments/recflow_world.py``, ``--days`` days of
``--requests`` requests, 120 candidates each), prepares RecFlow's coarse protocol on all
but its last day (``configs/recflow.py:coarse,world`` with the train days widened), then
runs the same sweep twice through the CLI, each in a fresh process:
``streaming.read_from="memory"`` (the loader reads the whole train split into host memory;
grain streams it from there) and ``"records"`` (the train split stays in its ArrayRecord
files: host memory holds its valid mask and the teacher's scores). Recorded per run: wall
and CPU time and the child's peak resident memory (``ru_maxrss`` from ``os.wait4``; on
CPU the device arrays are host memory too, so this is everything), and the two runs'
test metrics, which must be equal (the same batches in the same order).

Run:

  python benchmarks/records_memory.py [--days 13] [--requests 2000] [--epochs 2]
      [--out benchmarks/results/records_memory.json]

Expected runtime on the 2-core CPU: about 2 minutes to write the world, 2 to prepare it,
then a few minutes a run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("recflow_recall@50", "recflow_recall@100", "ndcg@10")


def _child(cmd: list[str]) -> tuple[float, "os.struct_rusage"]:
  print("+", " ".join(cmd), flush=True)
  start = time.perf_counter()
  child = subprocess.Popen(cmd, cwd=ROOT)
  _, status, usage = os.wait4(child.pid, 0)
  code = os.waitstatus_to_exitcode(status)
  if code:
    raise SystemExit(f"exited with {code}: {' '.join(cmd)}")
  return time.perf_counter() - start, usage


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--days", type=int, default=13)
  parser.add_argument("--requests", type=int, default=2000, help="a day")
  parser.add_argument("--epochs", type=int, default=2, help="teacher's and students'")
  parser.add_argument("--world", default="", help="reuse (or keep) the world here")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                           "records_memory.json"))
  args = parser.parse_args(argv)
  tmp = Path(tempfile.mkdtemp(prefix="records-memory-"))
  world = Path(args.world) if args.world else tmp / "world"
  first = datetime.date(2024, 1, 13)
  last_train = first + datetime.timedelta(days=args.days - 2)
  test_day = first + datetime.timedelta(days=args.days - 1)
  if not (world / "others" / "id_cnt.pkl").exists():
    _child([sys.executable, str(ROOT / "experiments" / "recflow_world.py"), "--out", str(world),
            "--days", str(args.days), "--requests", str(args.requests)])
  overrides = [
      f"--config.source.manual_dir={world}", f"--config.source.data_dir={world / 'tfds'}",
      f"--config.source.recflow_train_days={first}:{last_train}",
      f"--config.source.recflow_test_day={test_day}",
      f"--config.teacher.num_epochs={args.epochs}", "--config.teacher.epochs_per_chunk=1",
      f"--config.student.num_epochs={args.epochs}", "--config.student.epochs_per_chunk=1",
      "--config.wandb.mode=disabled", "--config.progress=False"]
  config = f"--config={ROOT / 'configs' / 'recflow.py'}:coarse,world"
  prepare_s, _ = _child([sys.executable, "-m", "prerank_jax.data", config, *overrides])
  runs = {}
  for read_from in ("memory", "records"):
    wall, usage = _child([sys.executable, "-m", "prerank_jax.cli", "sweep", config,
                          *overrides, f"--config.streaming.read_from={read_from}",
                          f"--config.workdir={tmp / 'runs'}", f"--config.name={read_from}"])
    with open(tmp / "runs" / read_from / "results.csv") as f:
      rows = {r["model"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}
    runs[read_from] = {"wall_s": round(wall, 1),
                       "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                       "peak_rss_MiB": round(usage.ru_maxrss / 1024, 1), "results": rows}
  same = runs["memory"]["results"] == runs["records"]["results"]
  train_files = sorted((world / "tfds").rglob("*-train.array_record-*"))
  out = {"machine": machine(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
         "command": " ".join(["python", "benchmarks/records_memory.py", *(argv or sys.argv[1:])]),
         "days": args.days, "requests_per_day": args.requests, "epochs": args.epochs,
         "train_records_MiB": round(sum(f.stat().st_size for f in train_files) / 2**20, 1),
         "prepare_s": round(prepare_s, 1), "runs": runs, "same_results": same}
  Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
  for name, r in runs.items():
    print(f"{name:8s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
          f"peak RSS {r['peak_rss_MiB']:8.1f} MiB")
  if not same:
    raise SystemExit("the two runs' results differ")


if __name__ == "__main__":
  main()
