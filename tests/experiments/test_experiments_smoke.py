"""Each experiment script end to end in its --smoke form, then --from-results.

The scripts run as the README says (``python experiments/<name>.py --smoke``), in a
subprocess sharing one persistent XLA compilation cache: the worlds and methods of a smoke
run compile the same programs, so only the first compiles them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import harness  # noqa: E402

# One experiment end to end keeps CI under 30 minutes on a 2-core CPU: the eight smoke runs
# take about 20 minutes there (each is 2 worlds of runner calls, compilation included).
# CI runs E3's (two methods of one program each, the cheapest; E1's four methods of four
# structural programs took 241 s of CI). Every experiment's methods and claims are
# validated without training in test_harness.py, every kept full result is rebuilt from
# its raw rows in test_kept_results.py, and every script's --smoke run was checked by hand
# (`python experiments/<name>.py --smoke`). Set PRERANK_ALL_EXPERIMENT_SMOKES=1 to run all.
# E9 (one replicate, RecFlow-shaped worlds) has its own smoke run in test_e9.py.
ALL_EXPERIMENTS = ["e1_exposure", "e2_hinton", "e3_ba_caruana", "e4_ranking_distillation",
                   "e5_teacher_quality", "e6_ensembles", "e7_loss_families", "e8_pareto"]
EXPERIMENTS = (ALL_EXPERIMENTS if os.environ.get("PRERANK_ALL_EXPERIMENT_SMOKES") == "1"
               else ["e3_ba_caruana"])


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("xla_cache")


def _script(name, out, xla_cache, *flags):
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(xla_cache),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / f"{name}.py"), "--smoke",
                         "--out", str(out), *flags], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=1200)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_run_then_rebuild_from_results(name, tmp_path, xla_cache):
  out_dir = tmp_path / f"{name}-smoke"
  _script(name, tmp_path, xla_cache)
  raw = harness.load_raw(out_dir / "raw.csv")
  assert sorted(raw["seed"].unique()) == [0, 1]                 # two world seeds
  students = raw[raw["role"] == "student"]
  assert sorted(students["replicate_seed"].unique()) == [0, 1]  # replicates in each world
  assert (raw["role"] == harness.GT_ONLY).any() and (raw["role"] == "teacher").any()
  first = (out_dir / "summary.md").read_text()
  assert f"Produced by `python experiments/{name}.py --smoke" in first
  claims = first.split("## Claims")[1].split("##")[0]
  rows = [line for line in claims.splitlines() if line.startswith("| ") and "**" in line]
  assert rows and all(any(f"**{v}**" in line for v in harness.VERDICTS) for line in rows)
  pngs = sorted(out_dir.glob("*.png"))
  assert pngs and all(p.stat().st_size > 1000 for p in pngs)
  # No training: the summary and figures come back from raw.csv alone, identical.
  for p in pngs:
    p.unlink()
  (out_dir / "summary.md").unlink()
  _script(name, tmp_path, xla_cache, "--from-results")
  assert (out_dir / "summary.md").read_text() == first
  assert sorted(out_dir.glob("*.png")) == pngs
  assert pd.read_csv(out_dir / "raw.csv").shape[0] == len(raw)
