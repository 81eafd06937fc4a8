"""The second mesh axis: with fewer sweep points than devices, the spare devices split each
step's batch of requests (data parallelism), and training gives the unsharded result."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from prerank_jax.train.sweep import sweep_mesh

ROOT = Path(__file__).resolve().parents[2]


def test_mesh_shape_rule():
  devices = [jax.devices()[0]] * 8  # the rule only looks at the count
  shape = lambda *a, **k: dict(sweep_mesh(*a, devices=devices, **k).shape)
  assert shape() == {"sweep": 8, "data": 1}
  assert shape(1, batch_size=32) == {"sweep": 1, "data": 8}
  assert shape(3, batch_size=32) == {"sweep": 4, "data": 2}
  assert shape(5, batch_size=32) == {"sweep": 8, "data": 1}
  assert shape(20, batch_size=32) == {"sweep": 8, "data": 1}
  assert shape(1, batch_size=12) == {"sweep": 2, "data": 4}  # data divides the batch
  assert shape(1, batch_size=7) == {"sweep": 8, "data": 1}


@pytest.mark.slow
def test_data_parallel_training_equals_unsharded():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-m", "tests.train.dp_check", "1", "3"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report["1"]["devices"] == 8
  assert report["1"]["mesh"] == {"sweep": 1, "data": 8}
  assert report["3"]["mesh"] == {"sweep": 4, "data": 2}
  for n in ("1", "3"):
    # The batch really is split: the gradients are summed across devices.
    assert report[n]["all_reduce"], n
    # Same result up to the order of float sums (two epochs of Adam).
    assert report[n]["max_abs_diff"] <= 1e-4 * max(1.0, report[n]["param_scale"]), report[n]
