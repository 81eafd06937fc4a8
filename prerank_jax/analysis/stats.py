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


# ------------------------------------------------- multiplicity, sign-flip test, power
#
# The verdicts of ``experiments/harness.py`` rest on these (see docs/research/methods.md):
# Holm's step-down correction within an experiment, an exact sign-flip permutation test
# over worlds beside the t-test, and the minimum detectable effect of a paired t-test.

ALTERNATIVES = ("two-sided", "greater", "less")
SIGN_FLIP_MAX_N = 24  # 2^24 sign patterns (16.8 M) is the most enumerated exactly


def _check_alternative(alternative: str) -> str:
  if alternative not in ALTERNATIVES:
    raise ValueError(f"alternative: must be one of {ALTERNATIVES}, got {alternative!r}")
  return alternative


def _check_alpha(alpha: float, field: str = "alpha") -> float:
  if not 0.0 < float(alpha) < 1.0:
    raise ValueError(f"{field}: must be in (0, 1), got {alpha!r}")
  return float(alpha)


def _finite_1d(values: Sequence[float], field: str) -> np.ndarray:
  x = np.asarray(values, np.float64).reshape(-1)
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{field}: {int((~np.isfinite(x)).sum())} non-finite value(s); drop "
                     "and count them before testing")
  return x


def holm(pvalues: Sequence[float]) -> np.ndarray:
  """Holm–Bonferroni adjusted p-values of one family of m hypotheses.

  Definition: with the finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m),
  p̃_(i) = min(1, max_{j ≤ i} (m − j + 1) · p_(j)); rejecting where p̃ ≤ α controls the
  family-wise error rate at α under any dependence (Holm 1979, Scand. J. Statist. 6:65).
  A NaN p-value (an untestable claim) keeps NaN and still counts in m, so that an
  untestable claim never makes the others' correction milder.

  Args:
    pvalues: ``[m]`` raw p-values in [0, 1] or NaN.

  Returns:
    ``[m]`` adjusted p-values in the input order (``statsmodels``' ``multipletests(...,
    method="holm")`` for finite inputs).
  """
  p = np.asarray(pvalues, np.float64).reshape(-1)
  finite = np.isfinite(p)
  if np.any((p[finite] < 0) | (p[finite] > 1)):
    raise ValueError(f"pvalues: must lie in [0, 1] (or be NaN), got {p.tolist()}")
  m = p.size
  out = np.full(m, np.nan)
  idx = np.flatnonzero(finite)
  order = idx[np.argsort(p[idx], kind="stable")]
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out


def sign_flip_test(d: Sequence[float], *, alternative: str = "two-sided",
                   null: float = 0.0) -> float:
  """Exact sign-flip (paired permutation) p-value of the mean of paired differences.

  Definition: with e_i = d_i − ``null`` and the statistic S(s) = Σ_i s_i e_i over all 2^n
  sign vectors s ∈ {−1, +1}^n, the p-value is the share of sign vectors with
  S(s) ≥ S(1) (``"greater"``), S(s) ≤ S(1) (``"less"``) or |S(s)| ≥ |S(1)|
  (``"two-sided"``), the observed signs included (Fisher 1935 §21; Good 2005,
  *Permutation, Parametric and Bootstrap Tests*, §3.4). Valid when each e_i is symmetric
  about 0 under the null; no normality is assumed. The smallest reachable p-value is
  2^{1−n} two-sided and 2^{−n} one-sided (0.0625 and 0.031 for n = 5 worlds). Ties are
  counted with a relative tolerance of 1e-12 so that float rounding cannot split them.

  Args:
    d: ``[n]`` finite paired differences (one per world), 1 ≤ n ≤ 24.
    alternative: ``"two-sided"``, ``"greater"`` (mean > null) or ``"less"``.
    null: the mean difference under the null hypothesis.

  Returns:
    The exact p-value in (0, 1].
  """
  _check_alternative(alternative)
  e = _finite_1d(d, "d") - float(null)
  n = e.size
  if not 1 <= n <= SIGN_FLIP_MAX_N:
    raise ValueError(f"d: the exact sign-flip test needs 1 to {SIGN_FLIP_MAX_N} values, "
                     f"got {n}")
  observed = float(e.sum())
  tol = 1e-12 * max(float(np.abs(e).sum()), 1e-300)
  count, total = 0, 1 << n
  chunk = 1 << min(n, 16)
  bits = np.arange(n, dtype=np.int64)
  for start in range(0, total, chunk):
    codes = np.arange(start, min(start + chunk, total), dtype=np.int64)
    signs = 1.0 - 2.0 * ((codes[:, None] >> bits) & 1)  # bit set: flip the sign
    stat = signs @ e
    if alternative == "greater":
      count += int(np.sum(stat >= observed - tol))
    elif alternative == "less":
      count += int(np.sum(stat <= observed + tol))
    else:
      count += int(np.sum(np.abs(stat) >= abs(observed) - tol))
  return count / total


