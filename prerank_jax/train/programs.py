"""Structural sweep axes: choices that change shapes or program structure.

Traced hyperparameters (T, α, …) vary inside one compiled program. Choices such as the
loss family, the model width or a static loss option change the program itself, so each
combination becomes its own program, run one after another on the same data and teacher.
They are declared in one string, ``config.sweep.programs``::

  "student.loss.kd=hinton_listwise|logit_mse; student.model.hidden=(32,)|(64, 32)"

``;`` separates axes (combined as a product), ``|`` separates values, and each value is a
Python literal (a bare word is a string).
"""

from __future__ import annotations

import ast
import copy
import itertools
from typing import Any

import ml_collections


def parse_programs(spec: str, *, field: str = "sweep.programs") -> list[dict[str, Any]]:
  """The list of override dicts (``{"student.loss.kd": "logit_mse", ...}``), ``[{}]`` if empty."""
  axes = []
  for part in filter(None, (p.strip() for p in spec.split(";"))):
    path, sep, values = part.partition("=")
    path = path.strip()
    if not sep or not path or not values.strip():
      raise ValueError(f"{field}: expected 'path=v1|v2; path2=v3', got {part!r}")
    if not path.startswith(("student.", "teacher.", "eval.")) or path.startswith(
        "teacher."):
      raise ValueError(f"{field}: {path!r} cannot be a program axis; use fields under "
                       "'student.' (the teacher and data are shared by all programs)")
    axes.append((path, [_literal(v.strip()) for v in values.split("|")]))
  if len({p for p, _ in axes}) != len(axes):
    raise ValueError(f"{field}: a path appears twice in {spec!r}")
  return [dict(zip([p for p, _ in axes], combo))
          for combo in itertools.product(*(v for _, v in axes))]


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A locked copy of ``config`` with ``overrides`` applied; ``config`` is not touched.

  Raises:
    ValueError: a path that the config does not have, or a value of the wrong type.
  """
  derived = copy.deepcopy(config)
  derived.sweep.programs = ""  # a derived config is one program
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = derived
    for p in parents:
      if p not in node:
        raise ValueError(f"sweep.programs: unknown config field {path!r}")
      node = node[p]
    if leaf not in node:
      raise ValueError(f"sweep.programs: unknown config field {path!r}")
    try:
      node[leaf] = tuple(value) if isinstance(node[leaf], tuple) and isinstance(
          value, (list, tuple)) else value
    except TypeError as e:
      raise ValueError(f"sweep.programs: {path}: {e}") from None
  return derived


def program_label(overrides: dict[str, Any]) -> str:
  """A short name such as ``kd=logit_mse hidden=(32,)``."""
  return " ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in overrides.items())
