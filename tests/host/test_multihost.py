"""Two processes on localhost (gloo, 2 CPU devices each) run one sweep = one process."""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir: Path, name: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "prerank_jax.cli", "quickstart",
          "--config=configs/quickstart.py:smoke", f"--config.workdir={workdir}",
          f"--config.name={name}", "--config.progress=False", "--config.wandb.mode=disabled",
          *extra]


def _rows(path: Path) -> list[dict]:
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  # conftest's XLA flags and compilation cache are kept: the three processes compile as
  # the other CLI tests do and share their cached programs (the device count comes from
  # distributed.cpu_devices_per_process, not from the flags).
  env = dict(os.environ)
  assert "xla_force_host_platform_device_count" not in env.get("XLA_FLAGS", "")
  single = subprocess.run(_cmd(tmp_path, "single"), cwd=ROOT, env=env, capture_output=True,
                          text=True)
  assert single.returncode == 0, single.stderr[-2000:]
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(tmp_path, "multi", "--config.distributed.num_processes=2",
           f"--config.distributed.process_id={i}",
           f"--config.distributed.coordinator_address=127.0.0.1:{port}",
           "--config.distributed.cpu_devices_per_process=2"),
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "on 4 cpu device(s)" in (tmp_path / "multi" / "results.md").read_text()
  one, two = _rows(tmp_path / "single" / "results.csv"), _rows(tmp_path / "multi" / "results.csv")
  assert [r["model"] for r in one] == [r["model"] for r in two]
  for a, b in zip(one, two):
    for key, value in a.items():
      if key not in ("model", "status") and value:
        assert float(b[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), (a["model"], key)
