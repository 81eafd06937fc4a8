"""Run directories and experiment results as pandas DataFrames.

A finished run directory (``prerank-jax quickstart|sweep``, see ``host/runner.py``) holds

- ``results.csv``: one row per sweep point (``student <point>``, e.g. ``student
  temperature=1 alpha=0.5 learning_rate=0.003``), the teacher and the references
  (``oracle (truth)``, or ``oracle (logged labels)`` for data without a truth, and
  ``random``), with the swept hyperparameters (``temperature``, ``alpha``,
  ``learning_rate``), every metric
  on the test split and again on the validation split (``valid/<metric>``: what a point
  is chosen on, :mod:`prerank_jax.analysis.select`), the cost columns and ``status``
  (``ok`` | ``diverged`` | ``reference``);
- ``config.json``: the locked config it was run with;
- ``history.json``: per-epoch metrics of every student point (``students``) and of the
  teacher members (``teacher``, each metric ``[members, epochs]``), costs and timings.

:func:`load_runs` gives one row per model × sweep point × seed (a run has one seed,
``config.seed``; several seeds are several runs), with the run's config flattened into
dotted columns (``student.loss.kd``, ``teacher.model.name``, ...). :func:`load_history`
gives the per-epoch history as a long table. :func:`load_results_csv` reads any CSV with
the same row structure, such as ``experiments/results/<exp>/raw.csv``.

Files written before the names were unified (columns ``T``/``lr``, rows ``T=1 α=0.5
lr=0.003``, history keys ``valid_ndcg_true`` …) are read in today's names
(:func:`normalize_results`, :func:`normalize_history`; docs/reference/outputs.md, "Names").

This module reads files only; it imports nothing from the rest of the package.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import pandas as pd

PathLike = Union[str, Path]

#: Columns added to every results row, in this order, before the results.csv columns.
ID_COLUMNS = ("run", "seed", "replicate_seed", "setup", "model", "point", "role", "program",
              "results_model")
#: Config fields that do not change what a run computes: left out of ``setup``.
NOT_SETUP = ("name", "workdir", "seed", "overwrite", "resume", "progress", "checkpoint_every",
             "wandb", "distributed", "teacher.restore_from")
_PROGRAM = re.compile(r"^\[(?P<label>[^\]]*)\]\s*(?P<rest>.*)$")
_REPLICATE = re.compile(r"^(?P<base>.*?) seed=(?P<seed>-?\d+)$")

#: Names written by earlier versions → the current ones (docs/reference/outputs.md,
#: "Names"): results.csv columns, and the short forms inside row names.
OLD_COLUMNS = {"T": "temperature", "lr": "learning_rate"}
_OLD_IN_NAME = re.compile(r"(?<!\S)(T|α|lr)=")
_OLD_IN_NAME_NEW = {"T": "temperature", "α": "alpha", "lr": "learning_rate"}
#: Per-epoch history keys written by earlier versions → results names (``{k}``: eval.k;
#: ``{r}``: eval.monitor_keep_ratio as a keep label, e.g. ``25%``).
OLD_HISTORY = {"valid_ndcg_true": "valid/ndcg@{k}", "valid_ndcg_exposed": "valid/ndcg@{k}_logs",
               "valid_recall_teacher": "valid/R@({k},{r})"}


def normalize_name(name: Any) -> Any:
  """A model or point name in the current scheme: ``T=``, ``α=`` and ``lr=`` (written
  before the names were unified) become ``temperature=``, ``alpha=`` and
  ``learning_rate=``; current names and non-strings come back unchanged.

  Example: ``"student T=1 α=0.5"`` → ``"student temperature=1 alpha=0.5"``;
  ``"gt-only lr=0.01"`` → ``"gt-only learning_rate=0.01"``.
  """
  if not isinstance(name, str):
    return name
  return _OLD_IN_NAME.sub(lambda m: f"{_OLD_IN_NAME_NEW[m[1]]}=", name)


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
  """A results table (results.csv, an experiment's raw.csv) in the current names: the
  columns ``T`` / ``lr`` renamed ``temperature`` / ``learning_rate`` (a file holding both,
  old rows appended to by new ones, gets one column: the new one's values, else the old
  one's), and the names in ``model``, ``point`` and ``results_model`` through
  :func:`normalize_name`. Every reader of results calls it, so files written before the
  names were unified load as if written today. Returns a new frame."""
  frame = frame.copy()
  for old, new in OLD_COLUMNS.items():
    if old in frame.columns and new in frame.columns:
      frame[new] = frame[new].where(frame[new].notna(), frame[old])
      frame = frame.drop(columns=[old])
  frame = frame.rename(columns={old: new for old, new in OLD_COLUMNS.items()
                                if old in frame.columns})
  for column in ("model", "point", "results_model"):
    if column in frame.columns:
      frame[column] = frame[column].map(normalize_name)
  return frame


def normalize_history(metrics: Mapping[str, Any], *, k: int,
                      keep_ratio: float) -> dict[str, Any]:
  """Per-epoch history keys in the current names (:data:`OLD_HISTORY`): the names of the
  same metrics in results.csv, e.g. ``valid_ndcg_true`` → ``valid/ndcg@10``. ``k`` and
  ``keep_ratio`` are the run's ``eval.k`` and ``eval.monitor_keep_ratio``."""
  label = f"{100 * float(keep_ratio):g}%"
  return {OLD_HISTORY[m].format(k=int(k), r=label) if m in OLD_HISTORY else m: v
          for m, v in metrics.items()}


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested config dict → ``{dotted.name: value}``; lists become tuples (hashable).

  Example: ``{"student": {"loss": {"kd": "x"}}, "seed": 0}`` →
  ``{"student.loss.kd": "x", "seed": 0}``. An empty nested dict contributes no column.
  """
  out: dict[str, Any] = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten_config(value, prefix=f"{name}."))
    else:
      out[name] = _hashable(value)
  return out


def _hashable(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  return value


def setup_key(flat_config: Mapping[str, Any]) -> str:
  """Short fingerprint of a run's config without its seed and bookkeeping fields.

  Runs with the same ``setup`` and different ``seed`` are replicates of one experiment;
  the statistics over seeds (:mod:`prerank_jax.analysis.stats`) pool exactly those.
  Left out: ``NOT_SETUP`` (name, workdir, seed, W&B, resume flags, ...).
  """
  kept = {k: v for k, v in flat_config.items()
          if not any(k == f or k.startswith(f + ".") for f in NOT_SETUP)}
  text = json.dumps(kept, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:8]


def find_run_dirs(paths: Iterable[PathLike]) -> list[Path]:
  """Run directories under ``paths``: each path itself if it holds ``results.csv``,
  otherwise its sub-directories that do (one level, sorted, e.g. a ``runs/`` workdir)."""
  found: list[Path] = []
  for p in map(Path, paths):
    if (p / "results.csv").exists():
      found.append(p)
      continue
    if not p.is_dir():
      raise FileNotFoundError(f"{p}: not a directory")
    subs = sorted(d for d in p.iterdir() if (d / "results.csv").exists())
    if not subs:
      raise FileNotFoundError(f"{p}: no results.csv in it or in its sub-directories "
                              "(is it a finished run dir or a workdir of runs?)")
    found += subs
  return found


def split_model(model: str) -> tuple[str, str, str]:
  """``(point, role, program)`` of a results.csv ``model`` name.

  ``"student [kd=logit_mse] temperature=2 alpha=0.5"`` → ``("temperature=2 alpha=0.5",
  "student", "kd=logit_mse")``;
  ``"teacher"`` → ``("teacher", "teacher", "")``; ``"oracle (truth)"`` / ``"random"`` →
  role ``"reference"``.
  """
  if model.startswith("student "):
    rest = model[len("student "):]
    m = _PROGRAM.match(rest)
    if m:
      return m["rest"], "student", m["label"]
    return rest, "student", ""
  if model == "teacher" or model.startswith("teacher "):
    return model, "teacher", ""
  return model, "reference", ""


def _annotate(frame: pd.DataFrame, *, run: str, seed: Any, setup: str) -> pd.DataFrame:
  if "model" not in frame.columns:
    raise ValueError(f"{run}: a results table needs a 'model' column, got "
                     f"{list(frame.columns)}")
  raw = frame["model"].astype(str)
  found = [_REPLICATE.match(m) for m in raw]
  model = [m["base"] if m else name for m, name in zip(found, raw)]
  parts = [split_model(m) for m in model]
  replicate = (frame["replicate_seed"] if "replicate_seed" in frame.columns else
               pd.Series([float(m["seed"]) if m else math.nan for m in found], index=frame.index))
  ids = pd.DataFrame({
      "run": run,
      "seed": frame["seed"] if "seed" in frame.columns else seed,
      "replicate_seed": replicate,
      "setup": frame["setup"] if "setup" in frame.columns else setup,
      "model": model,
      "point": frame["point"] if "point" in frame.columns else [p[0] for p in parts],
      "role": frame["role"] if "role" in frame.columns else [p[1] for p in parts],
      "program": frame["program"] if "program" in frame.columns else [p[2] for p in parts],
      "results_model": raw,
  }, index=frame.index)
  # A blank CSV cell (an experiment's raw.csv) is no program, not NaN.
  program = ids["program"].astype(object)
  ids["program"] = program.where(program.notna(), "").astype(str)
  rest = frame.drop(columns=[c for c in ID_COLUMNS if c in frame.columns])
  return pd.concat([ids, rest], axis=1)


def read_config(run_dir: PathLike) -> dict[str, Any]:
  """The flattened ``config.json`` of a run dir (``{}`` when it has none)."""
  path = Path(run_dir) / "config.json"
  return flatten_config(json.loads(path.read_text())) if path.exists() else {}


def load_run(run_dir: PathLike, *, config_columns: bool = True) -> pd.DataFrame:
  """One run's ``results.csv`` as a DataFrame, one row per model.

  Columns: ``run`` (the directory's name), ``seed`` (``config.seed``: the data, the
  teacher and the default student seed), ``replicate_seed`` (the student replicate of
  ``sweep.seeds`` within the run; NaN without), ``setup`` (:func:`setup_key`), ``model``
  (results.csv's name without the `` seed=<s>`` replicate suffix, so that replicates share
  it), ``point`` (the sweep point's name, e.g. ``temperature=2 alpha=0.5
  learning_rate=0.003``), ``role``
  (``student`` | ``teacher`` | ``reference``), ``program`` (the structural program's label,
  ``""`` without ``sweep.programs``), ``results_model`` (the name as in results.csv), then
  every results.csv column (metrics as floats; blank cells as NaN), then, with
  ``config_columns``, every config field as a dotted column not already present.
  """
  run_dir = Path(run_dir)
  results = run_dir / "results.csv"
  if not results.exists():
    raise FileNotFoundError(f"{run_dir}: no results.csv (is it a finished run dir?)")
  frame = normalize_results(pd.read_csv(results, keep_default_na=False, na_values=[""]))
  flat = read_config(run_dir)
  seed = flat.get("seed", math.nan)
  frame = _annotate(frame, run=run_dir.name, seed=seed, setup=setup_key(flat))
  frame["run_dir"] = str(run_dir)
  if config_columns:
    extra = {k: v for k, v in flat.items() if k not in frame.columns}
    if extra:
      # A tuple in a cell must stay one object: build the block column by column.
      block = pd.DataFrame({k: pd.Series([v] * len(frame), index=frame.index, dtype=object)
                            if isinstance(v, tuple) else v for k, v in extra.items()},
                           index=frame.index)
      frame = pd.concat([frame, block], axis=1)
  return frame


def load_runs(paths: Iterable[PathLike] | PathLike, *,
              config_columns: bool = True) -> pd.DataFrame:
  """Several runs (or workdirs of runs, see :func:`find_run_dirs`) as one DataFrame.

  One row per model × sweep point × seed; the columns are the union of the runs' columns
  (a run without a column has NaN there). See :func:`load_run` for the columns.
  """
  if isinstance(paths, (str, Path)):
    paths = [paths]
  frames = [load_run(d, config_columns=config_columns) for d in find_run_dirs(paths)]
  return pd.concat(frames, ignore_index=True, sort=False)


def load_results_csv(paths: Sequence[PathLike] | PathLike, *,
                     seed: Any = math.nan) -> pd.DataFrame:
  """Any CSV of results rows (``experiments/results/<exp>/raw.csv``) as a DataFrame.

  Each file needs a ``model`` column; a ``seed`` column is kept (otherwise ``seed``
  fills it), and so are ``point``/``role``/``program`` when present (otherwise they are
  derived from ``model`` as for run dirs). ``run`` is the file's directory name (the
  experiment), ``setup`` the file's own column, else its ``method`` column (one method of
  an experiment is one config over its world seeds), else the file's path.
  """
  if isinstance(paths, (str, Path)):
    paths = [paths]
  frames = []
  for path in map(Path, paths):
    frame = normalize_results(pd.read_csv(path, keep_default_na=False, na_values=[""]))
    setup = frame["method"].astype(str) if "method" in frame.columns else str(path)
    frames.append(_annotate(frame, run=path.parent.name, seed=seed, setup=setup))
  if not frames:
    raise ValueError("load_results_csv: needs at least one CSV path")
  return pd.concat(frames, ignore_index=True, sort=False)


def load_history(paths: Iterable[PathLike] | PathLike) -> pd.DataFrame:
  """Per-epoch training history of runs as a long table: one row per run × model × epoch.

  Columns: the identifiers of :func:`load_run` (``model``: ``student <point>``,
  ``teacher`` or ``teacher <i>`` for an ensemble of seeds; ``replicate_seed`` from the
  `` seed=<s>`` suffix of a replicate), ``epoch`` (1-based: the value after that many
  epochs), then one column per logged metric, named as the same metric in results.csv
  (``loss``, ``valid/ndcg@10``, ``valid/ndcg@10_logs``, ``valid/R@(10,25%)``, ...; NaN where
  a model does not log it, e.g. the teacher has no teacher consistency). Histories written
  before the names were unified are renamed on read (:func:`normalize_history`).
  """
  paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
  frames = []
  for run_dir in find_run_dirs(paths):
    path = run_dir / "history.json"
    if not path.exists():
      raise FileNotFoundError(f"{run_dir}: no history.json")
    history = json.loads(path.read_text())
    flat = read_config(run_dir)
    # Histories written before the names were unified: their keys in results names.
    rename = lambda m: normalize_history(m, k=flat.get("eval.k", 10),
                                         keep_ratio=flat.get("eval.monitor_keep_ratio", 0.25))
    curves: list[tuple[str, dict[str, list[float]]]] = []
    teacher = rename(history.get("teacher", {}))
    members = len(next(iter(teacher.values()), []))
    for i in range(members):
      name = "teacher" if members == 1 else f"teacher {i}"
      curves.append((name, {m: v[i] for m, v in teacher.items()}))
    curves += [(f"student {normalize_name(name)}", rename(c))
               for name, c in history.get("students", {}).items()]
    rows = []
    for model, metrics in curves:
      epochs = max((len(v) for v in metrics.values()), default=0)
      for e in range(epochs):
        rows.append({"model": model, "epoch": e + 1,
                     **{m: (v[e] if e < len(v) else math.nan) for m, v in metrics.items()}})
    frame = pd.DataFrame(rows)
    if frame.empty:
      continue
    frames.append(_annotate(frame, run=run_dir.name, seed=flat.get("seed", math.nan),
                            setup=setup_key(flat)))
  if not frames:
    raise ValueError(f"load_history: no per-epoch history in {list(paths)}")
  return pd.concat(frames, ignore_index=True, sort=False)
