"""The config reference cannot drift from the code.

``prerank_jax.host.config_reference`` describes every config field (default, allowed range,
meaning); `prerank-jax config` prints it and the documentation site renders it. These tests
fail when a field of a shipped config file has no description, when a description names no
field, and when a value just outside a stated range is *accepted* by validation (so the
stated range is the one the code enforces).
"""

from __future__ import annotations

import math

import ml_collections
import pytest

from prerank_jax.config import validate_config
from prerank_jax.config_files import repo_config
from prerank_jax.config_files import REPO_CONFIGS
from prerank_jax.host import config_reference as ref

# Every shipped config file (a new one is picked up), plus the quickstart's smoke config.
CONFIGS = [(p.stem, None) for p in sorted(REPO_CONFIGS.glob("*.py"))] + [("quickstart", "smoke")]


def _fields(name, arg):
  return [f for f, _ in ref.flatten(repo_config(name, arg))]


@pytest.mark.parametrize("name, arg", CONFIGS)
def test_every_field_of_every_shipped_config_is_described(name, arg):
  rows = ref.describe_fields(repo_config(name, arg))
  missing = [r.field for r in rows if not r.documented]
  assert not missing, (f"configs/{name}.py: add these fields to "
                       f"prerank_jax/host/config_reference.py::FIELDS: {missing}")
  assert all(r.meaning and r.allowed for r in rows)


def test_every_description_names_a_field():
  fields = {f for name, arg in CONFIGS for f in _fields(name, arg)}
  for entry in ref.FIELDS:
    expanded = ([entry.replace("<role>", r) for r in ("teacher", "student")]
                if "<role>" in entry else [entry])
    assert any(f in fields for f in expanded), f"FIELDS[{entry!r}] names no config field"
  assert set(ref.SIMULATOR_MEANINGS) == set(ref.simulator_knobs())


def test_defaults_are_the_config_files_and_overrides_are_shown():
  base = repo_config("quickstart")
  changed = repo_config("quickstart")
  changed.seed = 7
  rows = {r.field: r for r in ref.describe_fields(changed, base)}
  assert (rows["seed"].value, rows["seed"].default) == (7, 0)
  assert rows["sweep.alpha"].default == base.sweep.alpha
  text = ref.format_table(list(rows.values()))
  assert "seed = 7   (default: 0)" in text
  assert f"sweep.alpha = {ref._show(base.sweep.alpha)}\n" in text


def test_registry_ranges_are_the_registries():
  from prerank_jax.losses.registry import HPARAMS, STATIC_OPTIONS
  from prerank_jax.models import MODEL_OPTIONS, MODELS

  rows = {r.field: r for r in ref.describe_fields(repo_config("quickstart"))}
  assert rows["sweep.alpha"].allowed.startswith(f"a tuple of values in {HPARAMS['alpha'].describe()}")
  assert rows["sweep.alpha"].meaning == HPARAMS["alpha"].doc
  assert rows["student.model.hidden"].allowed == MODEL_OPTIONS["hidden"].allowed
  assert rows["student.model.name"].spec.values == tuple(MODELS)
  option = next(iter(STATIC_OPTIONS))
  assert rows[f"teacher.loss.options.{option}"].meaning == STATIC_OPTIONS[option].doc


def _outside(spec: ref.Spec) -> list:
  """Values just outside a stated range."""
  if spec.kind == "choice":
    return ["not-one-of-them"]
  values = []
  if math.isfinite(spec.low):
    step = 1 if spec.kind == "int" else 0.5
    values.append(spec.low if spec.open_low else spec.low - step)
  if math.isfinite(spec.high):
    step = 1 if spec.kind == "int" else 0.5
    values.append(spec.high if spec.open_high else spec.high + step)
  return values


def _with(config, field, value):
  loose = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  *parents, leaf = field.split(".")
  node = loose
  for p in parents:
    node = node[p]
  node[leaf] = value
  return loose


def _checkable():
  """(field, value) for every stated range of ``FIELDS`` and the simulator's knobs."""
  cases = []
  fields = {f for name, arg in CONFIGS for f in _fields(name, arg)}
  for entry, (spec, _) in ref.FIELDS.items():
    for field in ([entry.replace("<role>", r) for r in ("teacher", "student")]
                  if "<role>" in entry else [entry]):
      if field in fields and spec.kind != "text":
        cases += [(field, v) for v in _outside(spec)]
  return cases


@pytest.mark.parametrize("field, value", _checkable())
def test_a_value_outside_the_stated_range_is_refused(field, value):
  refused = []
  for name, arg in CONFIGS:
    config = repo_config(name, arg)
    if field not in dict(ref.flatten(config)):
      continue
    validate_config(config)  # the file's own values are inside the stated ranges
    try:
      validate_config(_with(config, field, value))
    except ValueError as e:  # ConfigError and the data floor's errors are ValueErrors
      refused.append(str(e))
  assert any(field in message for message in refused), (
      f"{field}={value!r} is outside the range stated in config_reference.FIELDS but no "
      f"shipped config refuses it (messages: {refused})")


def test_markdown_has_one_table_per_group_and_escapes_bars():
  text = ref.format_markdown(ref.describe_fields(repo_config("quickstart")))
  assert text.startswith("### Top-level fields")
  assert text.count("### `sweep`") == 1 and text.count("### `student`") == 1
  for line in text.splitlines():
    if line.startswith("| `"):
      assert line.replace("\\|", "").count("|") == 5, line
