"""Soak: a long sweep checkpointing about every minute, SIGKILLed and resumed 3 times.

Checks what a long run survives (issue 12): resident memory stays flat (the slope of RSS
over time, per process), nothing is lost (every epoch of every point is in the final
history) and the result equals an uninterrupted run's bit for bit (``results.csv``,
``scores.parquet`` with every candidate's score, the per-epoch histories).

Steps, each a ``prerank-jax quickstart`` process (the quickstart sweep: 10 points on the
"small" simulator, teacher 2 epochs) sampled for RSS (``/proc/<pid>/status``) every 0.5 s:

  1. calibrate (unless ``--epoch-seconds`` is given): a 2-epoch run; seconds per student
     epoch from its checkpoint times;
  2. reference: ``student.num_epochs`` chosen so that training lasts ``--minutes``, with
     ``checkpoint_every`` chosen so a checkpoint is written every ``--checkpoint-seconds``;
     uninterrupted, in its own process alongside step 3;
  3. soak: the same config, SIGKILLed 3 times, each a random delay (up to one checkpoint
     interval, drawn by ``--seed``) after the checkpoint that ends the first, second and
     third quarter of the training, resumed with ``--resume`` after each, until it finishes.

  python benchmarks/soak.py [--minutes 30] [--checkpoint-seconds 60] [--seed 0]
      [--config configs/quickstart.py:full] [--epoch-seconds S]
  python benchmarks/soak.py --table        # the README table from the results file
  python benchmarks/soak.py --reference-only --minutes 2 ...   # step 2 alone: the RSS
      slope of one uninterrupted process, no kills (a short check on a busy machine)

Writes ``benchmarks/results/soak.json`` (``--out``). Expected runtime: about the minutes
plus the calibration and one start-up (data, compilation, teacher restore) per segment; on
this 2-core machine under load, about a minute per start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.machine import describe, machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "soak.json"


CONFIG = "configs/quickstart.py:full"  # --config; e.g. configs/quickstart.py:smoke (tiny data)


def _args(workdir: Path, name: str, epochs: int, every: int) -> list[str]:
  return [sys.executable, "-m", "prerank_jax.cli", "quickstart",
          f"--config={CONFIG}", f"--config.workdir={workdir}",
          f"--config.name={name}", "--config.progress=False", "--config.wandb.mode=disabled",
          "--config.teacher.num_epochs=2", f"--config.student.num_epochs={epochs}",
          f"--config.checkpoint_every={every}"]


def _rss_mb(pid: int) -> float | None:
  try:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  except OSError:
    return None
  return None


def _student_steps(run_dir: Path) -> dict[int, float]:
  """``{chunk: mtime}`` of the finished student checkpoints."""
  d = run_dir / "checkpoints" / "student"
  if not d.exists():
    return {}
  return {int(p.name): p.stat().st_mtime for p in d.iterdir()
          if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists()}


def _segment(cmd: list[str], env: dict, run_dir: Path, *, kill_at: int | None = None,
             kill_after_s: float = 0.0, log: Path) -> dict:
  """Runs one process, sampling its RSS; with ``kill_at``, SIGKILLs it ``kill_after_s``
  seconds after its student checkpoints reach chunk ``kill_at``."""
  before = set(_student_steps(run_dir))
  t0 = time.time()
  samples, first_new, last_new, reached, killed = [], None, None, None, False
  seen = set(before)
  with open(log, "w") as out:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    while proc.poll() is None:
      rss = _rss_mb(proc.pid)
      now = time.time() - t0
      if rss is not None:
        samples.append((round(now, 2), round(rss, 1)))
      steps = set(_student_steps(run_dir))
      if steps - seen:
        first_new = now if first_new is None else first_new
        last_new, seen = now, seen | steps
      if kill_at is not None and reached is None and max(steps, default=0) >= kill_at:
        reached = now
      if reached is not None and now >= reached + kill_after_s:
        proc.send_signal(signal.SIGKILL)
        killed = True
        proc.wait()
        break
      time.sleep(0.5)
  steps = _student_steps(run_dir)
  return {"returncode": proc.returncode, "killed": killed, "seconds": round(time.time() - t0, 1),
          "first_student_checkpoint_s": first_new, "last_student_checkpoint_s": last_new,
          "latest_checkpoint": max(steps, default=0),
          "rss": samples}


def _slope(samples: list, start_s: float | None, end_s: float | None) -> dict:
  """RSS while the process trains students (from its first to its last new student
  checkpoint; start-up, compilation and the evaluation are left out): least squares slope
  in MB per minute, first/last/max MB."""
  pts = [(t, m) for t, m in samples
         if start_s is not None and end_s is not None and start_s <= t <= end_s]
  if len(pts) < 3:
    return {"n": len(pts)}
  t, m = (np.array(x, float) for x in zip(*pts))
  slope = float(np.polyfit(t / 60.0, m, 1)[0])
  return {"n": len(pts), "minutes": round((t[-1] - t[0]) / 60, 2), "first_mb": m[0],
          "last_mb": m[-1], "max_mb": float(m.max()), "slope_mb_per_min": round(slope, 2)}


def _same(a: Path, b: Path) -> dict:
  ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
  return {"results.csv": (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes(),
          "scores.parquet": (a / "scores.parquet").read_bytes()
          == (b / "scores.parquet").read_bytes(),
          "history": all(ha[k] == hb[k] for k in ("teacher", "students", "teacher_scores"))}


def _epochs_complete(run_dir: Path, epochs: int) -> bool:
  """Every point's history (``{point: {metric: [per epoch]}}``) has every epoch."""
  students = json.loads((run_dir / "history.json").read_text())["students"]
  return bool(students) and all(len(values) == epochs for point in students.values()
                                for values in point.values())


