"""Model zoo costs: parameters, FLOPs per candidate, and measured scoring latency.

For every registered student and teacher at its quickstart size, on the quickstart
("small") simulator's feature sizes (8 context, 8 item, 8 cross features), it reports:

  - parameter count;
  - FLOPs per candidate from XLA's cost analysis of the compiled scoring function, for one
    request of 1,000 candidates (a two-tower's context tower is amortised over them);
  - the latency of scoring one request of N = 100, 1,000 and 10,000 candidates on this
    machine (jit-compiled, warmed up, median of repeats), and the throughput in
    candidates per second at N = 10,000;
  - ratios to the quickstart teacher (mlp_teacher 256-256-128).

Two-tower models appear twice: the full forward (both towers), and the cached serving path
(item embeddings computed beforehand; the request costs the context tower plus one
matrix–vector product, and int_tower's interaction head).

  python benchmarks/model_costs.py [--out benchmarks/results] [--repeats 20]

Expected runtime on a 2-core CPU: about 1 minute. Writes ``<out>/model_costs.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import jax

from prerank_jax.models import build_model, param_count
from prerank_jax.models.cost import flops_per_candidate, measure_scoring, request_batch

FEATURES = {"context": 8, "items": 8, "cross": 8}   # PRESETS["small"]
SIZES = (100, 1_000, 10_000)
TEACHER = "mlp_teacher 256-256-128"

# (label, role, model name, options, cached)
ROWS = [
    ("linear", "student", "linear", {}, False),
    ("mlp_student 64-32", "student", "mlp_student", {"hidden": (64, 32)}, False),
    ("mlp_student 64-32 + SE gate", "student", "mlp_student",
     {"hidden": (64, 32), "se_gate": True}, False),
    ("two_tower D=16 (full)", "student", "two_tower", {}, False),
    ("two_tower D=16 (cached items)", "student", "two_tower", {}, True),
    ("int_tower D=16 I=16 (full)", "student", "int_tower", {}, False),
    ("int_tower D=16 I=16 (cached items)", "student", "int_tower", {}, True),
    (TEACHER, "teacher", "mlp_teacher", {"hidden": (256, 256, 128)}, False),
    ("mlp_teacher 1024-1024-512 (over-parameterised)", "teacher", "mlp_teacher",
     {"hidden": (1024, 1024, 512)}, False),
    ("dcn_v2 L=3 + 256-256-128", "teacher", "dcn_v2", {"hidden": (256, 256, 128)}, False),
    ("mlp_heavy_no_cross 256-256-128", "ablation", "mlp_heavy_no_cross",
     {"hidden": (256, 256, 128)}, False),
]


def machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return (f"{cpu}, {os.cpu_count()} cores visible, {platform.system()} "
          f"{platform.release()}; jax {jax.__version__} on {jax.default_backend()} "
          f"({jax.devices()[0].device_kind})")


def measure(repeats: int) -> list[dict]:
  flops_batch = request_batch(FEATURES, 1_000)
  out = []
  for label, role, name, options, cached in ROWS:
    model = build_model(name, feature_sizes=FEATURES, **options)
    params = model.init(jax.random.key(0))
    row = {"model": label, "role": role, "params": param_count(params),
           "flops": flops_per_candidate(model, params, flops_batch, cached=cached)}
    for n in SIZES:
      row[n] = measure_scoring(model, params, n, cached=cached, repeats=repeats)
    out.append(row)
    print(f"  {label}: {row['flops']:.0f} FLOPs/cand, "
          f"{row[SIZES[-1]]['latency_s'] * 1e6:.0f} µs at N={SIZES[-1]}", flush=True)
  return out


def markdown(rows: list[dict]) -> str:
  ref = next(r for r in rows if r["model"] == TEACHER)
  big = SIZES[-1]
  head = ["model", "role", "params", "FLOPs/cand", "FLOPs ÷ teacher",
          *(f"µs/request N={n:,}" for n in SIZES), f"Mcand/s N={big:,}",
          f"latency ÷ teacher N={big:,}"]
  lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
  for r in rows:
    cells = [r["model"], r["role"], f"{r['params']:,}", f"{r['flops']:,.0f}",
             f"{r['flops'] / ref['flops']:.4f}",
             *(f"{r[n]['latency_s'] * 1e6:,.0f}" for n in SIZES),
             f"{r[big]['candidates_per_s'] / 1e6:,.1f}",
             f"{r[big]['latency_s'] / ref[big]['latency_s']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  print(f"machine: {machine()}")
  rows = measure(args.repeats)
  text = (f"# Model costs\n\nMachine: {machine()}. Features: {FEATURES}. FLOPs per "
          f"candidate from XLA's cost analysis of one request of 1,000 candidates; latency "
          f"is the median wall time of scoring one request (jit, warmed up). Ratios are to "
          f"the quickstart teacher, {TEACHER}.\n\n{markdown(rows)}\n")
  print()
  print(text)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "model_costs.md").write_text(text)
  print(f"wrote {args.out / 'model_costs.md'}")


if __name__ == "__main__":
  main()