def paired_t_p(d: Sequence[float], *, alternative: str = "two-sided",
               null: float = 0.0) -> float:
  """The paired t-test p-value of mean(d) against ``null`` (``scipy.stats.ttest_1samp``).

  Definition: t = (mean(d) − null) / (s / √n), s with ddof = 1, referred to Student's t
  with n − 1 degrees of freedom; NaN for n < 2; for s = 0 the p-value is 0 when the mean
  is on the alternative's side of ``null`` and 1 otherwise.
  """
  _check_alternative(alternative)
  x = _finite_1d(d, "d")
  n = x.size
  if n < 2:
    return math.nan
  diff = float(x.mean()) - float(null)
  sem = float(x.std(ddof=1)) / math.sqrt(n)
  if sem == 0.0:
    side = {"greater": diff > 0, "less": diff < 0, "two-sided": diff != 0}[alternative]
    return 0.0 if side else 1.0
  t = diff / sem
  if alternative == "greater":
    return float(special.stdtr(n - 1, -t))
  if alternative == "less":
    return float(special.stdtr(n - 1, t))
  return float(2.0 * special.stdtr(n - 1, -abs(t)))


def equivalence_p(d: Sequence[float], margin: float, *, test: str = "t") -> float:
  """Two one-sided tests (TOST) of |mean(d)| < ``margin``: the larger of the two p-values.

  Definition: p = max(p(mean > −margin), p(mean < +margin)) with each one-sided p from the
  paired t-test (``test="t"``) or the exact sign-flip test (``test="sign-flip"``)
  (Schuirmann 1987, J. Pharmacokinet. Biopharm. 15:657). Equivalence within ±margin is
  shown at level α when p ≤ α, i.e. when the (1 − 2α) t-interval lies inside ±margin.
  """
  if not float(margin) > 0:
    raise ValueError(f"margin: the equivalence margin must be > 0, got {margin!r}")
  one = {"t": paired_t_p, "sign-flip": sign_flip_test}.get(test)
  if one is None:
    raise ValueError(f"test: must be 't' or 'sign-flip', got {test!r}")
  return max(one(d, alternative="greater", null=-float(margin)),
             one(d, alternative="less", null=float(margin)))


def _nct_cdf(dof: int, lam: float, x: float) -> float:
  """P(T'_{dof, λ} ≤ x), the noncentral t CDF. scipy's ``nctdtr`` returns NaN far in the
  tail (e.g. λ ≳ 40); there the normal approximation Φ(x − λ) is exact to many digits."""
  value = float(special.nctdtr(dof, lam, x))
  if math.isfinite(value):
    return min(1.0, max(0.0, value))
  return float(special.ndtr(x - lam))


def t_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
  """Power of the two-sided paired t-test at level α for a true mean difference ``effect``.

  Definition: with λ = effect · √n / sd and c = t_{1−α/2, n−1},
  power = P(T'_{n−1, λ} > c) + P(T'_{n−1, λ} < −c), T' the noncentral t
  (e.g. Cohen 1988, *Statistical Power Analysis*, ch. 2; ``scipy.stats.nct``).
  """
  _check_alpha(alpha)
  if n < 2 or not sd > 0:
    raise ValueError(f"n, sd: need n >= 2 and sd > 0, got n={n}, sd={sd}")
  dof = n - 1
  lam = float(effect) * math.sqrt(n) / float(sd)
  c = float(special.stdtrit(dof, 1.0 - alpha / 2.0))
  return (1.0 - _nct_cdf(dof, lam, c)) + _nct_cdf(dof, lam, -c)


