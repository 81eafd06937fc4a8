"""Run in a subprocess with 8 simulated CPU devices (see test_data_parallel.py).

Trains a small grid three ways and prints a JSON report: unsharded; sharded over a mesh
chosen by ``sweep_mesh`` (points on "sweep", the spare devices splitting each batch on
"data"); and it reports the mesh shapes and whether the compiled step communicates.
"""

import json
import sys

import jax
import numpy as np

from prerank_jax.batch import feature_sizes
from prerank_jax.data.simulator import PRESETS, simulate
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import (batch_sharding, compile_sweep, grid_points, pad_points,
                                     replicate, shard_sweep, stack_points, sweep_mesh)
from tests.conftest import load_config


def main(num_points: int) -> dict:
  config = load_config()
  splits = simulate(PRESETS["tiny"], seed=0)
  rng = np.random.default_rng(0)
  splits = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (1,))
                          .astype(np.float32)) for k, b in splits.items()}
  data = SweepData(splits["train"], splits["valid"])
  sizes, requests = feature_sizes(data.train), data.train.num_requests
  points = grid_points({"temperature": tuple(1.0 + i for i in range(num_points)),
                        "alpha": (0.5,), "learning_rate": (3e-3,)}, seed=0)

  plain = compile_sweep(make_train(config, feature_sizes=sizes, num_train_requests=requests))
  ref, _ = plain.train(*stack_points(points), data)

  mesh = sweep_mesh(len(points), batch_size=config.student.batch_size)
  sharded = compile_sweep(make_train(config, feature_sizes=sizes, num_train_requests=requests,
                                     shard_batch=batch_sharding(mesh)))
  hparams, rngs = shard_sweep(stack_points(pad_points(points, mesh.shape["sweep"])), mesh)
  placed = replicate(data, mesh)
  state, _ = sharded.train(hparams, rngs, placed)
  hlo = sharded.train.lower(hparams, rngs, placed).compile().as_text()
  diff = max(float(np.max(np.abs(np.asarray(a)[:len(points)] - np.asarray(b))))
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params)))
  scale = max(float(np.max(np.abs(np.asarray(b)))) for b in jax.tree.leaves(ref.params))
  return {"mesh": dict(mesh.shape), "max_abs_diff": diff, "param_scale": scale,
          "all_reduce": "all-reduce" in hlo, "devices": jax.device_count()}


if __name__ == "__main__":
  print(json.dumps({n: main(n) for n in map(int, sys.argv[1:])}))
