"""Run in a subprocess with 8 simulated CPU devices (see test_data_parallel.py).

For each number of points, trains a small grid: unsharded on one device (twice, to check
that the same seed gives the same bits); sharded over the 8 devices with the mesh chosen
by ``sweep_mesh`` (points on "sweep", spare devices splitting each batch on "data"), also
twice; and, as a negative control of the tolerance, unsharded with the learning rate
changed by 0.1%. Prints a JSON report: the mesh, whether the compiled step communicates
(an all-reduce in its HLO), and max |Δparam| between these runs.
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

LEARNING_RATE = 3e-3


def _params(state, num_points: int) -> list[np.ndarray]:
  return [np.asarray(x)[:num_points] for x in jax.tree.leaves(state.params)]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _bits_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
  return all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def main(num_points: int) -> dict:
  config = load_config()
  splits = simulate(PRESETS["tiny"], seed=0)
  rng = np.random.default_rng(0)
  splits = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (1,))
                          .astype(np.float32)) for k, b in splits.items()}
  data = SweepData(splits["train"], splits["valid"])
  sizes, requests = feature_sizes(data.train), data.train.num_requests
  grid = lambda lr: grid_points({"temperature": tuple(1.0 + i for i in range(num_points)),
                                 "alpha": (0.5,), "learning_rate": (lr,)}, seed=0)
  points = grid(LEARNING_RATE)

  plain = compile_sweep(make_train(config, feature_sizes=sizes, num_train_requests=requests))
  ref = _params(plain.train(*stack_points(points), data)[0], num_points)
  ref_again = _params(plain.train(*stack_points(points), data)[0], num_points)
  nudged = _params(plain.train(*stack_points(grid(LEARNING_RATE * 1.001)), data)[0],
                   num_points)

  mesh = sweep_mesh(len(points), batch_size=config.student.batch_size)
  sharded = compile_sweep(make_train(config, feature_sizes=sizes, num_train_requests=requests,
                                     shard_batch=batch_sharding(mesh)))
  hparams, rngs = shard_sweep(stack_points(pad_points(points, mesh.shape["sweep"])), mesh)
  placed = replicate(data, mesh)
  got = _params(sharded.train(hparams, rngs, placed)[0], num_points)
  got_again = _params(sharded.train(hparams, rngs, placed)[0], num_points)
  hlo = sharded.train.lower(hparams, rngs, placed).compile().as_text()
  return {"mesh": dict(mesh.shape), "devices": jax.device_count(),
          "all_reduce": "all-reduce" in hlo,
          "max_abs_diff": _max_diff(got, ref),                 # 8 devices vs 1
          "param_scale": max(float(np.max(np.abs(x))) for x in ref),
          "lr_nudge_diff": _max_diff(nudged, ref),             # negative control
          "one_device_repeat_bit_identical": _bits_equal(ref, ref_again),
          "eight_devices_repeat_bit_identical": _bits_equal(got, got_again)}


if __name__ == "__main__":
  print(json.dumps({n: main(n) for n in map(int, sys.argv[1:])}))
