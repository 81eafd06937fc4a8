"""Choosing a sweep point: on the validation split, reported on the test split.

A run's ``results.csv`` holds every metric twice: on the test split (``ndcg@10``) and on
the validation split (``valid/ndcg@10``). Choosing the best point by its test value and
then reporting that same test value overstates it (the maximum of noisy estimates is
biased upwards: the winner's curse, Cawley & Talbot 2010, "On over-fitting in model
selection and subsequent selection bias in performance evaluation", JMLR 11). So every
pick in this package (the report's selection line, the heatmap's outlined cell, the
Pareto front of ``prerank-jax report``, the notebooks) ranks points by ``valid/<metric>``
and only *reports* ``<metric>``.

This module reads DataFrames of :mod:`prerank_jax.analysis.load` and imports nothing from
the rest of the package.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

#: The prefix of the validation split's metric columns in results.csv.
VALID_PREFIX = "valid/"


def valid_column(metric: str) -> str:
  """``"ndcg@10"`` → ``"valid/ndcg@10"``: the column a point is chosen on."""
  return f"{VALID_PREFIX}{metric}"


def require_valid(frame: pd.DataFrame, metric: str, *, what: str) -> str:
  """The ``valid/<metric>`` column of ``frame``, or a ``ValueError`` saying how to get it.

  Raises:
    ValueError: naming ``what`` asked, the metric and the command that adds the column (a
      run written before validation metrics existed: ``prerank-jax eval <run dir>``
      re-evaluates it from its checkpoints).
  """
  column = valid_column(metric)
  if metric not in frame.columns:
    raise ValueError(f"{what}: {metric!r} is not a column; columns are {list(frame.columns)}")
  if column not in frame.columns:
    raise ValueError(f"{what}: no {column!r} column to choose on (a run written before "
                     "validation metrics existed); `prerank-jax eval <run dir>` "
                     "re-evaluates it and adds the valid/ columns. The test split is "
                     "never used to choose.")
  return column


def best_on_valid(frame: pd.DataFrame, metric: str, *,
                  by: Sequence[str] = ("setup", "program"),
                  exclude: str | None = None) -> pd.DataFrame:
  """Per group, the student point with the best validation mean, and its test mean.

  Definition: among the student rows (``role == "student"``) that did not diverge, and
  whose ``point`` does not match ``exclude`` (a regex), the mean over seeds (and student
  replicates) of ``valid/<metric>`` per ``by`` group and ``model``; the model with the
  highest mean is selected (ties: the first in the frame's order), and its mean
  ``<metric>`` on the test split is reported beside it.

  Args:
    frame: rows of :func:`~prerank_jax.analysis.load.load_runs` (or any frame with
      ``model``, ``<metric>`` and ``valid/<metric>``).
    metric: the metric's test column name, e.g. ``"ndcg@10"`` or ``"R@(10,25%)"``.
    by: the columns that define a group (those present are used).
    exclude: a regex of points never selected (e.g. ``"^gt-only"``); ``None`` keeps all.

  Returns:
    One row per group: the ``by`` columns, ``model``, ``point`` (when present),
    ``valid/<metric>`` (the mean it was chosen on), ``<metric>`` (its test mean, reported
    only), ``n`` (rows averaged) and ``candidates`` (how many points competed).

  Raises:
    ValueError: without a ``valid/<metric>`` column (:func:`require_valid`) or without a
      student row.
  """
  column = require_valid(frame, metric, what="best_on_valid")
  part = frame
  if "role" in part.columns:
    part = part[part["role"] == "student"]
  if "status" in part.columns:
    part = part[part["status"] != "diverged"]
  if exclude and "point" in part.columns:
    part = part[~part["point"].astype(str).str.contains(exclude, regex=True)]
  if part.empty:
    raise ValueError(f"best_on_valid: no student rows to choose from for {metric!r}")
  keys = [c for c in by if c in part.columns]
  part = part.assign(**{c: part[c].fillna("") for c in keys})
  rows = []
  for key, group in (part.groupby(keys, sort=False) if keys else [((), part)]):
    key = key if isinstance(key, tuple) else (key,)
    cols = ["model", *(["point"] if "point" in group.columns else [])]
    means = group.groupby("model", sort=False).agg(
        valid=(column, lambda s: pd.to_numeric(s).mean()),
        test=(metric, lambda s: pd.to_numeric(s).mean()), n=(metric, "size"))
    finite = means[np.isfinite(means["valid"].to_numpy(np.float64))]
    if finite.empty:
      continue
    model = finite["valid"].idxmax()
    first = group[group["model"] == model].iloc[0]
    rows.append({**dict(zip(keys, key)), **{c: first[c] for c in cols},
                 column: float(finite.at[model, "valid"]),
                 metric: float(finite.at[model, "test"]), "n": int(finite.at[model, "n"]),
                 "candidates": int(len(finite))})
  if not rows:
    raise ValueError(f"best_on_valid: no student point with a finite {column!r}")
  return pd.DataFrame(rows)
