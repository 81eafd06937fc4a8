"""Compiled memory of the pairwise losses on lists of 1,000 candidates: all pairs vs top-P.

Run: ``.venv/bin/python benchmarks/pairwise_memory.py [--lists 32] [--size 1000]``

For each loss and ``pairwise_top`` in (0, 10, 50), this compiles value-and-grad of the
loss w.r.t. the student scores for a batch ``[lists, size]`` and prints XLA's
``memory_analysis()`` of the compiled program (temp = scratch buffers XLA allocates, the
peak working set beyond arguments and outputs) and the wall time of one call. Nothing is
written to disk.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.losses.pairwise import ranknet_distill, soft_pairwise_distill

MiB = 2**20


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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lists", type=int, default=32)
  parser.add_argument("--size", type=int, default=1000)
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind}; batch [{args.lists}, {args.size}] float32; "
        f"one [lists, N, N] float32 array = {args.lists * args.size**2 * 4 / MiB:.0f} MiB")
  print(f"{'loss':<34} {'pairwise_top':>12} {'temp MiB':>10} {'args MiB':>9} {'ms/call':>9}")
  cases = [("ranknet_distill uniform", ranknet_distill, {"pairwise_weighting": "uniform"}),
           ("ranknet_distill delta_ndcg", ranknet_distill, {"pairwise_weighting": "delta_ndcg"}),
           ("soft_pairwise_distill", soft_pairwise_distill, {})]
  for name, fn, options in cases:
    for top in (0, 10, 50):
      m = measure(fn, lists=args.lists, size=args.size, pairwise_top=top, **options)
      print(f"{name:<34} {top:>12} {m['temp_mib']:>10.2f} {m['args_mib']:>9.2f} "
            f"{m['ms']:>9.1f}")


if __name__ == "__main__":
  main()
