"""SIGKILL at random moments, resume, and get the uninterrupted run bit for bit (issue 12).

For each input pipeline (device-resident and grain) one run directory is killed several
times in a row (3 and 2 times: 5 kills per test run) and resumed after each kill; the finished run must equal one uninterrupted
reference run of the same pipeline bit for bit: the final teacher and student states
(parameters, optimizer states, PRNG keys) in the last checkpoints, the per-candidate scores,
``results.csv`` and the per-epoch histories.

The kills are planted by ``tests/host/kill_child.py`` (no hook in the package): at random
checkpoints, one of them during a checkpoint write (after Orbax wrote the files but before
its commit rename, or after the commit but before our manifest), and last a random number
of seconds after a later checkpoint, wherever the process then is. The draw is seeded
by ``PRERANK_KILL_SEED`` (random when unset) and printed, so a failure can be replayed:
``PRERANK_KILL_SEED=<seed> pytest tests/host/test_kill.py``.

Cost: 9 CLI processes of the smoke config (2 references, 5 killed, 2 final resumes), the
two pipelines' chains in parallel, sharing one XLA compilation cache.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEACHER_CHUNKS, STUDENT_CHUNKS = 2, 3
# Where a phase checkpoints, in the order a run reaches them.
POSITIONS = ([("teacher", c) for c in range(1, TEACHER_CHUNKS + 1)]
             + [("student", c) for c in range(1, STUDENT_CHUNKS + 1)])
WRITE_MOMENTS = ("in_write", "before_manifest")
HOOK_MOMENTS = ("before_save", "in_write", "before_manifest", "after_save")
PIPELINES = {"device": (), "grain": ("--config.input_pipeline=grain",
                                     "--config.streaming.order=shared")}
KILLS_AT_CHECKPOINTS = {"device": 2, "grain": 1}  # + one timer each: 5 kills per test run


def _args(workdir: Path, name: str, pipeline: str) -> list[str]:
  return ["quickstart", "--config=configs/quickstart.py:smoke", f"--config.workdir={workdir}",
          f"--config.name={name}", "--config.progress=False", "--config.wandb.mode=disabled",
          "--config.checkpoint_every=1", f"--config.teacher.num_epochs={TEACHER_CHUNKS}",
          f"--config.student.num_epochs={STUDENT_CHUNKS}",
          "--config.sweep.temperature=(1.,3.)", "--config.sweep.alpha=(0.5,)",
          *PIPELINES[pipeline]]


def draw_kills(rng: random.Random, num_at_checkpoints: int) -> list[str]:
  """``num_at_checkpoints + 1`` ``PRERANK_KILL_AT`` specs in the order a run reaches them:
  checkpoint moments at distinct positions (one of them during a write), then a timer
  armed after a later checkpoint, at the latest the second-to-last: when it fires (up to
  1.5 s later) a chunk, its checkpoint and the evaluation are still ahead, so the kill
  lands before the run finishes (which ``_chain`` asserts)."""
  at = sorted(rng.sample(range(len(POSITIONS) - 2), num_at_checkpoints))
  moments = [rng.choice(WRITE_MOMENTS)] + [rng.choice(HOOK_MOMENTS)
                                           for _ in range(num_at_checkpoints - 1)]
  rng.shuffle(moments)
  timer_at = rng.randrange(at[-1] + 1, len(POSITIONS) - 1)
  spec = lambda i, m: "{}:{}:{}".format(*POSITIONS[i], m)
  return ([spec(i, m) for i, m in zip(at, moments)]
          + [spec(timer_at, "timer") + f":{rng.uniform(0.0, 1.5):.3f}"])


def _cli(args: list[str], env: dict, kill_at: str = "") -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "tests.host.kill_child", *args], cwd=ROOT,
                        env={**env, "PRERANK_KILL_AT": kill_at}, capture_output=True,
                        text=True, timeout=600)


def _chain(workdir: Path, pipeline: str, kills: list[str], env: dict, out: dict) -> None:
  try:
    ref = _cli(_args(workdir, "ref", pipeline), env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    args = _args(workdir, "killed", pipeline)
    for i, kill_at in enumerate(kills):
      killed = _cli(args + (["--resume"] if i else []), env, kill_at)
      # -9: the planted kill fired (a run that got past it would exit 0).
      assert killed.returncode == -9, (kill_at, killed.returncode, killed.stderr[-3000:])
      # ... and before the run finished: a kill after the results were written would
      # test nothing about resuming.
      assert not (workdir / "killed" / "results.csv").exists(), (
          f"{kill_at}: the kill landed after the run wrote results.csv")
    resumed = _cli(args + ["--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out[pipeline] = "ok"
  except BaseException as e:  # reported by the main thread
    out[pipeline] = e


def _state(step_dir: Path) -> dict:
  import jax
  import orbax.checkpoint as ocp
  tree = ocp.PyTreeCheckpointer().restore(step_dir / "state")
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(tree)}


def _assert_same_run(run: Path, ref: Path) -> None:
  for role, chunks in (("teacher", TEACHER_CHUNKS), ("student", STUDENT_CHUNKS)):
    got, want = (_state(d / "checkpoints" / role / str(chunks)) for d in (run, ref))
    assert got.keys() == want.keys()
    for key in want:  # bit for bit, NaN patterns included
      assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
      assert got[key].tobytes() == want[key].tobytes(), f"{role} {key} differs"
  for name in ("results.csv", "scores.parquet"):
    assert (run / name).read_bytes() == (ref / name).read_bytes(), name
  got, want = (json.loads((d / "history.json").read_text()) for d in (run, ref))
  for key in ("teacher", "students", "teacher_scores"):
    assert got[key] == want[key], key


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
  seed = int(os.environ.get("PRERANK_KILL_SEED", random.randrange(2**32)))
  rng = random.Random(seed)
  plans = {p: draw_kills(rng, KILLS_AT_CHECKPOINTS[p]) for p in PIPELINES}
  print(f"PRERANK_KILL_SEED={seed} kills: {plans}")  # shown by pytest on failure
  # tests/conftest.py's session-wide XLA cache (if unset, one for this test): the runs
  # after each pipeline's first compile only trace.
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
         "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                                     str(tmp_path / "xla_cache"))}
  outcome: dict = {}
  threads = [threading.Thread(target=_chain, args=(tmp_path / p, p, plans[p], env, outcome))
             for p in PIPELINES]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for pipeline in PIPELINES:
    if outcome.get(pipeline) != "ok":
      raise AssertionError(f"{pipeline} (PRERANK_KILL_SEED={seed}, kills "
                           f"{plans[pipeline]})") from outcome.get(pipeline)
    _assert_same_run(tmp_path / pipeline / "killed", tmp_path / pipeline / "ref")


def test_kill_draws_are_ordered_and_include_a_write():
  """Every draw is reachable in order by one resumed chain (a kill planted at a point the
  previous kill already passed would never fire) and includes a mid-write kill."""
  order = {m: i for i, m in enumerate(HOOK_MOMENTS)}
  for seed in range(200):
    for n in (1, 2, 3):
      kills = [k.split(":") for k in draw_kills(random.Random(seed), n)]
      pos = [POSITIONS.index((role, int(chunk))) for role, chunk, *_ in kills]
      assert len(kills) == n + 1 and pos == sorted(set(pos)), kills
      assert any(k[2] in WRITE_MOMENTS for k in kills[:-1]), kills
      assert all(k[2] in order for k in kills[:-1]), kills
      assert kills[-1][2] == "timer" and 0.0 <= float(kills[-1][3]) <= 1.5
      assert pos[-1] < len(POSITIONS) - 1, kills  # a chunk still to train when it fires