def min_detectable_effect(sd: float, n: int, *, alpha: float = 0.05,
                          power: float = 0.8) -> float:
  """The smallest true mean difference the two-sided paired t-test detects with ``power``.

  Definition: the δ > 0 solving :func:`t_power` (δ, sd, n; α) = power (bisection on the
  monotone power curve); close to (t_{1−α/2, n−1} + t_{power, n−1}) · sd / √n, and to the
  normal form (z_{1−α/2} + z_{power}) · sd / √n for large n. ``sd`` is the between-world
  standard deviation of the paired differences (ddof = 1). NaN when n < 2 or sd is not
  finite; 0 when sd = 0.

  Returns:
    The minimum detectable effect, in the metric's units.
  """
  _check_alpha(alpha)
  _check_alpha(power, "power")
  if n < 2 or not math.isfinite(sd):
    return math.nan
  if sd == 0:
    return 0.0
  lo, hi = 0.0, float(sd)
  while t_power(hi, sd, n, alpha=alpha) < power:
    hi *= 2.0
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if t_power(mid, sd, n, alpha=alpha) < power:
      lo = mid
    else:
      hi = mid
    if hi - lo <= 1e-12 * hi:
      break
  return hi


def tost_power(sd: float, n: int, margin: float, *, alpha: float = 0.05) -> float:
  """Approximate power of the paired TOST at level α when the true difference is 0.

  Definition: each one-sided test rejects with probability
  q = P(T'_{n−1, λ} > t_{1−α, n−1}), λ = margin · √n / sd; both reject with probability at
  least 2q − 1 (Bonferroni's inequality), the usual approximation
  (Chow & Liu 2008, *Design and Analysis of Bioavailability and Bioequivalence Studies*,
  §5.3). Returned: max(0, 2q − 1).
  """
  _check_alpha(alpha)
  if n < 2 or not sd > 0:
    raise ValueError(f"n, sd: need n >= 2 and sd > 0, got n={n}, sd={sd}")
  dof = n - 1
  lam = float(margin) * math.sqrt(n) / float(sd)
  c = float(special.stdtrit(dof, 1.0 - alpha))
  q = 1.0 - _nct_cdf(dof, lam, c)
  return max(0.0, 2.0 * q - 1.0)


def worlds_needed(sd: float, target: float, *, equivalence: bool = False,
                  alpha: float = 0.05, power: float = 0.8, n_max: int = 10_000) -> int:
  """The fewest worlds n ≥ 2 at which a paired design reaches ``target`` with ``power``.

  Definition: for a difference claim the smallest n with
  :func:`min_detectable_effect` (sd, n) ≤ target; for an equivalence claim
  (``equivalence=True``, ``target`` = the margin) the smallest n with
  :func:`tost_power` (sd, n, target) ≥ power. ``sd`` is the between-world SD of the paired
  differences measured at the current world count (assumed to hold at the larger one).

  Returns:
    n, or −1 if even ``n_max`` worlds do not reach it (or sd is not finite).
  """
  if not float(target) > 0:
    raise ValueError(f"target: must be > 0, got {target!r}")
  if not math.isfinite(sd):
    return -1
  if sd == 0:
    return 2
  # MDE(n) <= target  <=>  power at the target >= power (power rises with the effect).
  reach = ((lambda n: tost_power(sd, n, target, alpha=alpha) >= power) if equivalence
           else (lambda n: t_power(target, sd, n, alpha=alpha) >= power))
  if not reach(n_max):
    return -1
  lo, hi = 1, n_max  # reach(hi) holds; find the first n in (lo, hi] where it does
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if mid >= 2 and reach(mid):
      hi = mid
    else:
      lo = mid
  return hi
