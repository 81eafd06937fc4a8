"""The sweep axis sharded over 8 simulated CPU devices gives the single-device results."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(workdir: Path, name: str, devices: int, *extra: str) -> list[dict]:
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = {**os.environ, "XLA_FLAGS": flags.strip()}  # conftest's flags kept
  cmd = [sys.executable, "-m", "prerank_jax.cli", "quickstart",
         "--config=configs/quickstart.py:smoke", f"--config.workdir={workdir}",
         f"--config.name={name}", "--config.progress=False", "--config.wandb.mode=disabled", *extra]
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  header = (workdir / name / "results.md").read_text()
  assert f"on {devices} cpu device(s)" in header
  with open(workdir / name / "results.csv") as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_sharded_sweep_equals_single_device(tmp_path):
  one = _run(tmp_path, "one", 1)
  eight = _run(tmp_path, "eight", 8)  # 10 points padded to 16, 2 per device
  # Groups of 4 round up to 8 (the devices): 16 points as 2 groups, one point per device
  # per group, strided.
  grouped = _run(tmp_path, "grouped", 8, "--config.sweep.group_size=4")
  for other in (eight, grouped):
    assert [r["model"] for r in one] == [r["model"] for r in other]
    for a, b in zip(one, other):
      for key, value in a.items():
        if key in ("model", "status"):
          assert value == b[key]
        elif value:
          assert float(b[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), (
              a["model"], key)
