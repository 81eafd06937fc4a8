"""Loading ``configs/*.py`` files: a leaf module that imports nothing from the package.

A config file defines ``get_config(arg=None)`` returning a ``ConfigDict`` (big_vision's
convention); the CLI's ``--config=path:arg`` and the tests load them through here.
Validation lives in :mod:`prerank_jax.config`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

__all__ = ["REPO_CONFIGS", "load_config_file", "quickstart_based", "repo_config"]

# This repository's configs/ folder (the package is installed editable).
REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of a ``configs/*.py`` file, as the CLI's ``--config=path:arg``."""
  path = Path(path)
  spec = importlib.util.spec_from_file_location(f"prerank_configs.{path.stem}", path)
  if spec is None or not path.exists():
    raise FileNotFoundError(f"config: no config file at {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def quickstart_based(config_file: str, arg: str | None, allowed: tuple[str, ...]
                     ) -> tuple[ml_collections.ConfigDict, set[str]]:
  """For ``configs/*.py`` files built on the quickstart: parses ``arg`` (flags separated
  by commas, each in ``allowed``) and returns ``(quickstart config, flags)``: the
  quickstart's ``full`` size (the experiments' world), or its ``smoke`` config with the
  ``smoke`` flag.

  The quickstart config is the ``quickstart.py`` beside ``config_file`` when there is one,
  else this repository's ``configs/quickstart.py``: a config file copied out of
  ``configs/`` keeps working."""
  flags = set(filter(None, (arg or "").split(",")))
  if not flags <= set(allowed):
    raise ValueError(f"configs/{Path(config_file).name}: unknown argument {arg!r}; use "
                     f"flags out of {sorted(allowed)} separated by commas, or nothing")
  # A copy of a configs/ file elsewhere (e.g. beside the user's data) is built on the
  # quickstart.py beside it if there is one, else on this repository's.
  base = Path(config_file).resolve().parent / "quickstart.py"
  if not base.exists():
    base = REPO_CONFIGS / "quickstart.py"
  return load_config_file(base, "smoke" if "smoke" in flags else "full"), flags


def repo_config(name: str = "quickstart", arg: str | None = None) -> ml_collections.ConfigDict:
  """A config shipped in this repository's ``configs/`` folder."""
  return load_config_file(REPO_CONFIGS / f"{name}.py", arg)