def soak(minutes: float, checkpoint_seconds: float, seed: int, out: Path,
         epoch_s: float | None = None) -> dict:
  rng = random.Random(seed)
  work = Path(tempfile.mkdtemp(prefix="prerank-soak-"))
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(work / "xla_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  print(f"soak: working in {work}", flush=True)

  calibrated = epoch_s is None
  if calibrated:
    calib = _segment(_args(work, "calibrate", 2, 1), env, work / "calibrate",
                     log=work / "calibrate.log")
    assert calib["returncode"] == 0, (work / "calibrate.log").read_text()[-3000:]
    times = _student_steps(work / "calibrate")
    epoch_s = max(times[2] - times[1], 0.1)
  epochs = max(8, int(round(minutes * 60 / epoch_s)))
  every = max(1, int(round(checkpoint_seconds / epoch_s)))
  print(f"soak: {epoch_s:.1f} s per student epoch -> {epochs} epochs, a checkpoint every "
        f"{every} epochs", flush=True)

  # The reference runs alongside the soak (its own process; RSS is per process).
  ref: dict = {}
  reference = threading.Thread(target=lambda: ref.update(_segment(
      _args(work, "reference", epochs, every), env, work / "reference",
      log=work / "reference.log")))
  reference.start()
  segments = []
  cmd = _args(work, "soak", epochs, every)
  for i in range(3):  # after the checkpoint ending each of the first three quarters
    kill_at = max(every, (epochs * (i + 1) // 4) // every * every)
    kill_after = rng.uniform(0.0, 1.0) * every * epoch_s  # up to one checkpoint interval
    seg = _segment(cmd + (["--resume"] if i else []), env, work / "soak", kill_at=kill_at,
                   kill_after_s=kill_after, log=work / f"soak{i}.log")
    seg["kill_after_checkpoint"] = [kill_at, round(kill_after, 1)]
    segments.append(seg)
    print(f"soak: segment {i}: killed={seg['killed']} at checkpoint "
          f"{seg['latest_checkpoint']} after {seg['seconds']} s", flush=True)
  last = _segment(cmd + ["--resume"], env, work / "soak", log=work / "soak3.log")
  assert last["returncode"] == 0, (work / "soak3.log").read_text()[-3000:]
  segments.append(last)
  reference.join()
  assert ref["returncode"] == 0, (work / "reference.log").read_text()[-3000:]

  report = {
      "machine": machine(), "command": " ".join(sys.argv), "minutes": minutes,
      "checkpoint_seconds": checkpoint_seconds, "seed": seed,
      "config": f"{CONFIG}, teacher.num_epochs=2",
      "student_epoch_s": round(epoch_s, 2), "student_epochs": epochs,
      "epoch_s_calibrated": calibrated,
      "checkpoint_every": every,
      "reference": {"seconds": ref["seconds"],
                    "rss": _slope(ref["rss"], ref["first_student_checkpoint_s"],
                                  ref["last_student_checkpoint_s"])},
      "segments": [{"killed": s["killed"], "seconds": s["seconds"],
                    "latest_checkpoint": s["latest_checkpoint"],
                    "kill_after_checkpoint": s.get("kill_after_checkpoint"),
                    "rss": _slope(s["rss"], s["first_student_checkpoint_s"],
                                  s["last_student_checkpoint_s"]),
                    "rss_whole_process_max_mb": max((m for _, m in s["rss"]), default=None)}
                   for s in segments],
      "kills": sum(s["killed"] for s in segments),
      "identical_to_reference": _same(work / "soak", work / "reference"),
      "every_epoch_in_history": _epochs_complete(work / "soak", epochs),
      "raw_rss": {"reference": ref["rss"], "segments": [s["rss"] for s in segments]},
  }
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1))
  print(f"soak: wrote {out}", flush=True)
  return report


def reference_only(minutes: float, checkpoint_seconds: float, out: Path,
                   epoch_s: float) -> dict:
  """Step 2 alone: one uninterrupted process trained for ``minutes``, its RSS slope while
  it trains students, and the size of each student checkpoint step on disk (which must
  not grow with the epoch count). No calibration, no kills."""
  work = Path(tempfile.mkdtemp(prefix="prerank-soak-"))
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(work / "xla_cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  epochs = max(8, int(round(minutes * 60 / epoch_s)))
  every = max(1, int(round(checkpoint_seconds / epoch_s)))
  print(f"soak (reference only): {epochs} epochs, a checkpoint every {every}; in {work}",
        flush=True)
  ref = _segment(_args(work, "reference", epochs, every), env, work / "reference",
                 log=work / "reference.log")
  assert ref["returncode"] == 0, (work / "reference.log").read_text()[-3000:]
  steps = work / "reference" / "checkpoints" / "student"
  sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
           for p in sorted(steps.iterdir(), key=lambda p: p.name) if p.name.isdigit()}
  report = {"machine": machine(), "command": " ".join(sys.argv), "minutes": minutes,
            "mode": "reference only", "config": f"{CONFIG}, teacher.num_epochs=2",
            "student_epoch_s": epoch_s, "student_epochs": epochs, "checkpoint_every": every,
            "reference": {"seconds": ref["seconds"],
                          "rss": _slope(ref["rss"], ref["first_student_checkpoint_s"],
                                        ref["last_student_checkpoint_s"])},
            "checkpoint_step_bytes": sizes, "raw_rss": {"reference": ref["rss"]}}
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1))
  print(f"soak: wrote {out}\n" + json.dumps({k: report[k] for k in (
      "reference", "checkpoint_step_bytes")}), flush=True)
  return report


