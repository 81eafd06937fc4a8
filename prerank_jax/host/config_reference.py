"""Every config field with its default, allowed range and meaning: one table, two renderings.

``prerank-jax config [--config=…]`` prints it for the resolved config (value, the config
file's default, allowed range, meaning), and the documentation site renders it as the
config reference (``docs/_ext/prerank_docs.py``), so the page cannot drift from the code:

* defaults are read from the config file itself (``configs/quickstart.py:get_config()``
  and the files built on it);
* ranges and meanings come from the validation tables where the code has them: the loss
  registry (:data:`~prerank_jax.losses.registry.HPARAMS`,
  :data:`~prerank_jax.losses.registry.STATIC_OPTIONS`, the loss and weighting names), the
  model options (:data:`~prerank_jax.models.options.MODEL_OPTIONS`, the model names), the
  simulator's knobs, the dataset registry and the evaluation and pipeline choices;
* the remaining fields, whose checks are code in :func:`prerank_jax.config.validate_config`
  and :func:`prerank_jax.data.validation.validate_data_config`, are described in
  :data:`FIELDS` below; ``tests/host/test_config_reference.py`` fails when a config field
  has no entry, when an entry names no field, and when a value just outside a stated
  range is *not* refused by validation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping

import ml_collections

__all__ = ["Spec", "FieldDoc", "FIELDS", "describe_fields", "flatten", "format_table",
           "format_markdown"]


@dataclasses.dataclass(frozen=True)
class Spec:
  """An allowed range: ``kind`` is ``"choice"`` (``values``), ``"int"`` or ``"number"``
  (``low``/``high``, ends open where asked) or ``"text"`` (``text`` says it in words)."""

  kind: str
  values: tuple = ()
  low: float = -math.inf
  high: float = math.inf
  open_low: bool = False
  open_high: bool = False
  text: str = ""

  def describe(self) -> str:
    """The range in words, e.g. ``int in [1, 64]`` or ``one of 'exp2', 'linear'``."""
    if self.kind == "choice":
      return "one of " + ", ".join(repr(v) for v in self.values)
    if self.kind in ("int", "number"):
      left = "(" if self.open_low else "["
      right = ")" if self.open_high or math.isinf(self.high) else "]"
      fmt = lambda x: (("inf" if x > 0 else "-inf") if math.isinf(x)
                       else str(int(x)) if float(x).is_integer() else f"{x:g}")
      what = "int" if self.kind == "int" else "number"
      return f"{what} in {left}{fmt(self.low)}, {fmt(self.high)}{right}"
    return self.text


def choice(*values: Any) -> Spec:
  return Spec("choice", values=tuple(values))


def integer(low: float, high: float = math.inf) -> Spec:
  return Spec("int", low=low, high=high)


def number(low: float, high: float = math.inf, *, open_low: bool = False,
           open_high: bool = False) -> Spec:
  return Spec("number", low=low, high=high, open_low=open_low, open_high=open_high)


def text(words: str) -> Spec:
  return Spec("text", text=words)


BOOL = choice(True, False)
PATH = text("a path string ('' = the default named here)")
COLUMN = text("a column name, or '' for none")
COLUMNS = text("a tuple of column names")
FEATURE_IDS = text("a tuple of distinct feature ids >= 0 (() = all)")

# Fields whose checks are code (prerank_jax/config.py, prerank_jax/data/validation.py):
# {field: (allowed, meaning)}. ``<role>`` stands for ``teacher`` and ``student``.
FIELDS: dict[str, tuple[Spec, str]] = {
    "name": (text("letters, digits, '.', '_' or '-', starting with a letter or digit"),
             "run name: the run directory is <workdir>/<name>"),
    "workdir": (PATH, "folder that holds the run directories"),
    "overwrite": (BOOL, "replace an existing run directory of this name (only once the new "
                  "run has finished)"),
    "seed": (integer(0, 2**31 - 1), "world seed: the data, the logs and the teacher; the "
             "students' seed too unless sweep.seeds is set"),
    "progress": (BOOL, "show progress bars"),
    "resume": (BOOL, "continue <workdir>/<name> from its newest checkpoint "
               "(or use `prerank-jax resume <run dir>`)"),
    "checkpoint_every": (integer(0), "chunks between Orbax checkpoints (and one after the "
                         "last); 0 = only at the end"),
    "wandb.project": (text("a W&B project name"), "W&B project of the per-point runs"),
    "distributed.coordinator_address": (
        text("'host:port' with a port in [1, 65535], or '' for one process"),
        "process 0's address in a multi-process run"),
    "distributed.num_processes": (integer(1, 65536), "processes (hosts) in the run"),
    "distributed.process_id": (text("int in [0, distributed.num_processes - 1]"),
                               "this process's index; process 0 writes the files"),
    "distributed.cpu_devices_per_process": (integer(0, 4096),
                                            "CPU devices to simulate per process; 0 = "
                                            "JAX's default"),
    "<role>.num_epochs": (integer(1), "training epochs"),
    "<role>.epochs_per_chunk": (text("int in [1, <role>.num_epochs] that divides it"),
                                "epochs per compiled call; the host logs, shows progress "
                                "and checkpoints between calls"),
    "<role>.batch_size": (text("int in [1, the train split's requests]"),
                          "requests per optimizer step"),
    "<role>.embedding_update": (choice("dense", "sparse"),
                                "Adam on the ID embedding tables (dssm, din): 'sparse' "
                                "updates only the rows a step looks up (lazy Adam: other "
                                "rows' moments do not decay), 'dense' every row"),
    "<role>.loss.ensemble_weights": (
        text("() or one number >= 0 per teacher (not all 0)"),
        "per-teacher weights of the ensemble combiner; () = uniform"),
    "<role>.loss.propensity_floor": (number(0, 1, open_low=True),
                                     "every propensity weighting (gt_weighting) divides by "
                                     "max(propensity, this floor), so weights are <= "
                                     "1/floor (was ipw_clip)"),
    "teacher.learning_rate": (number(0, math.inf, open_low=True, open_high=True),
                              "the teacher's Adam learning rate"),
    "teacher.num_teachers": (integer(1, 64), "> 1: an ensemble of teachers of one "
                             "architecture (different seeds), trained as one vmapped sweep"),
    "teacher.restore_from": (PATH, "a run directory over the same data whose finished "
                             "teacher this run reuses ('' = train one)"),
    "teacher.ensemble_with": (text("a tuple of run directories"),
                              "runs over the same data whose finished teachers (any "
                              "architecture) join this run's as ensemble members"),
    "sweep.mode": (choice("product", "zip"), "how the sweep axes combine"),
    "sweep.programs": (text("'' or 'field=v1|v2; field=v1|v2' (Python literals)"),
                       "structural axes: each combination is its own compiled program"),
    "sweep.gt_only_baseline": (BOOL, "add a student trained on the exposed labels alone "
                               "(alpha = 0) to the same program"),
    "sweep.seeds": (text("a tuple of distinct ints in [0, 2^31 - 1]"),
                    "student replicate seeds: every point once per seed, in the same "
                    "program; () = one replicate seeded by config.seed"),
    "sweep.group_size": (integer(-1, 4096), "-1 = auto (one vmap on GPU/TPU, one point at "
                         "a time on CPU); 0 = one vmap of all points; g > 0 = vmap g points "
                         "at a time, scanned"),
    "eval.k": (integer(1), "cut-off k of ndcg@k, mrr, recall@k, precision@k, R@(k, r) and "
               "the cascade metrics"),
    "eval.keep_ratios": (text("a non-empty tuple of ratios in (0, 1]"),
                         "keep ratios r: the pre-ranker keeps ceil(r * n) candidates"),
    "eval.monitor_keep_ratio": (number(0, 1, open_low=True),
                                "keep ratio of the validation metrics logged each epoch"),
    "eval.relevant_grade": (number(0, math.inf, open_low=True),
                            "a true grade >= this counts as relevant (mrr, recall, "
                            "precision)"),
    "streaming.worker_count": (integer(0), "grain worker processes (0 = read in this "
                               "process)"),
    "streaming.num_threads": (integer(1), "grain read threads"),
    "streaming.prefetch": (integer(1), "grain elements read ahead"),
    "streaming.steps_per_call": (integer(1), "train steps read as one grain element and "
                                 "run as one compiled call"),
    "source.data_dir": (PATH, "prepared datasets; '' = $TFDS_DATA_DIR or "
                        "~/tensorflow_datasets"),
    "source.manual_dir": (PATH, "raw files; '' = <data_dir>/downloads/manual/<dataset>"),
    "source.train_file": (PATH, "letor/tabular: the train file, relative to manual_dir "
                          "(tabular: required)"),
    "source.valid_file": (PATH, "letor/tabular: the validation file ('' = carved from "
                          "train)"),
    "source.test_file": (PATH, "letor/tabular: the test file ('' = carved from train)"),
    "source.valid_fraction": (number(0, 0.5, open_low=True, open_high=True),
                              "share of train requests carved out as validation without a "
                              "file"),
    "source.test_fraction": (number(0, 0.5, open_low=True, open_high=True),
                             "share of train requests carved out as test without a file"),
    "source.list_size": (integer(1), "N: longer lists are truncated (the rule is in each "
                         "loader's docstring)"),
    "source.min_list_size": (integer(1), "letor/tabular: shorter lists are dropped "
                             "(letor test splits keep every query)"),
    "source.num_exposed": (text("int in [1, source.list_size]"),
                           "letor: candidates the simulated logging ranker exposes"),
    "source.logging_noise": (number(0), "letor: noise of the simulated logging ranker"),
    "source.logging_feature": (integer(0), "letor: 0 = log by the judged grades plus "
                               "noise; f > 0 = by feature f"),
    "source.position_bias": (number(0), "letor: eta of the examination propensity "
                             "(1/p)^eta of the simulated logs"),
    "source.student_features": (FEATURE_IDS, "letor: feature ids the student sees"),
    "source.teacher_features": (FEATURE_IDS, "letor: feature ids the teacher sees"),
    "source.num_negatives": (text("int in [0, source.list_size - 1]"),
                             "movielens: unrated items sampled into each list"),
    "source.history_fraction": (number(0, 1, open_low=True, open_high=True),
                                "movielens: share of each user's ratings used as history "
                                "for the teacher's affinity features"),
    "source.request_column": (text("a column name"), "tabular: the request id column"),
    "source.label_column": (text("a column name"), "tabular: the label column (null where "
                            "the candidate was not shown)"),
    "source.exposed_column": (COLUMN, "tabular: 0/1 exposure column ('' = label not null)"),
    "source.truth_column": (COLUMN, "tabular: true relevance, if known ('' = metrics on "
                            "the logged labels)"),
    "source.propensity_column": (COLUMN, "tabular: examination propensity in (0, 1] of "
                                 "exposed rows"),
    "source.split_column": (COLUMN, "tabular: train/valid/test per row ('' = carve by "
                            "request)"),
    "source.context_columns": (COLUMNS, "tabular: request features (student and teacher)"),
    "source.item_columns": (text("a non-empty tuple of column names"),
                            "tabular: candidate features (student and teacher)"),
    "source.cross_columns": (COLUMNS, "tabular: interaction features, teacher only"),
    "source.candidate_column": (COLUMN, "tabular: the candidate IDs ('' = the row number "
                                "in its file)"),
    "source.context_id_columns": (COLUMNS, "tabular: request-side categorical ID columns "
                                  "(constant per request), hashed into source.id_buckets "
                                  "rows (docs/guides/id_features.md)"),
    "source.item_id_columns": (COLUMNS, "tabular: candidate-side categorical ID columns, "
                               "hashed into source.id_buckets rows"),
    "source.sequence_column": (COLUMN, "tabular: a list column of the user's behaviour (IDs "
                               "of the first item ID field), one list per request"),
    "source.sequence_length": (integer(1), "tabular: L, behaviour slots kept per request "
                               "(the list's first L entries)"),
    "source.id_buckets": (integer(2, 2**31 - 1), "tabular: hash buckets (embedding rows, "
                          "row 0 reserved for null/padding) of every ID column; the "
                          "models' context_vocab / item_vocab"),
    "source.teacher_score_columns": (COLUMNS, "tabular: the production ranker's logged "
                                     "scores, one column per teacher (several: an "
                                     "ensemble), read when teacher.model.name='logged'"),
    "source.teacher_score_file.train": (text("a tuple of files relative to "
                                             "source.manual_dir"),
                                        "letor: logged teacher scores of the train file, "
                                        "one file per teacher, one score a line"),
    "source.teacher_score_file.valid": (text("a tuple of files relative to "
                                             "source.manual_dir"),
                                        "letor: logged teacher scores of the valid file"),
    "source.teacher_score_file.test": (text("a tuple of files relative to "
                                            "source.manual_dir"),
                                       "letor: logged teacher scores of the test file"),
    "eval.protocol": (text("'' or 'recflow' (an unknown name is refused when the run "
                           "evaluates)"),
                      "'recflow' adds RecFlow's and LCRON's published metrics to the "
                      "results"),
    "source.recflow_protocol": (choice("coarse", "lcron"),
                                "recflow: RecFlow's coarse-ranking benchmark or LCRON's "
                                "two-stage protocol"),
    "source.recflow_train_days": (text("'YYYY-MM-DD:YYYY-MM-DD' (inclusive) or one day"),
                                  "recflow: the days read as the train split"),
    "source.recflow_test_day": (text("'YYYY-MM-DD' or a range, not overlapping the train "
                                     "days"), "recflow: the test day(s)"),
    "source.recflow_test_file": (text("a file name in others/"),
                                 "recflow: the coarse-ranking test file"),
    "source.recflow_label": (choice("effective_view", "long_view", "like", "follow",
                                    "forward", "comment"),
                             "recflow: the feedback used as the label"),
    "source.recflow_per_stage": (integer(1, 1000), "recflow/lcron: candidates per stage "
                                 "(4 stages: N = 4 x this)"),
    "teacher.score_kind": (text("one of 'logit', 'probability', 'rank' (checked when "
                                "teacher.model.name='logged')"),
                           "logged teacher: what the logged scores are (probabilities are "
                           "clipped; rank 1 = best)"),
    "teacher.missing": (text("one of 'mask', 'refuse' (checked when "
                             "teacher.model.name='logged')"),
                        "logged teacher: a missing score is "
                        "masked out of distillation, or the data are refused"),
}

# Simulator knobs (config.data, prerank_jax/data/simulator.py): what each one means.
SIMULATOR_MEANINGS: Mapping[str, str] = {
    "num_requests": "train requests",
    "num_eval_requests": "validation requests, and as many test requests",
    "list_size": "N: the longest candidate list",
    "min_list_size": "the shortest candidate list (lengths are uniform in between)",
    "num_exposed": "E: candidates the logging policy exposes per request",
    "num_users": "users in the world",
    "num_items": "items in the world",
    "latent_dim": "d: size of the latent user and item vectors",
    "context_features": "Fc: request features (student and teacher)",
    "item_features": "Fi: candidate features, the last one the popularity (student and "
                     "teacher)",
    "cross_features": "Fx: interaction features (teacher only)",
    "feature_noise": "noise on the context and item features",
    "cross_noise": "noise on the cross features",
    "retrieval_pool": "retrieval draws pool·N items and keeps the best by noisy utility",
    "retrieval_noise": "noise of the retrieval stage",
    "logging_noise": "noise of the logging policy that picks the exposed candidates",
    "logging_popularity": "weight of item popularity in the logging policy",
    "position_bias": "eta: exposed position p is examined with propensity (1/p)^eta",
    "label_grades": "K of the logged labels (2 = clicks)",
    "relevance_grades": "K of the true relevance grades",
    # The ID world (optional knobs; data.ids=False leaves the float-only world unchanged).
    "ids": "the ID world: items get Zipf-distributed categories and authors, users a "
           "behaviour sequence; the batch carries integer ID features",
    "num_authors": "ID world: number of authors",
    "num_categories": "ID world: number of categories",
    "sequence_length": "ID world: L, length of each user's behaviour sequence",
    "zipf_exponent": "ID world: exponent a of the Zipf popularity P(rank k) ∝ k^(−a)",
}


@dataclasses.dataclass(frozen=True)
class FieldDoc:
  """One row of the reference: ``field`` (dotted), its ``value`` in the resolved config,
  the config file's ``default``, the allowed range and the meaning."""

  field: str
  value: Any
  default: Any
  spec: Spec
  meaning: str
  documented: bool = True

  @property
  def allowed(self) -> str:
    return self.spec.describe()


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
  """``(dotted field, value)`` of every leaf of a (nested) config, in config order."""
  for key, value in config.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      yield from flatten(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def simulator_knobs() -> dict[str, tuple]:
  """The simulator's own range tables (``config.data``): ``{knob: (kind, low, high, …)}``,
  the required knobs and the optional ID-world knobs."""
  from prerank_jax.data import simulator
  return {**simulator._KNOBS, **getattr(simulator, "_ID_KNOBS", {})}


def _registry_entry(field: str) -> tuple[Spec, str] | None:
  """Range and meaning of a field described by one of the code's validation tables."""
  from prerank_jax.config import DATASETS
  from prerank_jax.data.letor import NORMALIZERS
  from prerank_jax.data.simulator_tfds import PRESETS as TFDS_PRESETS
  from prerank_jax.data.validation import INPUT_PIPELINES, STREAM_ORDERS, STREAM_READS
  from prerank_jax.evaluate import GAINS
  from prerank_jax.losses.ensemble import ENSEMBLES
  from prerank_jax.losses.registry import (GT_LOSSES, GT_WEIGHTINGS, HPARAMS, KD_LOSSES,
                                           STATIC_OPTIONS)
  from prerank_jax.metrics.ranking import EMPTY_MODES
  from prerank_jax.models import MODELS, MODEL_OPTIONS
  from prerank_jax.models.precision import COMPUTE_DTYPES

  parts = field.split(".")
  role = parts[0] if parts[0] in ("teacher", "student") else None
  rest = ".".join(parts[1:]) if role else field
  fixed = {
      "dataset": (choice(*DATASETS), "which data: the in-memory simulator or a dataset "
                  "written once as ArrayRecord (docs: your logs); parquet and csv are "
                  "aliases of tabular"),
      "input_pipeline": (choice(*INPUT_PIPELINES), "'device': the train split stays on "
                         "the device; 'grain': batches stream from the host"),
      "streaming.order": (choice(*STREAM_ORDERS), "grain: each point's device order, one "
                          "shared order, or per-point orders inside shared blocks"),
      "streaming.read_from": (choice(*STREAM_READS), "grain: host memory or the "
                              "dataset's ArrayRecord files"),
      "wandb.mode": (choice("offline", "online", "disabled"), "W&B tracking, one run per "
                     "sweep point; offline needs no network"),
      "eval.ndcg_empty": (choice(*EMPTY_MODES), "NDCG of a list without a relevant "
                          "candidate: excluded from the mean, 0 or 1"),
      "eval.gain": (choice(*GAINS), "NDCG gain: 2^y - 1 or y (trec_eval's ndcg_cut)"),
      "source.normalize": (choice(*NORMALIZERS), "letor: feature normalisation with train "
                           "statistics"),
      "source.preset": (choice("", *TFDS_PRESETS), "simulator_tfds: the simulator preset "
                        "to write; '' = config.data"),
  }
  if field in fixed:
    return fixed[field]
  knobs = simulator_knobs()
  if parts[0] == "data" and len(parts) == 2 and parts[1] in knobs:
    kind, low, high = knobs[parts[1]][:3]
    meaning = SIMULATOR_MEANINGS.get(parts[1], "")
    if kind == "bool":
      return BOOL, meaning
    if isinstance(high, str):
      return text(f"{kind} in [{low}, data.{high}]"), meaning
    high = math.inf if high is None else high
    return (integer(low, high) if kind == "int" else number(low, high)), meaning
  if parts[0] == "sweep" and len(parts) == 2 and parts[1] in HPARAMS:
    h = HPARAMS[parts[1]]
    return (text(f"a tuple of values in {h.describe()}; () = the default {h.default:g}"),
            h.doc)
  if role is None:
    return None
  if rest == "model.name":
    return choice(*MODELS), "the model (docs: models)"
  if rest.startswith("model.") and rest[6:] in MODEL_OPTIONS:
    o = MODEL_OPTIONS[rest[6:]]
    return text(o.allowed), o.doc
  if rest.startswith("loss.options.") and rest[13:] in STATIC_OPTIONS:
    o = STATIC_OPTIONS[rest[13:]]
    spec = choice(*o.choices) if o.choices else integer(o.low, o.high)
    return spec, o.doc
  losses = {
      "loss.kd": (choice(*KD_LOSSES, "none"), "distillation loss ('none': the teacher "
                  "learns from labels only)"),
      "loss.gt": (choice(*GT_LOSSES), "ground-truth loss on the logged labels"),
      "loss.ensemble": (choice(*ENSEMBLES), "how several teachers' scores are combined"),
      "loss.gt_weighting": (choice(*GT_WEIGHTINGS), "what the ground-truth term does with "
                            "the propensities (docs: learning from biased logs)"),
      "compute_dtype": (choice(*COMPUTE_DTYPES), "dtype of the forward pass; parameters, "
                        "optimizer state and losses stay float32"),
  }
  return losses.get(rest)


def _hand_entry(field: str) -> tuple[Spec, str] | None:
  parts = field.split(".")
  if parts[0] in ("teacher", "student"):
    generic = ".".join(["<role>", *parts[1:]])
    if generic in FIELDS:
      return FIELDS[generic]
  return FIELDS.get(field)


def describe_fields(config: ml_collections.ConfigDict,
                    defaults: ml_collections.ConfigDict | None = None) -> list[FieldDoc]:
  """One :class:`FieldDoc` per leaf of ``config``, in config order.

  Args:
    config: the resolved config (after overrides).
    defaults: the config file's own config (without overrides); ``None`` = ``config``.

  Returns:
    The rows; a field found in no table has ``documented=False`` (a test fails on it).
  """
  default_values = dict(flatten(defaults if defaults is not None else config))
  rows = []
  for field, value in flatten(config):
    entry = _registry_entry(field) or _hand_entry(field)
    documented = entry is not None
    spec, meaning = entry if entry else (text("(not documented)"), "(not documented)")
    rows.append(FieldDoc(field, value, default_values.get(field, value), spec, meaning,
                         documented))
  return rows


def _show(value: Any) -> str:
  if isinstance(value, tuple):
    return "(" + ", ".join(_show(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  if isinstance(value, float):
    return f"{value:g}"
  return repr(value)


def format_table(rows: list[FieldDoc]) -> str:
  """Plain text for the terminal: ``field = value`` (and ``default: …`` when overridden),
  then the allowed range and the meaning, indented."""
  lines = []
  for r in rows:
    changed = "" if _show(r.value) == _show(r.default) else f"   (default: {_show(r.default)})"
    lines.append(f"{r.field} = {_show(r.value)}{changed}")
    lines.append(f"    allowed: {r.allowed}")
    lines.append(f"    {r.meaning}")
  return "\n".join(lines)


def _cell(s: str) -> str:
  return s.replace("|", "\\|").replace("*", "\\*")


def format_markdown(rows: list[FieldDoc], *, group: bool = True) -> str:
  """Markdown tables (one per top-level group when ``group``): field, default, allowed
  range, meaning."""
  groups: dict[str, list[FieldDoc]] = {}
  for r in rows:
    groups.setdefault(r.field.split(".")[0] if "." in r.field else "" if group else "", []
                      ).append(r)
  out: list[str] = []
  for top, members in groups.items():
    if group:
      out += ["", f"### `{top}`" if top else "### Top-level fields", ""]
    out += ["| field | default | allowed | meaning |", "|---|---|---|---|"]
    out += [f"| `{r.field}` | `{_cell(_show(r.default))}` | {_cell(r.allowed)} | "
            f"{_cell(r.meaning)} |" for r in members]
  return "\n".join(out).lstrip("\n") + "\n"
