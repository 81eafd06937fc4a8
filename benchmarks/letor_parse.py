"""LETOR/LibSVM parsing speed: a generated file of MSLR-WEB's shape.

Writes ``--lines`` lines (default 1,000,000) shaped like MSLR-WEB's ``train.txt``: graded
labels 0-4, ``qid:`` (about 120 documents a query, queries contiguous), all 136 features
written as ``id:value`` (half integers, half decimals of 6 significant digits: about
1.3 KB a line), then times :func:`prerank_jax.data.letor.parse_file` (a uniform file
like this takes the column path: pyarrow's CSV reader in chunks, checks, grouping by
query; the timed call fails if it falls back to the line parser) on it, and the
line-by-line reference parser (``_parse_lines``, the fallback that names a bad line) on the
first ``--reference-lines`` lines, with the peak resident memory of the process. The two
parsers' results are compared on the reference slice.

Run:

  python benchmarks/letor_parse.py [--lines 1000000] [--reference-lines 50000]
      [--out benchmarks/results]

Expected runtime on a 2-core CPU: about 1-2 minutes (writing the 1.2 GB file included);
the file is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from prerank_jax.data import letor

ROOT = Path(__file__).resolve().parent.parent
NUM_FEATURES = 136


def write_mslr_like(path: Path, lines: int, *, seed: int = 0, block: int = 10_000) -> None:
  """MSLR-WEB-shaped lines; ``block`` distinct feature rows are reused with fresh labels and
  query ids (formatting numbers is what is slow in Python, not parsing them)."""
  rng = np.random.default_rng(seed)
  ints = rng.integers(0, 200, (block, NUM_FEATURES))
  decimals = np.round(rng.lognormal(0.0, 2.0, (block, NUM_FEATURES)), 6)
  is_int = rng.random(NUM_FEATURES) < 0.5
  rows = []
  for r in range(block):
    rows.append(" ".join(f"{j + 1}:{ints[r, j]}" if is_int[j] else f"{j + 1}:{decimals[r, j]:g}"
                         for j in range(NUM_FEATURES)))
  labels = rng.choice(5, size=lines, p=[0.52, 0.32, 0.13, 0.02, 0.01])
  sizes = rng.integers(60, 181, lines // 60 + 1)
  qid = np.repeat(np.arange(sizes.size), sizes)[:lines]
  with open(path, "w") as f:
    for start in range(0, lines, block):
      stop = min(lines, start + block)
      f.write("".join(f"{labels[i]} qid:{qid[i]} {rows[i - start]}\n"
                      for i in range(start, stop)))


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lines", type=int, default=1_000_000)
  parser.add_argument("--reference-lines", type=int, default=50_000)
  parser.add_argument("--keep", action="store_true")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  args = parser.parse_args()

  import sklearn
  with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "train.txt"
    t = time.perf_counter()
    write_mslr_like(path, args.lines)
    write_s = time.perf_counter() - t
    size = path.stat().st_size
    print(f"wrote {args.lines} lines, {size / 2**20:.0f} MiB in {write_s:.1f} s",
          file=sys.stderr, flush=True)
    rss0 = peak_rss_mib()
    line_parser = letor._parse_lines

    def refuse(*_):
      raise RuntimeError("the line parser was used: the compiled path refused the file")

    letor._parse_lines = refuse  # the timed call must take the compiled path
    try:
      t = time.perf_counter()
      parsed = letor.parse_file(path)
      parse_s = time.perf_counter() - t
    finally:
      letor._parse_lines = line_parser
    rss1 = peak_rss_mib()
    docs = sum(len(x) for x in parsed.labels)
    assert docs == args.lines and len(parsed.feature_ids) == NUM_FEATURES

    head = Path(tmp) / "head.txt"
    with open(path) as src, open(head, "w") as dst:
      for _, line in zip(range(args.reference_lines), src):
        dst.write(line)
    t = time.perf_counter()
    reference = letor._parse_lines(head, None)
    reference_s = time.perf_counter() - t
    fast = letor.parse_file(head)
    same = (fast.qids == reference.qids and all(
        np.array_equal(a, b) for a, b in zip(fast.features + fast.labels,
                                             reference.features + reference.labels)))
    if args.keep:
      kept = ROOT / "benchmarks" / "results" / "letor_parse_input.txt"
      path.replace(kept)

  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
      "machine": f"{platform.processor() or platform.machine()}, python "
                 f"{platform.python_version()}, scikit-learn {sklearn.__version__}",
      "load_average_1_5_15": list(__import__("os").getloadavg()),
      "lines": args.lines, "features": NUM_FEATURES, "queries": len(parsed.qids),
      "file_MiB": size / 2**20, "write_s": write_s,
      "parse_s": parse_s,
      "lines_per_s": args.lines / parse_s,
      "peak_rss_MiB_before_parse": rss0, "peak_rss_MiB_after_parse": rss1,
      "reference_lines": args.reference_lines, "reference_parse_s": reference_s,
      "reference_lines_per_s": args.reference_lines / reference_s,
      "reference_equal": bool(same),
      "target_s": 30.0, "target_met": parse_s < 30.0,
  }
  print(json.dumps(result, indent=1))
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "letor_parse.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
