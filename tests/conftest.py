"""Shared fixtures: the smoke config and tiny simulator data (seeded, fast)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# JAX's persistent compilation cache, fresh for each pytest session (made by the first
# process that loads this file, so xdist's workers share it) and inherited by the CLI
# subprocesses and notebook kernels it starts: many end-to-end tests compile the same
# smoke programs, and only the first pays. Every program is kept, however fast it
# compiled (a warm in-process smoke run: 4.7 s with every program kept, 6.8 s keeping
# those over 0.5 s). Set before jax is imported; the cache never outlives the session.
# A cache named by the environment is used as it is (.ci/run shares one with the docs).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="prerank-jax-tests-xla-")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# XLA's CPU backend at LLVM optimisation level 0: the tests' programs are small and
# compiling them is most of the suite's time (a cold in-process smoke run: 21 s against
# 34 s at the default level, on a loaded machine); their numbers moved in the 7th
# decimal only. Tests compare runs made under the same flags; benchmarks, experiments
# and the CLI keep the default level. Tests that set 8 host devices append to it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import pytest  # noqa: E402

from prerank_jax.config_files import repo_config

ROOT = Path(__file__).resolve().parent.parent


def load_config(name: str = "quickstart", arg: str | None = "smoke"):
  return repo_config(name, arg)


@pytest.fixture
def smoke_config(tmp_path):
  config = load_config()
  config.workdir = str(tmp_path / "runs")
  config.progress = False
  config.wandb.mode = "disabled"
  return config


@pytest.fixture(scope="session")
def tiny_splits():
  from prerank_jax.data.simulator import PRESETS, simulate
  return simulate(PRESETS["tiny"], seed=0)
