"""Loading ``configs/*.py`` files: a leaf module that imports nothing from the package.

A config file defines ``get_config(arg=None)`` returning a ``ConfigDict`` (big_vision's
convention); the CLI's ``--config=path:arg`` and the tests load them through here.
Validation lives in :mod:`prerank_jax.config`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

__all__ = ["load_config_file", "quickstart_based", "repo_config"]


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
  by commas, each in ``allowed``) and returns ``(quickstart config, flags)``; the
  ``smoke`` flag gives the quickstart's smoke config."""
  flags = set(filter(None, (arg or "").split(",")))
  if not flags <= set(allowed):
    raise ValueError(f"configs/{Path(config_file).name}: unknown argument {arg!r}; use "
                     f"flags out of {sorted(allowed)} separated by commas, or nothing")
  return load_config_file(Path(config_file).resolve().parent / "quickstart.py",
                          "smoke" if "smoke" in flags else None), flags


def repo_config(name: str = "quickstart", arg: str | None = None) -> ml_collections.ConfigDict:
  """A config shipped in this repository's ``configs/`` folder."""
  return load_config_file(Path(__file__).resolve().parent.parent / "configs" / f"{name}.py", arg)