def table(report: dict) -> str:
  """The README's table (markdown) from a soak report."""
  rows = ["| process | ran (s) | killed | checkpoint reached | RSS while training: first → "
          "last (max) MB | RSS slope while training (MB/min) |", "|---|---|---|---|---|---|"]
  fmt = lambda r: (f"{r['first_mb']:.0f} → {r['last_mb']:.0f} ({r['max_mb']:.0f})"
                   if "first_mb" in r else "–", r.get("slope_mb_per_min", "–"))
  ref = report["reference"]
  rows.append(f"| uninterrupted reference | {ref['seconds']} | no | {report['student_epochs']}"
              f" epochs | {fmt(ref['rss'])[0]} | {fmt(ref['rss'])[1]} |")
  for i, s in enumerate(report["segments"]):
    rows.append(f"| soak segment {i + 1} | {s['seconds']} | {'yes' if s['killed'] else 'no'} "
                f"| {s['latest_checkpoint']} | {fmt(s['rss'])[0]} | {fmt(s['rss'])[1]} |")
  same = report["identical_to_reference"]
  return "\n".join(rows) + (
      f"\n\n{report['minutes']} min of training requested ({report['student_epochs']} student"
      f" epochs at {report['student_epoch_s']} s, a checkpoint every "
      f"{report['checkpoint_every']} epochs), {report['kills']} SIGKILLs; identical to the "
      f"reference: results.csv {same['results.csv']}, scores.parquet "
      f"{same['scores.parquet']}, histories {same['history']}; every epoch in the history: "
      f"{report['every_epoch_in_history']}. {describe(report['machine'])}.")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--minutes", type=float, default=30.0,
                      help="training time of the uninterrupted run (default 30)")
  parser.add_argument("--checkpoint-seconds", type=float, default=60.0)
  parser.add_argument("--seed", type=int, default=0, help="draws the kill moments")
  parser.add_argument("--epoch-seconds", type=float, default=None,
                      help="seconds per student epoch; measured by a 2-epoch run if unset")
  parser.add_argument("--config", default=CONFIG,
                      help="the quickstart config file (default: its full size, the 'small' "
                           "simulator)")
  parser.add_argument("--out", type=Path, default=RESULTS)
  parser.add_argument("--reference-only", action="store_true",
                      help="run only the uninterrupted process (needs --epoch-seconds)")
  parser.add_argument("--table", action="store_true",
                      help="print the README table from --out and exit")
  args = parser.parse_args()
  global CONFIG
  CONFIG = args.config
  if args.table:
    print(table(json.loads(args.out.read_text())))
    return
  if args.reference_only:
    if args.epoch_seconds is None:
      parser.error("--reference-only needs --epoch-seconds")
    reference_only(args.minutes, args.checkpoint_seconds, args.out, args.epoch_seconds)
    return
  report = soak(args.minutes, args.checkpoint_seconds, args.seed, args.out, args.epoch_seconds)
  print(table(report))
  if not (all(report["identical_to_reference"].values()) and report["every_epoch_in_history"]
          and report["kills"] == 3):
    sys.exit(1)


if __name__ == "__main__":
  main()
