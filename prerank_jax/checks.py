"""Field checks shared by every floor (config, data sources, models, losses).

Each check takes the value and its config path and raises :class:`ConfigError` naming the
field, the allowed range and the value found; a check never passes a bad value on. This
module imports nothing from the package.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Collection

__all__ = ["ConfigError", "choice", "ensemble_weights", "get", "index_tuple", "int_in",
           "is_index_tuple", "is_int", "is_number", "names", "number_in", "ratio", "require"]


class ConfigError(ValueError):
  """A config value is invalid; the message names the field and the allowed range."""


def is_int(value: Any) -> bool:
  """An integer that is not a bool (numpy integers count)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  """A real number that is not a bool (numpy numbers count)."""
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_index_tuple(value: Any) -> bool:
  """A tuple (or list) of distinct ints >= 0: column indices or feature ids."""
  return (isinstance(value, (tuple, list)) and all(is_int(i) and i >= 0 for i in value)
          and len(set(value)) == len(value))


def require(ok: bool, field: str, text: str, value: Any) -> None:
  """Raises ``ConfigError("<field>: <text>, got <value>")`` unless ``ok``."""
  if not ok:
    raise ConfigError(f"{field}: {text}, got {value!r}")


def get(config: Any, field: str) -> Any:
  """``config`` at the dotted path ``field``; a missing field is a :class:`ConfigError`."""
  node = config
  for part in field.split("."):
    try:
      node = node[part]
    except (KeyError, AttributeError):
      raise ConfigError(f"{field}: missing from the config") from None
  return node


def int_in(value: Any, field: str, low: int, high: float = float("inf")) -> int:
  """An int in ``[low, high]``."""
  require(is_int(value) and low <= value <= high, field,
          f"must be an int in [{low}, {high}]", value)
  return int(value)


def number_in(value: Any, field: str, low: float, high: float = float("inf"), *,
              open_low: bool = False, open_high: bool = False) -> float:
  """A number in ``[low, high]`` (or an open end where asked)."""
  ok = is_number(value) and (low < value if open_low else low <= value) and (
      value < high if open_high else value <= high)
  require(ok, field, f"must be a number in {'(' if open_low else '['}{low}, {high}"
          f"{')' if open_high else ']'}", value)
  return float(value)


def ratio(value: Any, field: str) -> float:
  """A keep ratio in ``(0, 1]``."""
  require(is_number(value) and 0 < value <= 1, field, "must be a keep ratio in (0, 1]", value)
  return float(value)


def choice(value: Any, field: str, choices: Collection) -> Any:
  """One of ``choices`` (a registry's names)."""
  if value not in choices:
    raise ConfigError(f"{field}: unknown name {value!r}; valid names are {sorted(choices)}")
  return value


def index_tuple(value: Any, field: str, what: str) -> tuple[int, ...]:
  """Distinct ints >= 0 (``what`` says what they index)."""
  require(is_index_tuple(value), field, f"must be a tuple of distinct {what} >= 0 (() = all)",
          value)
  return tuple(int(i) for i in value)


def names(value: Any, field: str, *, non_empty: bool = False) -> tuple[str, ...]:
  """A tuple of non-empty strings (column names)."""
  require(isinstance(value, (tuple, list)) and all(isinstance(x, str) and x for x in value)
          and (len(value) > 0 or not non_empty), field,
          "must be a " + ("non-empty " if non_empty else "") + "tuple of column names", value)
  return tuple(value)


def ensemble_weights(weights: Any, field: str, *, num_teachers: int | None = None,
                     teachers: str = "") -> tuple[float, ...]:
  """The one rule for ``loss.ensemble_weights``: ``()`` (uniform) or one finite weight
  >= 0 per teacher, not all 0.

  Args:
    weights: the configured weights.
    field: their config path, e.g. ``"student.loss.ensemble_weights"``.
    num_teachers: M, when known; the weights (if any) must number M.
    teachers: where M comes from, for the message (e.g. ``"teacher.num_teachers=2"``).
  """
  ok = isinstance(weights, (tuple, list)) and all(
      is_number(w) and 0 <= w and math.isfinite(w) for w in weights)
  require(ok and (not weights or sum(weights) > 0), field,
          "must be () (uniform) or one finite weight >= 0 per teacher, not all 0", weights)
  if weights and num_teachers is not None and len(weights) != num_teachers:
    raise ConfigError(f"{field}: must have one weight per teacher ({teachers or num_teachers}),"
                      f" got {len(weights)} weights {tuple(weights)!r}")
  return tuple(float(w) for w in weights)
