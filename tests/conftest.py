"""Shared fixtures: the smoke config and tiny simulator data (seeded, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
