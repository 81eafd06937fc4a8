"""Long lists end to end: ``configs/large_lists.py`` run through the CLI, peak memory recorded.

Each preset (``large``: lists of 1,000 candidates; ``xlarge``: 5,000) is run once as a
separate ``prerank-jax sweep`` process (simulate → teacher → students through the grain
streaming pipeline → evaluation → results), with the request counts cut to what a 2-core
CPU does in minutes (``--requests``; the list length, which is the point, is kept). The
script records for each run its wall time, the process's peak resident memory
(``ru_maxrss`` of that child from ``os.wait4``: on CPU the "device" arrays are host memory
too, so this is everything), the size of the simulated splits and the students' results.

Run:

  python benchmarks/large_lists.py [--presets large xlarge] [--requests large=1000:200 ...]
      [--override=--config.teacher.batch_size=8 ...] [--out benchmarks/results/large_lists.json]

Expected runtime on a shared 2-core CPU: about 5–10 minutes per preset at the default
request counts.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# train requests : valid/test requests per preset, cut from the presets' 20,000/1,000 and
# 4,000/500 so that each run fits in minutes on 2 cores.
DEFAULT_REQUESTS = {"large": (1000, 200), "xlarge": (200, 40)}
FIELDS_PER_CANDIDATE = 6  # label, exposed, valid, true_relevance, propensity, exposure_propensity


def split_bytes(requests: int, preset: dict) -> int:
  """Host bytes of a simulated split (4 bytes a value, masks counted as 4 as well)."""
  n = preset["list_size"]
  per_request = preset["context_features"] + n * (
      preset["item_features"] + preset["cross_features"] + FIELDS_PER_CANDIDATE)
  return 4 * requests * per_request


def run_preset(name: str, train: int, evaluate: int, workdir: Path,
               overrides: tuple[str, ...] = ()) -> dict:
  """Runs one preset through the CLI (plus ``overrides``, e.g.
  ``--config.teacher.batch_size=8``); returns its measurements."""
  cmd = [sys.executable, "-m", "prerank_jax.cli", "sweep",
         f"--config={ROOT / 'configs' / 'large_lists.py'}:{name}",
         f"--config.data.num_requests={train}", f"--config.data.num_eval_requests={evaluate}",
         f"--config.workdir={workdir}", f"--config.name=lists_{name}",
         "--config.wandb.mode=disabled", "--config.progress=False", *overrides]
  print("+", " ".join(cmd), flush=True)
  start = time.perf_counter()
  child = subprocess.Popen(cmd, cwd=ROOT)
  _, status, usage = os.wait4(child.pid, 0)
  wall = time.perf_counter() - start
  code = os.waitstatus_to_exitcode(status)
  if code:
    raise SystemExit(f"{name}: prerank-jax sweep exited with {code}")
  with open(workdir / f"lists_{name}" / "results.csv") as f:
    rows = list(csv.DictReader(f))
  return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1),
          "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
          "peak_rss_MiB": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
          "train_requests": train, "eval_requests": evaluate, "results": rows}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", nargs="+", default=["large", "xlarge"],
                      choices=sorted(DEFAULT_REQUESTS))
  parser.add_argument("--requests", nargs="*", default=[],
                      help="per preset 'name=train:eval' request counts")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "large_lists.json"))
  parser.add_argument("--override", action="append", default=[],
                      help="a --config.<field>=<value> passed to every run (repeatable)")
  args = parser.parse_args(argv)
  import jax

  from prerank_jax.data.simulator import PRESETS

  requests = dict(DEFAULT_REQUESTS)
  for item in args.requests:
    name, _, counts = item.partition("=")
    train, _, evaluate = counts.partition(":")
    requests[name] = (int(train), int(evaluate))
  out = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                     "cpus": os.cpu_count(), "python": platform.python_version(),
                     "jax": jax.__version__, "backend": jax.default_backend()},
         "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "runs": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.presets:
      train, evaluate = requests[name]
      preset = PRESETS[name]
      run = run_preset(name, train, evaluate, Path(tmp), tuple(args.override))
      run["list_size"] = preset["list_size"]
      run["preset_requests"] = [preset["num_requests"], preset["num_eval_requests"]]
      run["simulated_MiB"] = round(
          (split_bytes(train, preset) + 2 * split_bytes(evaluate, preset)) / 2**20, 1)
      out["runs"][name] = run
      print(json.dumps({k: v for k, v in run.items() if k != "results"}), flush=True)
  Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
