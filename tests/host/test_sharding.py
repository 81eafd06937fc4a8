"""The sweep axis sharded over 8 simulated CPU devices gives the single-device results."""

import csv
import os
import re
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


def _readme_smoke_table() -> dict[str, dict[str, str]]:
  """The README's smoke quickstart table: {model: {column: printed value}}."""
  readme = (ROOT / "README.md").read_text().split("## A first run: the smoke quickstart")[1]
  block = re.search(r"```\n(model .*?)\n```", readme, flags=re.S).group(1).splitlines()
  header = re.split(r"\s{2,}", block[0].strip())
  return {cells[0]: dict(zip(header[1:], cells[1:]))
          for cells in (re.split(r"\s{2,}", line.strip()) for line in block[2:])}


@pytest.mark.slow
def test_sharded_sweep_equals_single_device(tmp_path):
  one = _run(tmp_path, "one", 1)
  # The README's smoke table is what this code prints: the README's smoke command is this
  # run (seed 0, the default sweep); to the 4 printed decimals, give or take the last one
  # (the tests compile at XLA's optimisation level 0, the CLI at the default).
  readme = _readme_smoke_table()
  assert list(readme) == [r["model"] for r in one]
  for row in one:
    for column, printed in readme[row["model"]].items():
      if re.fullmatch(r"-?[0-9]\.[0-9]{4}", printed):
        assert abs(float(row[column]) - float(printed)) <= 1.01e-4, (row["model"], column)
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
