"""Scoring throughput of exported students: candidates per second on this machine.

For every zoo student at its quickstart size, on the quickstart ("small") simulator's
feature sizes (8 context and 8 item features), it writes the student as an artifact
(``prerank_jax.host.artifact.write_artifact``: the same ``jax.export`` function
``prerank-jax export`` writes), loads it back as ``prerank-jax score`` does
(``load_artifact``: deserialised StableHLO, compiled for this CPU) and times
``artifact.score`` on a batch of 10,000 candidates: warm-up calls first (the compilation
is not timed), then ``--repeats`` timed calls; the median is reported with the 10th and
90th percentiles. Parameters are freshly initialised (the cost does not depend on their
values). Each call includes the host→device copy of the inputs and the copy of the scores
back, as in ``prerank-jax score``; the two-tower models run both towers per candidate (the
export scores rows; a cached item-embedding path is ``PureModel.score_cached``).

It also times ``prerank-jax score`` end to end (``score_file``: Parquet read in batches,
feature checks, scoring, Parquet write) on a 200,000-row table for ``mlp_student``.

A ``dssm`` over categorical IDs (RecFlow's DSSM sizes: 128-64-32 towers, d = 16; one user
ID, item/author/category IDs, a behaviour list of L = 20 item IDs, 100,003 hash buckets per
table) is timed the same way: ``artifact.score`` on 10,000 candidates with the ID arrays
already mapped, and ``score_file`` end to end on a 200,000-row table with string user IDs
(2,000 users), integer item IDs (about 180,000 distinct), string author and category IDs
and the behaviour list column, so the figure includes hashing the raw IDs.

  python benchmarks/scoring_throughput.py                 # about 1 minute on 2 cores
  python benchmarks/scoring_throughput.py --from-results  # print the kept table

Writes ``benchmarks/results/scoring_throughput.json`` (figures, settings, the machine, the
load average before and after: on a shared machine the load inflates every figure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, load_average, machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scoring_throughput.json"
FEATURES = {"context": 8, "items": 8, "cross": 8}   # PRESETS["small"]
BATCH = 10_000
END_TO_END_ROWS = 200_000

# (label, model name, options): the students of prerank_jax/models at quickstart sizes.
STUDENTS = [
    ("linear", "linear", {}),
    ("mlp_student 64-32", "mlp_student", {"hidden": (64, 32)}),
    ("mlp_student 64-32 + SE gate", "mlp_student", {"hidden": (64, 32), "se_gate": True}),
    ("two_tower D=16", "two_tower", {}),
    ("int_tower D=16 I=16", "int_tower", {}),
    ("dssm (float features, no ID vocabularies)", "dssm", {}),
]


def _artifact(folder: Path, name: str, options: dict, *, tag: str = ""):
  import jax

  from prerank_jax.host.artifact import write_artifact
  from prerank_jax.models import build_model, param_count

  model = build_model(name, feature_sizes=FEATURES, **options)
  params = model.init(jax.random.key(0))
  spec = {"kind": "arrays", "request_column": "request_id", "candidate_column": "",
          "context": [{"name": f"context_{i}", "transform": "raw"}
                      for i in range(FEATURES["context"])],
          "items": [{"name": f"items_{i}", "transform": "raw"}
                    for i in range(FEATURES["items"])]}
  path = write_artifact(folder / f"{name}{tag}", model=model, params=params, spec=spec, config={},
                        metrics={}, point=name, platforms=("cpu",), overwrite=True)
  return path, param_count(params)


ID_BUCKETS, ID_LENGTH = 100_003, 20
ID_OPTIONS = {"id_tower": (128, 64, 32), "id_embed_dim": 16, "context_vocab": (ID_BUCKETS,),
              "item_vocab": (ID_BUCKETS,) * 3}
ID_LABEL = "dssm 128-64-32 over IDs (1 user, 3 item ID fields, L=20 behaviour)"


def _id_artifact(folder: Path):
  """A dssm over IDs as a tabular artifact (hash map), and its parameter count."""
  import jax

  from prerank_jax.host.artifact import write_artifact
  from prerank_jax.models import build_model, param_count

  sizes = {**FEATURES, "context_ids": 1, "item_ids": 3, "sequence_ids": 1,
           "sequence_length": ID_LENGTH}
  model = build_model("dssm", feature_sizes=sizes, **ID_OPTIONS)
  params = model.init(jax.random.key(0))
  column = lambda name: {"name": name, "rows": ID_BUCKETS, "type": None}
  spec = {"kind": "tabular", "request_column": "request_id", "candidate_column": "",
          "context": [{"name": f"context_{i}", "transform": "raw"}
                      for i in range(FEATURES["context"])],
          "items": [{"name": f"items_{i}", "transform": "raw"}
                    for i in range(FEATURES["items"])],
          "ids": {"map": "hash", "buckets": ID_BUCKETS, "context": [column("user_id")],
                  "items": [column(c) for c in ("item_id", "author_id", "category_id")],
                  "sequence": [column("history")], "sequence_length": ID_LENGTH}}
  path = write_artifact(folder / "dssm_ids", model=model, params=params, spec=spec,
                        config={}, metrics={}, point="dssm_ids", platforms=("cpu",),
                        overwrite=True)
  return path, param_count(params)


def _timed(call, repeats: int, warmup: int) -> dict:
  for _ in range(warmup):
    call()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  q = np.percentile(times, [10, 90])
  median = statistics.median(times)
  return {"median_s": median, "p10_s": float(q[0]), "p90_s": float(q[1]),
          "candidates_per_s": BATCH / median}


def measure(repeats: int, warmup: int) -> dict:
  from prerank_jax.host.artifact import load_artifact
  from prerank_jax.host.scoring import score_file

  rng = np.random.default_rng(0)
  context = rng.normal(size=(BATCH, FEATURES["context"])).astype(np.float32)
  items = rng.normal(size=(BATCH, FEATURES["items"])).astype(np.float32)
  rows = []
  with tempfile.TemporaryDirectory(prefix="scoring-throughput-") as tmp:
    folder = Path(tmp)
    for label, name, options in STUDENTS:
      path, params = _artifact(folder, name, options, tag=str(len(rows)))
      art = load_artifact(path)
      for _ in range(warmup):
        art.score(context, items)
      times = []
      for _ in range(repeats):
        t0 = time.perf_counter()
        art.score(context, items)
        times.append(time.perf_counter() - t0)
      q = np.percentile(times, [10, 90])
      median = statistics.median(times)
      rows.append({"model": label, "name": name, "params": params, "batch": BATCH,
                   "median_s": median, "p10_s": float(q[0]), "p90_s": float(q[1]),
                   "candidates_per_s": BATCH / median})
      print(f"  {label}: {BATCH / median / 1e6:.2f} M candidates/s "
            f"(median {median * 1e3:.2f} ms per {BATCH:,})", flush=True)
    path, params = _id_artifact(folder)
    art = load_artifact(path)
    ids = {"context_ids": rng.integers(0, ID_BUCKETS, (BATCH, 1)),
           "item_ids": rng.integers(0, ID_BUCKETS, (BATCH, 3)),
           "sequence_ids": rng.integers(0, ID_BUCKETS, (BATCH, ID_LENGTH, 1)),
           "sequence_mask": rng.random((BATCH, ID_LENGTH)) < 0.8}
    row = _timed(lambda: art.score(context, items, ids), repeats, warmup)
    rows.append({"model": ID_LABEL, "name": "dssm", "params": params, "batch": BATCH, **row})
    print(f"  {ID_LABEL}: {row['candidates_per_s'] / 1e6:.2f} M candidates/s "
          f"(median {row['median_s'] * 1e3:.2f} ms per {BATCH:,})", flush=True)
    end_to_end = _end_to_end(folder, score_file)
    end_to_end_ids = _end_to_end_ids(folder, path, score_file)
  return {"rows": rows, "end_to_end": end_to_end, "end_to_end_ids": end_to_end_ids}


def _end_to_end_ids(folder: Path, path: Path, score_file) -> dict:
  import pyarrow as pa
  import pyarrow.parquet as pq

  rng = np.random.default_rng(2)
  n = END_TO_END_ROWS
  request = np.repeat(np.arange(n // 100), 100)
  users = rng.integers(0, 2000, n // 100)
  histories = [list(map(int, rng.integers(0, 10**6, rng.integers(0, 2 * ID_LENGTH))))
               for _ in range(n // 100)]
  columns = {"request_id": pa.array(request.astype(str)),
             "user_id": pa.array([f"user-{users[r]}" for r in request]),
             "item_id": pa.array(rng.integers(0, 10**6, n), pa.int64()),
             "author_id": pa.array([f"a{v}" for v in rng.integers(0, 20_000, n)]),
             "category_id": pa.array([f"c{v}" for v in rng.integers(0, 300, n)]),
             "history": pa.array([histories[r] for r in request], pa.list_(pa.int64()))}
  for group, width in (("context", 8), ("items", 8)):
    for i in range(width):
      columns[f"{group}_{i}"] = rng.normal(size=n)
  pq.write_table(pa.table(columns), folder / "id_candidates.parquet", row_group_size=50_000)
  score_file(path, folder / "id_candidates.parquet", folder / "warm_ids.parquet")
  t0 = time.perf_counter()
  summary = score_file(path, folder / "id_candidates.parquet", folder / "scores_ids.parquet")
  wall = time.perf_counter() - t0
  print(f"  score_file end to end ({ID_LABEL}, {n:,} Parquet rows, IDs hashed): "
        f"{n / wall / 1e6:.2f} M rows/s ({wall:.2f} s, artifact load included)", flush=True)
  return {"model": ID_LABEL, "rows": summary.rows, "wall_s": wall, "rows_per_s": n / wall}


def _end_to_end(folder: Path, score_file) -> dict:
  import pyarrow as pa
  import pyarrow.parquet as pq

  path, _ = _artifact(folder, "mlp_student", {"hidden": (64, 32)}, tag="e2e")
  rng = np.random.default_rng(1)
  n = END_TO_END_ROWS
  columns = {"request_id": pa.array(np.repeat(np.arange(n // 100), 100).astype(str))}
  for group, width in (("context", 8), ("items", 8)):
    for i in range(width):
      columns[f"{group}_{i}"] = rng.normal(size=n)
  pq.write_table(pa.table(columns), folder / "candidates.parquet", row_group_size=50_000)
  score_file(path, folder / "candidates.parquet", folder / "warm.parquet")  # compile once
  t0 = time.perf_counter()
  summary = score_file(path, folder / "candidates.parquet", folder / "scores.parquet")
  wall = time.perf_counter() - t0
  print(f"  score_file end to end (mlp_student 64-32, {n:,} Parquet rows): "
        f"{n / wall / 1e6:.2f} M rows/s ({wall:.2f} s, artifact load included)", flush=True)
  return {"model": "mlp_student 64-32", "rows": summary.rows, "wall_s": wall,
          "rows_per_s": n / wall}


def markdown(results: dict) -> str:
  """The kept results as a Markdown table (for docs/guides/export_and_serve.md)."""
  lines = ["| student | params | candidates/s (median) | ms per 10,000 (p10–p90) |",
           "|---|---:|---:|---:|"]
  for r in results["rows"]:
    lines.append(f"| {r['model']} | {r['params']:,} | {r['candidates_per_s'] / 1e6:.2f} M | "
                 f"{r['median_s'] * 1e3:.2f} ({r['p10_s'] * 1e3:.2f}–{r['p90_s'] * 1e3:.2f}) |")
  e = results["end_to_end"]
  lines.append(f"\n`prerank-jax score` end to end ({e['model']}, {e['rows']:,} Parquet rows, "
               f"artifact loading included): {e['wall_s']:.2f} s, "
               f"{e['rows_per_s'] / 1e6:.2f} M rows/s.")
  e = results.get("end_to_end_ids")
  if e:
    lines.append(f"With IDs ({e['model']}, {e['rows']:,} Parquet rows, raw IDs hashed): "
                 f"{e['wall_s']:.2f} s, {e['rows_per_s'] / 1e6:.2f} M rows/s.")
  lines.append(f"Machine: {describe(results['machine'])}; load average before/after: "
               f"{results['load_before'][0] if results.get('load_before') else '?'}/"
               f"{results['load_after'][0] if results['load_after'] else '?'}.")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=30)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--from-results", action="store_true",
                      help="print the kept results, run nothing")
  args = parser.parse_args()
  if args.from_results:
    print(markdown(json.loads(RESULTS.read_text())))
    return
  before = load_average()
  print(f"machine: {describe(machine())}")
  results = measure(args.repeats, args.warmup)
  results.update({"machine": machine(), "load_before": before, "load_after": load_average(),
                  "settings": {"batch": BATCH, "repeats": args.repeats, "warmup": args.warmup,
                               "features": FEATURES, "end_to_end_rows": END_TO_END_ROWS},
                  "command": "python benchmarks/scoring_throughput.py"})
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(results, indent=1) + "\n")
  print()
  print(markdown(results))
  print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
  main()
