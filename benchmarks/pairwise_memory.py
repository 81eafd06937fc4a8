"""Compiled memory of the pairwise losses on lists of 1,000 candidates: all pairs vs top-P.

Run: ``.venv/bin/python benchmarks/pairwise_memory.py [--lists 32] [--size 1000]``
(about a minute on a 2-core CPU); ``--from-results`` prints the README's table from the
kept ``benchmarks/results/pairwise_memory.json`` without measuring.

For each loss and ``pairwise_top`` in (0, 10, 50), this compiles value-and-grad of the
loss w.r.t. the student scores for a batch ``[lists, size]`` and records XLA's
``memory_analysis()`` of the compiled program (temp = scratch buffers XLA allocates, the
peak working set beyond arguments and outputs) and the wall time of one call. It then does
the same for NeuralSort's soft top-m (the sum of its first m = N/4 rows) at
``[--ns-lists 16, --ns-size 2000]``: blocked (``soft_top_m``, rows built 128 at a time)
against the full ``[R, N, N]`` matrix (``neuralsort``). The raw rows, the machine and the
date go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.losses.cascade import neuralsort, soft_top_m
from prerank_jax.losses.pairwise import ranknet_distill, soft_pairwise_distill

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import describe, machine  # noqa: E402

MiB = 2**20
RESULTS = ROOT / "benchmarks" / "results" / "pairwise_memory.json"


def measure(loss_fn, *, lists: int, size: int, **options) -> dict:
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(lists, size)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(lists, size)), jnp.float32)
  where = jnp.ones((lists, size), bool)
  f = jax.jit(jax.value_and_grad(
      lambda x, y, T: loss_fn(x, y, where=where, temperature=T, **options)))
  compiled = f.lower(s, t, jnp.float32(1.0)).compile()
  mem = compiled.memory_analysis()
  jax.block_until_ready(compiled(s, t, jnp.float32(1.0)))
  start = time.perf_counter()
  jax.block_until_ready(compiled(s, t, jnp.float32(1.0)))
  return {"temp_mib": mem.temp_size_in_bytes / MiB,
          "args_mib": mem.argument_size_in_bytes / MiB,
          "out_mib": mem.output_size_in_bytes / MiB,
          "ms": 1e3 * (time.perf_counter() - start)}


def measure_neuralsort(fn, *, lists: int, size: int) -> dict:
  """Memory and time of value-and-grad of Σ soft top-(N/4) membership × teacher."""
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(lists, size)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(lists, size)), jnp.float32)
  where = jnp.ones((lists, size), bool)
  f = jax.jit(jax.value_and_grad(lambda x, y: jnp.sum(fn(x, where) * y)))
  compiled = f.lower(s, t).compile()
  mem = compiled.memory_analysis()
  jax.block_until_ready(compiled(s, t))
  start = time.perf_counter()
  jax.block_until_ready(compiled(s, t))
  return {"temp_mib": mem.temp_size_in_bytes / MiB,
          "args_mib": mem.argument_size_in_bytes / MiB,
          "out_mib": mem.output_size_in_bytes / MiB,
          "ms": 1e3 * (time.perf_counter() - start)}


def run(args) -> dict:
  """Every case measured; ``{"args", "machine", "pairwise": [...], "neuralsort": [...]}``."""
  cases = [("ranknet_distill uniform", ranknet_distill, {"pairwise_weighting": "uniform"}),
           ("ranknet_distill delta_ndcg", ranknet_distill, {"pairwise_weighting": "delta_ndcg"}),
           ("soft_pairwise_distill", soft_pairwise_distill, {})]
  pairwise = []
  for name, fn, options in cases:
    for top in (0, 10, 50):
      m = measure(fn, lists=args.lists, size=args.size, pairwise_top=top, **options)
      pairwise.append({"loss": name, "pairwise_top": top, **m})
      print(f"{name:<34} {top:>12} {m['temp_mib']:>10.2f} {m['args_mib']:>9.2f} "
            f"{m['ms']:>9.1f}", flush=True)
  m_top = args.ns_size // 4
  forms = [("blocked (soft_top_m)", lambda x, w: soft_top_m(x, where=w, m=float(m_top))),
           ("full N × N (neuralsort)",
            lambda x, w: jnp.sum(neuralsort(x, where=w)[..., :m_top, :], axis=-2))]
  sorts = []
  for name, fn in forms:
    m = measure_neuralsort(fn, lists=args.ns_lists, size=args.ns_size)
    sorts.append({"form": name, "m": m_top, **m})
    print(f"NeuralSort top-{m_top} {name:<24} {m['temp_mib']:>10.2f} {m['args_mib']:>9.2f} "
          f"{m['ms']:>9.1f}", flush=True)
  kept = {k: v for k, v in vars(args).items() if k not in ("out", "from_results")}
  return {"args": kept, "machine": machine(),
          "pairwise": pairwise, "neuralsort": sorts}


def markdown(record: dict) -> str:
  """The README's tables from the kept record."""
  a, lines = record["args"], []
  lines += [f"Pairwise distillation losses, value-and-grad, batch [{a['lists']}, {a['size']}] "
            f"float32 ({describe(record['machine'])}):", "",
            "| loss | pairs | XLA temp MiB | ms/call |", "|---|---|---|---|"]
  for r in record["pairwise"]:
    pairs = "all" if r["pairwise_top"] == 0 else f"teacher top-{r['pairwise_top']}"
    lines.append(f"| `{r['loss']}` | {pairs} | {r['temp_mib']:.1f} | {r['ms']:.0f} |")
  lines += ["", f"NeuralSort soft top-m (m = N/4), value-and-grad, batch [{a['ns_lists']}, "
            f"{a['ns_size']}]:", "", "| form | XLA temp MiB | ms/call |", "|---|---|---|"]
  for r in record["neuralsort"]:
    lines.append(f"| {r['form']} | {r['temp_mib']:.0f} | {r['ms']:.0f} |")
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lists", type=int, default=32)
  parser.add_argument("--size", type=int, default=1000)
  parser.add_argument("--ns-lists", type=int, default=16)
  parser.add_argument("--ns-size", type=int, default=2000)
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--from-results", action="store_true",
                      help="print the README's tables from --out, no measuring")
  args = parser.parse_args()
  out = Path(args.out)
  if args.from_results:
    print(markdown(json.loads(out.read_text())))
    return
  print(f"device: {jax.devices()[0].device_kind}; batch [{args.lists}, {args.size}] float32; "
        f"one [lists, N, N] float32 array = {args.lists * args.size**2 * 4 / MiB:.0f} MiB")
  print(f"{'loss':<34} {'pairwise_top':>12} {'temp MiB':>10} {'args MiB':>9} {'ms/call':>9}")
  record = run(args)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(record, indent=1) + "\n")
  print()
  print(markdown(record))


if __name__ == "__main__":
  main()
