"""Model hyperparameters: one registry of every option any model reads.

Configs are locked ``ml_collections.ConfigDict`` s, so a field can only be overridden if it
exists. ``config.<role>.model`` therefore carries ``name`` plus *every* option of
:data:`MODEL_OPTIONS` at its default (see :func:`model_config`); each model declares the
options it reads (``MODELS[name].options``) and :func:`prerank_jax.models.build_model` passes
only those. Options a model does not read are ignored, so pointing a config at another
model is a one-field override (``--config.student.model.name=two_tower``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence

from prerank_jax import checks

# Feature groups whose columns a student may select, and the option naming the selection.
COLUMN_OPTIONS = {"context_features": "context", "item_features": "items"}


@dataclasses.dataclass(frozen=True)
class Option:
  """A static model hyperparameter: a default, a doc string and a validator.

  Attributes:
    default: the value in the config when nobody overrides it.
    doc: what it controls and which models read it.
    validator: ``value -> bool``, True when the value is allowed.
    allowed: the valid range in words, used in error messages.
  """

  default: Any
  doc: str
  validator: Callable[[Any], bool]
  allowed: str

  def check(self, value: Any, field: str) -> None:
    """Raises ``ConfigError("<field>: must be <allowed>, got <value>")`` if not allowed."""
    checks.require(self.validator(value), field, f"must be {self.allowed} ({self.doc})", value)


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
  return lambda v: checks.is_int(v) and low <= v <= high


def _widths(min_len: int) -> Callable[[Any], bool]:
  return lambda v: (isinstance(v, (tuple, list)) and len(v) >= min_len
                    and all(checks.is_int(w) and 1 <= w <= 1_000_000 for w in v))


_columns = checks.is_index_tuple


def _vocab(v: Any) -> bool:
  return isinstance(v, (tuple, list)) and all(
      checks.is_int(x) and 2 <= x <= 2**31 - 1 for x in v)


MODEL_OPTIONS: dict[str, Option] = {
    "hidden": Option(
        (64, 32), "widths of the hidden ReLU layers of the deep network (MLPs, DCN-v2)",
        _widths(1), "a non-empty tuple of ints >= 1"),
    "context_features": Option(
        (), "students: column indices of batch.context the model reads; () = all",
        _columns, "a tuple of distinct column indices >= 0 (() = all columns)"),
    "item_features": Option(
        (), "students: column indices of batch.items the model reads; () = all",
        _columns, "a tuple of distinct column indices >= 0 (() = all columns)"),
    "se_gate": Option(
        False, "mlp_student: squeeze-and-excitation gate s = σ(Wx + b) over the input "
        "features (COLD); reports per-feature importance", lambda v: isinstance(v, bool),
        "True or False"),
    "embed_dim": Option(
        16, "two_tower/int_tower: embedding size D of each tower's output",
        _int_in(1, 65_536), "an int in [1, 65536]"),
    "tower_hidden": Option(
        (64,), "two_tower/int_tower: hidden ReLU widths of each tower (() = linear towers)",
        _widths(0), "a tuple of ints >= 1 (may be empty)"),
    "interaction_dim": Option(
        16, "int_tower: hidden width of the interaction MLP on [u, v, u⊙v]",
        _int_in(1, 65_536), "an int in [1, 65536]"),
    "cross_layers": Option(
        3, "dcn_v2: number L of cross layers x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l",
        _int_in(1, 64), "an int in [1, 64]"),
    "cross_rank": Option(
        0, "dcn_v2: rank r of each W_l = U_l V_lᵀ; 0 = full rank (F×F)",
        _int_in(0, 65_536), "an int in [0, 65536]"),
    "dcn_structure": Option(
        "stacked", "dcn_v2: 'stacked' (deep network on the cross output) or 'parallel' "
        "(cross and deep side by side, concatenated)",
        lambda v: v in ("stacked", "parallel"), "one of ['parallel', 'stacked']"),
    "context_vocab": Option(
        (), "dssm/din: rows of the embedding table of each context ID column (batch."
        "context_ids), the reserved row 0 included (a hashed column: its hash_buckets)",
        _vocab, "a tuple of ints in [2, 2147483647], one per context ID column"),
    "item_vocab": Option(
        (), "dssm/din: rows of the embedding table of each item ID column (batch.item_ids; "
        "behaviour column j shares table j), the reserved row 0 included",
        _vocab, "a tuple of ints in [2, 2147483647], one per item ID column"),
    "id_embed_dim": Option(
        16, "dssm/din: width d of every ID embedding table", _int_in(1, 4096),
        "an int in [1, 4096]"),
    "id_tower": Option(
        (128, 64, 32), "dssm: widths of the user and item towers, the last one the output "
        "size D (RecFlow's DSSM: 128-64-32)", _widths(1), "a non-empty tuple of ints >= 1"),
    "attention_hidden": Option(
        (32,), "din: widths of the target-attention activation MLP", _widths(1),
        "a non-empty tuple of ints >= 1"),
}

# ID options: option -> (key of the data's column count in feature_sizes, what it counts).
ID_OPTIONS = {"context_vocab": ("context_ids", "context ID"),
              "item_vocab": ("item_ids", "item ID")}


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
  """``{"name": name, **every option at its default, **overrides}`` for a config.

  Raises:
    ConfigError: (a ValueError) an override that is not an option of :data:`MODEL_OPTIONS`.
  """
  unknown = sorted(set(overrides) - set(MODEL_OPTIONS))
  if unknown:
    raise checks.ConfigError(f"model_config: unknown model options {unknown}; valid "
                             f"options are {sorted(MODEL_OPTIONS)}")
  return {"name": name, **{k: o.default for k, o in MODEL_OPTIONS.items()}, **overrides}


def check_columns(columns: Sequence[int], size: int, field: str, group: str) -> None:
  """Every selected column of ``group`` must exist in data with ``size`` columns."""
  bad = [i for i in columns if not 0 <= i < size]
  if bad:
    raise checks.ConfigError(f"{field}: column indices must lie in [0, {size - 1}] (the data "
                             f"has {size} {group} features), got {tuple(columns)!r}")


def resolve_options(declared: Sequence[str], values: Mapping[str, Any], *,
                    field: str = "model",
                    feature_sizes: Optional[Mapping[str, int]] = None) -> dict[str, Any]:
  """Checks a model config and returns the options a model reads.

  Args:
    declared: the options the model reads.
    values: ``{option: value}``, e.g. a config's ``<role>.model`` without ``name``;
      options it lacks take their defaults.
    field: config path prefix for messages, e.g. ``"student.model"``.
    feature_sizes: ``{"context": Fc, "items": Fi, ...}`` of the data; if given, selected
      column indices are checked against it.

  Returns:
    ``{option: value}`` for the declared options, sequences as tuples.

  Raises:
    ConfigError: (a ValueError) ``<field>.<option>: ...`` for an unknown option, a value out of range or a
      column index the data does not have.
  """
  unknown = sorted(set(values) - set(MODEL_OPTIONS) - {"name"})
  if unknown:
    raise checks.ConfigError(f"{field}.{unknown[0]}: unknown model option; valid options "
                             f"are {sorted(MODEL_OPTIONS)}")
  out = {}
  for opt in declared:
    value = values.get(opt, MODEL_OPTIONS[opt].default)
    MODEL_OPTIONS[opt].check(value, f"{field}.{opt}")
    if isinstance(value, list):
      value = tuple(value)
    if opt in COLUMN_OPTIONS and feature_sizes is not None:
      group = COLUMN_OPTIONS[opt]
      check_columns(value, int(feature_sizes[group]), f"{field}.{opt}", group)
    out[opt] = value
  if feature_sizes is not None:
    check_vocab_against_data(out, feature_sizes, field)
  return out


def check_vocab_against_data(options: Mapping[str, Any], feature_sizes: Mapping[str, int],
                             field: str) -> None:
  """The ID vocabularies a model reads must give one size per ID column of the data, and
  the behaviour sequence's ``Cs`` columns need ``Cs`` item tables to share.

  Raises:
    ConfigError: naming ``<field>.context_vocab`` / ``<field>.item_vocab``.
  """
  for opt, (key, what) in ID_OPTIONS.items():
    if opt not in options:
      continue
    columns = int(feature_sizes.get(key, 0))
    if len(options[opt]) != columns:
      raise checks.ConfigError(
          f"{field}.{opt}: the data has {columns} {what} columns (batch.{key}), so give "
          f"{columns} vocabulary sizes, got {tuple(options[opt])!r}")
  sequence = int(feature_sizes.get("sequence_ids", 0))
  if "item_vocab" in options and sequence > len(options["item_vocab"]):
    raise checks.ConfigError(
        f"{field}.item_vocab: the behaviour sequence has {sequence} columns that share the "
        f"first item tables, but only {len(options['item_vocab'])} item tables are given")
