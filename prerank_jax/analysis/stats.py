"""Statistics over seeds: mean ± t-interval, and paired differences against a baseline.

Two kinds of seed (columns of :func:`prerank_jax.analysis.load.load_runs`):

- ``seed``: the **world** (``config.seed``: the simulated data, its logs and the teacher),
  one per run;
- ``replicate_seed``: a student **replicate** inside a world (``sweep.seeds``:
  initialisation and data order).

Replicates of one world share its data and teacher, so they are not independent draws of
the world. The unit of replication is therefore the world when a group has ≥ 2 worlds
(each world's value is the mean over its replicates, as ``experiments/harness.py`` does);
with a single world the replicates are the units, and the interval then covers only
initialisation and data-order noise. The interval is Student's t over the n units,

  mean ± t_{(1 + level) / 2, n - 1} · s / √n,    s = sample std (ddof = 1),

undefined (NaN) for n < 2. A paired difference compares two models unit by unit (same
world, same replicate seeds), which removes the variance they share:
d_u = x_{model, u} − x_{baseline, u}, then the t-interval of mean(d) and the two-sided
paired t-test p-value (Student 1908; e.g. scipy.stats.ttest_rel).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special


def _check_level(level: float) -> float:
  if not 0.0 < float(level) < 1.0:
    raise ValueError(f"level: the confidence level must be in (0, 1), got {level!r}")
  return float(level)


def t_quantile(level: float, dof: int) -> float:
  """``t_{(1 + level) / 2, dof}``: the two-sided Student-t critical value (NaN if dof < 1)."""
  level = _check_level(level)
  if dof < 1:
    return math.nan
  return float(special.stdtrit(dof, 0.5 + level / 2.0))


def t_interval(values: Sequence[float], *, level: float = 0.95
               ) -> tuple[float, float, int]:
  """``(mean, half_width, n)`` of the finite values; the interval is mean ± half_width.

  Definition: half_width = t_{(1+level)/2, n-1} · s / √n with s the sample standard
  deviation (ddof = 1); NaN for n < 2; NaN mean for n = 0.
  """
  x = np.asarray(values, np.float64).reshape(-1)
  x = x[np.isfinite(x)]
  n = int(x.size)
  if n == 0:
    return math.nan, math.nan, 0
  mean = float(x.mean())
  if n < 2:
    return mean, math.nan, n
  return mean, t_quantile(level, n - 1) * float(x.std(ddof=1)) / math.sqrt(n), n


def _check_columns(frame: pd.DataFrame, names: Sequence[str], field: str) -> None:
  missing = [c for c in names if c not in frame.columns]
  if missing:
    raise ValueError(f"{field}: no column(s) {missing}; the frame has {list(frame.columns)}")


REPLICATES = ("seed", "replicate_seed")


def _present(frame: pd.DataFrame, names: Sequence[str] | str) -> list[str]:
  """The columns of ``names`` that exist and hold at least one value."""
  names = [names] if isinstance(names, str) else list(names)
  return [c for c in names if c in frame.columns and frame[c].notna().any()]


def _units(group: pd.DataFrame, value: str, keys: Sequence[str]) -> tuple[np.ndarray, str]:
  """The values of a group's replication units, and the unit's column.

  ``keys`` are the replicate columns present, outermost first (``seed``, then
  ``replicate_seed``). The first key with ≥ 2 distinct values in the group is the unit;
  rows within a unit (its inner replicates) are averaged. With no such key each row is a
  unit (``"row"``).
  """
  values = pd.to_numeric(group[value], errors="coerce")
  for key in keys:
    if group[key].nunique(dropna=False) >= 2:
      return values.groupby(group[key], sort=True, dropna=False).mean().to_numpy(np.float64), key
  return values.to_numpy(np.float64), "row"


def mean_ci(frame: pd.DataFrame, metrics: Sequence[str] | str, *,
            by: Sequence[str] | str = ("setup", "model"),
            replicates: Sequence[str] | str = REPLICATES,
            level: float = 0.95) -> pd.DataFrame:
  """Mean ± t-interval of ``metrics`` over the replication units of each ``by`` group.

  Args:
    frame: rows as from :func:`~prerank_jax.analysis.load.load_runs` (one per model ×
      point × seed).
    metrics: column name(s) to summarise.
    by: grouping columns; every other row difference is treated as a replicate. The
      default pools runs of one ``setup`` (same config but the seed).
    replicates: the columns naming a replicate, outermost first: ``seed`` (the world)
      and ``replicate_seed`` (``sweep.seeds`` within a run). The unit is the outermost one
      that varies in the group, the rows inside a unit averaged (see the module doc). A
      replicate appearing twice in one group is an error (the same run loaded twice, or
      runs of different setups pooled); columns absent or empty are ignored.
    level: confidence level in (0, 1).

  Returns:
    One row per group (in order of first appearance) with the ``by`` columns, ``rows``
    (rows in the group), ``unit`` (the column the interval is over, or ``"row"``), ``n``
    (units) and per metric ``m``: ``m`` (mean of the unit values), ``m_ci`` (half width),
    ``m_lo``, ``m_hi``, ``m_std`` (of the unit values, ddof = 1) and ``m_n`` (finite unit
    values used).
  """
  metrics = [metrics] if isinstance(metrics, str) else list(metrics)
  by = [by] if isinstance(by, str) else list(by)
  _check_level(level)
  _check_columns(frame, [*metrics, *by], "mean_ci")
  keys = [c for c in _present(frame, replicates) if c not in by]
  out = []
  for key, group in frame.groupby(by, sort=False, dropna=False):
    key = key if isinstance(key, tuple) else (key,)
    if keys:
      dup = group[keys][group.duplicated(keys)]
      if len(dup):
        raise ValueError(
            f"mean_ci: group {dict(zip(by, key))} has replicate "
            f"{dup.iloc[0].to_dict()} more than once; group by more columns (e.g. "
            "by=('setup', 'model') or add 'run') so that each group holds one row per seed")
    row = {**dict(zip(by, key)), "rows": len(group)}
    for m in metrics:
      values, unit = _units(group, m, keys)
      mean, half, n = t_interval(values, level=level)
      finite = values[np.isfinite(values)]
      row.setdefault("unit", unit)
      row.setdefault("n", len(values))
      row.update({m: mean, f"{m}_ci": half, f"{m}_lo": mean - half, f"{m}_hi": mean + half,
                  f"{m}_std": float(finite.std(ddof=1)) if n > 1 else math.nan,
                  f"{m}_n": n})
    out.append(row)
  return pd.DataFrame(out)


def paired_diff(frame: pd.DataFrame, metric: str, *, baseline: str, by: str = "model",
                match: Sequence[str] | str = REPLICATES, level: float = 0.95
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
  """Differences of ``metric`` against the ``baseline`` row, paired by seed, and their CI.

  Definition: for every value ``v`` of column ``by`` other than ``baseline`` and every
  ``match`` key present for both (world seed, replicate seed), ``d = x[v, key] −
  x[baseline, key]``; the differences are averaged within each unit (the outermost
  ``match`` column that varies: the world when there are ≥ 2, see the module doc), and
  the summary is mean(d_u) ± t_{(1+level)/2, n-1} · sd(d_u) / √n with the two-sided paired
  t-test p-value ``2 · P(T_{n-1} > |mean(d_u)| / (sd(d_u) / √n))``.

  Args:
    frame: results rows (:func:`~prerank_jax.analysis.load.load_runs`); filter it to one
      setup first if it pools several.
    metric: the column compared.
    baseline: the ``by`` value compared against, e.g. ``"student gt-only"``.
    by: the column naming what is compared (``model``, ``point``, ``program``...).
    match: the columns pairing rows, outermost first: ``seed``, ``replicate_seed`` (those
      absent or empty are dropped); add e.g. ``"program"`` to pair within it.
    level: confidence level in (0, 1).

  Returns:
    ``(per_seed, summary)``: ``per_seed`` has one row per pair: ``by``, the ``match``
    columns, ``metric``, ``baseline`` (the baseline's value) and ``diff``; ``summary`` has
    per compared value ``by``, ``unit``, ``n`` (units), ``diff`` (mean), ``diff_ci``,
    ``diff_lo``, ``diff_hi`` and ``p``.
  """
  _check_level(level)
  _check_columns(frame, [metric, by], "paired_diff")
  match = _present(frame, match)
  if not match:
    raise ValueError("paired_diff: match names no column with values; pairs need a "
                     f"replicate column such as 'seed' (columns: {list(frame.columns)})")
  if baseline not in set(frame[by]):
    raise ValueError(f"paired_diff: baseline {baseline!r} is not a value of {by!r}; "
                     f"values are {list(dict.fromkeys(frame[by]))}")
  keyed = frame[[by, *match, metric]].copy()
  keyed[metric] = pd.to_numeric(keyed[metric], errors="coerce")
  dup = keyed.duplicated([by, *match])
  if dup.any():
    raise ValueError(f"paired_diff: {keyed.loc[dup, [by, *match]].iloc[0].to_dict()} "
                     "appears more than once; filter the frame to one setup or add "
                     "columns to match")
  base = keyed[keyed[by] == baseline].drop(columns=by).rename(columns={metric: "baseline"})
  per_seed = keyed[keyed[by] != baseline].merge(base, on=match, how="inner")
  per_seed["diff"] = per_seed[metric] - per_seed["baseline"]
  summary = []
  for value, group in per_seed.groupby(by, sort=False):
    d, unit = _units(group, "diff", match)
    d = d[np.isfinite(d)]
    mean, half, n = t_interval(d, level=level)
    p = math.nan
    if n > 1:
      sem = float(d.std(ddof=1)) / math.sqrt(n)
      if sem > 0:
        p = float(2.0 * special.stdtr(n - 1, -abs(mean) / sem))
      elif mean != 0:
        p = 0.0
    summary.append({by: value, "unit": unit, "n": n, "diff": mean, "diff_ci": half,
                    "diff_lo": mean - half, "diff_hi": mean + half, "p": p})
  return per_seed.reset_index(drop=True), pd.DataFrame(
      summary, columns=[by, "unit", "n", "diff", "diff_ci", "diff_lo", "diff_hi", "p"])
