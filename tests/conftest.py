"""Shared fixtures: the smoke config and tiny simulator data (seeded, fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_config(name: str = "quickstart", arg: str | None = "smoke"):
  spec = importlib.util.spec_from_file_location(f"configs.{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


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
