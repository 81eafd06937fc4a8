"""The experiment harness: methods × world seeds through the library's runner, kept raw
rows, mean ± 95% CI over world seeds, paired differences and a verdict per claim.

An experiment is a list of :class:`Method` (a name and dotted config overrides of the
quickstart config) and a list of :class:`Claim`. For every world seed (``config.seed``:
the simulated world, its logs and the teacher) each method is one call of
:func:`prerank_jax.host.runner.run`, the same code the CLI calls. Methods whose teacher
config is the same reuse the first run's teacher of that world (``teacher.restore_from``).
Student replicates (``sweep.seeds``) run inside each world, in the same compiled program.

Rows go to ``<out>/<experiment>/raw.csv`` (one per student point × replicate, gt-only
student, teacher and reference, per method and world seed), appended after every run.
Everything else (``summary.md``, the PNG figures) is computed from ``raw.csv`` alone, so
``--from-results`` rebuilds it without training.

Statistics (the unit of replication is the world seed; docs/research/methods.md):

- a row's value in world w is the mean over its kept replicates in w; rows that diverged
  (``status``) or hold a non-finite value are dropped AND counted in ``summary.md``; a
  world without a kept row is missing, and a claim missing a world says so;
- mean ± 95% CI over worlds: mean ± t_{0.975, n−1} · s / √n (Student t, s with ddof 1;
  :func:`prerank_jax.analysis.t_interval`); undefined (nan) for n < 2;
- the paired difference of a method against the ground-truth-only student of the same
  run (same world, same student config and replicate seeds, α = 0), or against the arm
  the claim names: d_w = x_w(method) − x_w(other), then the same t-interval over worlds;
- each claim declares one primary metric (:data:`PRIMARY_METRICS`); its p-value (paired
  t-test of d = 0, or TOST for an equivalence claim within its per-metric margin) is
  Holm–Bonferroni corrected over the experiment's claims; the exact sign-flip test over
  worlds is corrected the same way and a call it cannot reach is *fragile*; the minimum
  detectable effect (80% power) comes from the between-world SD of d
  (:mod:`prerank_jax.analysis.stats`);
- the raw verdict (uncorrected 95% t-interval): "reproduced" when the CI of d excludes 0
  in the claimed direction, "not reproduced" when it excludes 0 in the other direction,
  "inconclusive" when it contains 0 (or is undefined). An equivalence claim (direction 0,
  margin δ) is "reproduced" when the CI lies inside [−δ, δ], "not reproduced" when it
  excludes 0 and leaves [−δ, δ], otherwise "inconclusive". The verdict word applies the
  same rule to the Holm-corrected p-value (:func:`judge_claims`);
- a claim whose primary metric is not a column of the raw rows (rows kept from before the
  metric existed, e.g. the common-reference cascade ``oracle_sys_ndcg@10@25%`` of the
  cross-teacher claims) is :data:`NOT_JUDGED` ("needs a re-run"), never judged on another
  metric, and keeps its place in the Holm family;
- stability: :func:`compare_verdicts` judges the claims on two runs of one experiment
  (``--group-size 4 --compare-to <kept run>``) and flags a verdict that changed where
  neither call is fragile.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python experiments/<name>.py` from anywhere
  sys.path.insert(0, str(ROOT))

from prerank_jax.analysis import normalize_results, stats  # noqa: E402
from prerank_jax.analysis.stats import t_interval  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
GT_ONLY = "gt-only"
METRICS = ("ndcg@10", "recall@25%", "R@(10,25%)", "kendall_tau")
ID_COLUMNS = ("experiment", "method", "seed", "replicate_seed", "model", "point", "role",
              "program")
# The verdict of a claim whose declared primary metric is not a column of the raw rows
# (rows kept from before the metric existed): said plainly, never a silent fall-back.
NOT_JUDGED = "primary not in the kept rows — needs a re-run"
VERDICTS = ("reproduced", "not reproduced", "inconclusive", NOT_JUDGED)
# The metrics a claim may declare as its primary one, with what each measures. A pre-ranker
# is used for what it keeps: the share of the truly relevant candidates it keeps at a keep
# ratio, or the cascade after ONE common reference ranker (the oracle: true relevance),
# the same for every method, reorders what it kept (docs/research/methods.md).
PRIMARY_METRICS = {
    "recall@10%": "the share of the truly relevant candidates kept at a keep ratio",
    "recall@25%": "the share of the truly relevant candidates kept at a keep ratio",
    "oracle_sys_ndcg@10@25%": "the cascade's NDCG@10 when the pre-ranker keeps its top 25% "
                              "and the common reference ranker (the oracle: true relevance) "
                              "reorders what it kept, the same ranker for every method",
    "joint_recall@10@20": "LCRON's joint recall: the pre-ranker keeps its top 30, the fixed "
                          "DIN ranker its top 20 of those; the share of the 10 rank_pos "
                          "items kept (E9)",
    "recflow_recall@50": "RecFlow's pooled recall of the pre-ranker's top 50 (E9)",
}
PRIMARY = "recall@25%"  # the experiments' declared primary: the quickstart's monitored keep ratio
# The primary of a claim across teachers (E1's and E5's oracle, E5, E6): the cascade with
# one common reference ranker, so that a better teacher is not counted as a better
# pre-ranker (sys_* re-ranks with each method's OWN teacher).
CROSS_TEACHER = "oracle_sys_ndcg@10@25%"
# Printed beside the primary verdict. sys_ndcg@10@25% is the cascade re-ranked by each
# method's OWN teacher, so across teachers it partly measures the teacher (hence secondary).
SECONDARY = ("ndcg@10", "recall@10%", "recall@25%", "R@(10,25%)", "sys_ndcg@10@25%",
             CROSS_TEACHER)
# Equivalence margins per metric: recall differences run about half the NDCG ones
# (measured over the kept results by experiments/print_findings.py --ratios).
MARGINS = {"ndcg@10": 0.01, "recall@10%": 0.005, "recall@25%": 0.005,
           "R@(10,25%)": 0.02, "sys_ndcg@10@25%": 0.01, CROSS_TEACHER: 0.01,
           "kendall_tau": 0.02, "joint_recall@10@20": 0.005, "recflow_recall@50": 0.005}
ALPHA, POWER, MDE_TARGET = 0.05, 0.8, 0.01  # family-wise level; power and target of the MDE
OK_STATUS = ("ok", "reference", "", "nan")  # any other status (e.g. "diverged") is dropped
_SEED_SUFFIX = re.compile(r" seed=\d+$")
_PROGRAM = re.compile(r"^\[(?P<label>[^\]]*)\]\s*(?P<rest>.*)$")


@dataclasses.dataclass(frozen=True)
class Method:
  """One arm of an experiment: ``overrides`` are ``{dotted config path: value}`` applied to
  the base config, e.g. ``{"student.loss.kd": "logit_mse", "sweep.temperature": (8.0,)}``."""

  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Claim:
  """A paper's claim as a paired comparison, judged on ONE primary metric.

  ``metric`` is the claim's primary metric, declared with the claim before the run (for
  the experiments: one of :data:`PRIMARY_METRICS`); the :data:`SECONDARY` metrics are
  reported beside it. ``margin`` (equivalence claims) applies to the primary metric; 0
  takes :data:`MARGINS` of the metric.

  ``method``'s student rows matching ``where`` (column values, e.g. ``{"temperature": 2.0}``) are
  compared with ``against``: ``None`` for the gt-only student of the same runs, otherwise
  another method's student rows matching ``against_where``. ``direction`` is +1 (the
  method is higher), −1 (lower) or 0 (equivalent within ``margin``). ``role`` and
  ``against_role`` pick other rows than students (``"teacher"``, ``"reference"`` with
  ``where={"point": "random"}``, ``"gt-only"``), e.g. to compare two methods' teachers.
  """

  text: str
  method: str
  metric: str
  direction: int = 1
  where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  against: str | None = None
  against_where: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  margin: float = 0.0
  source: str = ""
  role: str = "student"
  against_role: str = "student"


# ---------------------------------------------------------------------------- running


def set_path(config: Any, path: str, value: Any) -> None:
  """``config.<path> = value`` for a dotted path of a locked ConfigDict (a typo fails)."""
  *parents, leaf = path.split(".")
  node = config
  for part in parents:
    try:
      node = node[part]
    except KeyError:
      raise KeyError(f"{path}: no field {part!r} in the config") from None
  if leaf not in node:
    raise KeyError(f"{path}: no field {leaf!r} in the config")
  node[leaf] = value


def base_config(world_seed: int, *, smoke: bool, replicates: Sequence[int] = (),
                base: str = "quickstart"):
  """The config ``configs/<base>.py`` (default the quickstart's ``full`` size; ``smoke``:
  its tiny form, shortened further) for one world."""
  from prerank_jax.config_files import repo_config
  config = repo_config(base, "smoke" if smoke else "full" if base == "quickstart" else None)
  config.seed = int(world_seed)
  config.progress, config.wandb.mode, config.checkpoint_every = False, "disabled", 0
  config.sweep.seeds = tuple(int(s) for s in replicates)
  if smoke:  # seconds: the student's epochs cut; the teacher keeps the smoke config's 2,
    config.student.num_epochs = 2  # so that E5's under-trained (1 epoch) teacher differs
  return config


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "method"


def rows_of_run(result_rows: Sequence[Mapping[str, Any]], *, experiment: str, method: str,
                world_seed: int, run_s: float,
                load_1m: float | None = None) -> list[dict[str, Any]]:
  """The runner's result rows as raw rows: ids first, then every runner column, then the
  run's seconds (``run_s``) and, when given, the machine's 1-minute load average at the
  run's end (``load_1m``: a runtime on a shared machine is read with its load)."""
  out = []
  for row in result_rows:
    model = str(row["model"])
    program, point = "", model
    if model.startswith("student "):
      rest = model[len("student "):]
      m = _PROGRAM.match(rest)
      if m:
        program, rest = m["label"], m["rest"]
      point = _SEED_SUFFIX.sub("", rest)
      role = GT_ONLY if point.startswith("gt-only") else "student"
    else:
      role = "teacher" if model == "teacher" else "reference"
    replicate = row.get("replicate_seed", world_seed if role in ("student", GT_ONLY) else "")
    ids = {"experiment": experiment, "method": method, "seed": int(world_seed),
           "replicate_seed": replicate, "model": model, "point": point, "role": role,
           "program": program}
    rest = {k: v for k, v in row.items() if k not in ids and k != "model"}
    timing = {"run_s": round(run_s, 2)}
    if load_1m is not None:
      timing["load_1m"] = round(float(load_1m), 2)
    out.append({**ids, **rest, **timing})
  return out


def append_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
  """Appends rows to a CSV; a new column rewrites the file with the union of columns."""
  path.parent.mkdir(parents=True, exist_ok=True)
  old_columns, old_rows = [], []
  if path.exists():
    with path.open(newline="") as f:
      reader = csv.DictReader(f)
      old_columns, old_rows = list(reader.fieldnames or []), list(reader)
  columns = list(old_columns)
  for row in rows:
    columns += [c for c in row if c not in columns]
  if columns == old_columns:
    with path.open("a", newline="") as f:
      csv.DictWriter(f, fieldnames=columns).writerows(rows)
    return
  tmp = path.with_suffix(".tmp")
  with tmp.open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows([*old_rows, *rows])
  tmp.replace(path)


def run_methods(experiment: str, methods: Sequence[Method], world_seeds: Sequence[int], *,
                out: Path, smoke: bool, replicates: Sequence[int] = (),
                configure: Callable[[Any, Method], None] | None = None,
                base: str = "quickstart", log: Callable[[str], None] = print) -> Path:
  """Runs every method in every world through the runner and appends the rows.

  Args:
    experiment: the experiment's name; rows go to ``<out>/<experiment>/raw.partial.csv``
      while the run lasts, which replaces ``raw.csv`` only when every world has run (an
      interrupted run leaves the kept rows as they were).
    methods: the arms; each is one runner call per world. Names must be distinct.
    world_seeds: ``config.seed`` of each world (data, teacher); ≥ 2 for a CI.
    out: results root, e.g. ``experiments/results``.
    smoke: the tiny simulator preset and a few epochs.
    replicates: ``sweep.seeds`` (student replicates inside each world); ``()``: one.
    configure: optional ``f(config, method)`` run after the overrides, with
      ``config.workdir`` set (for settings an override cannot express, or files a run
      reads, such as the LETOR files of ``--letor``).
    base: the config file the methods override (``configs/<base>.py``).
    log: progress lines.

  Returns:
    The path of ``raw.csv``.
  """
  from prerank_jax.host.identity import teacher_identity
  from prerank_jax.host.runner import run
  names = [m.name for m in methods]
  if len(set(names)) != len(names):
    raise ValueError(f"methods: names must be distinct, got {names}")
  if not world_seeds:
    raise ValueError("world_seeds: needs at least one world seed")
  raw = out / experiment / "raw.csv"
  # Rows go to a partial file; the kept raw.csv is replaced only once every world has run,
  # so an interrupted or failed run never destroys the previous results.
  partial = raw.with_name("raw.partial.csv")
  partial.unlink(missing_ok=True)
  with tempfile.TemporaryDirectory(prefix=f"{experiment}-") as workdir:
    for world in world_seeds:
      teachers: dict[str, str] = {}  # teacher identity -> run dir holding that teacher
      for i, method in enumerate(methods):
        config = base_config(world, smoke=smoke, replicates=replicates, base=base)
        for path, value in method.overrides.items():
          set_path(config, path, value)
        config.workdir, config.name = workdir, f"w{world}-{i}-{_slug(method.name)}"
        if configure is not None:
          configure(config, method)
        identity = teacher_identity(config)
        if identity in teachers and not config.teacher.restore_from:
          config.teacher.restore_from = teachers[identity]
        t0 = time.perf_counter()
        result = run(config)
        run_s = time.perf_counter() - t0
        teachers.setdefault(identity, str(result.run_dir))
        append_rows(partial, rows_of_run(result.rows, experiment=experiment, method=method.name,
                                     world_seed=world, run_s=run_s,
                                     load_1m=os.getloadavg()[0]))
        log(f"{experiment}: world {world} {method.name}: {run_s:.1f} s")
  partial.replace(raw)
  return raw


# ----------------------------------------------------------------------- statistics


def load_raw(path: Path) -> pd.DataFrame:
  """``raw.csv`` as a DataFrame (blank numbers NaN; blank names ``""``)."""
  frame = normalize_results(pd.read_csv(path, keep_default_na=False, na_values=[""]))
  for column in ("experiment", "method", "model", "point", "role", "program"):
    if column in frame.columns:
      frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
  return frame


def verdict(lo: float, hi: float, direction: int, margin: float = 0.0) -> str:
  """The verdict of a claim from the CI ``[lo, hi]`` of its paired difference.

  ``direction`` +1 / −1: "reproduced" if the CI excludes 0 on the claimed side, "not
  reproduced" if it excludes 0 on the other side, else "inconclusive". ``direction`` 0
  (equivalence within ``margin`` ≥ 0): "reproduced" if ``[lo, hi] ⊂ [−margin, margin]``,
  "not reproduced" if the CI excludes 0 and is not inside, else "inconclusive". A
  non-finite bound (fewer than 2 worlds) is "inconclusive".
  """
  if direction not in (-1, 0, 1):
    raise ValueError(f"direction: must be -1, 0 or 1, got {direction!r}")
  if margin < 0:
    raise ValueError(f"margin: must be >= 0, got {margin!r}")
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "inconclusive"
  if lo > hi:
    raise ValueError(f"lo, hi: need lo <= hi, got [{lo}, {hi}]")
  if direction == 0:
    if -margin <= lo and hi <= margin:
      return "reproduced"
    return "not reproduced" if (lo > 0 or hi < 0) else "inconclusive"
  if (lo > 0 and direction > 0) or (hi < 0 and direction < 0):
    return "reproduced"
  if lo > 0 or hi < 0:
    return "not reproduced"
  return "inconclusive"


def _select(frame: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
  mask = np.ones(len(frame), bool)
  for column, value in where.items():
    if column not in frame.columns:
      raise ValueError(f"where: no column {column!r} in the raw rows")
    col = frame[column]
    if isinstance(value, float) or isinstance(value, int) and not isinstance(value, bool):
      mask &= np.isclose(pd.to_numeric(col, errors="coerce").to_numpy(float), value)
    else:
      mask &= (col.astype(str) == str(value)).to_numpy()
  return frame[mask]


def _kept_rows(frame: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, dict[str, int]]:
  """The rows that count for ``metric``, and how many were dropped and why.

  A row is dropped when its ``status`` says it diverged (anything but ``ok``,
  ``reference`` or blank) or when its ``metric`` value is not finite; both are counted,
  never skipped silently.
  """
  values = pd.to_numeric(frame[metric], errors="coerce").to_numpy(float)
  if "status" in frame.columns:
    status = frame["status"].astype(str).str.strip()
    diverged = (~status.isin(OK_STATUS)).to_numpy()
  else:
    diverged = np.zeros(len(frame), bool)
  nonfinite = ~diverged & ~np.isfinite(values)
  keep = ~diverged & ~nonfinite
  return frame[keep], {"diverged": int(diverged.sum()), "non-finite": int(nonfinite.sum())}


def world_values(frame: pd.DataFrame, metric: str) -> pd.Series:
  """The metric per world seed: the mean over the kept rows (replicates) of each world.

  Rows that diverged or hold a non-finite value are left out (:func:`_kept_rows` counts
  them); a world with no kept row is absent from the result, never a NaN mean.
  """
  return _world_means(_kept_rows(frame, metric)[0], metric)


def _world_means(kept: pd.DataFrame, metric: str) -> pd.Series:
  values = pd.to_numeric(kept[metric], errors="coerce").astype(float)
  return values.groupby(kept["seed"]).mean()


def paired_interval(a: pd.Series, b: pd.Series) -> dict[str, float]:
  """Mean ± 95% t-interval of ``a_w − b_w`` over the worlds present in both.

  The worlds present in only one of ``a`` and ``b`` are counted in ``unpaired``."""
  common = a.index.intersection(b.index).sort_values()
  d = (a.loc[common] - b.loc[common]).to_numpy(float)
  mean, half, n = t_interval(d)
  return {"diff": mean, "ci": half, "lo": mean - half, "hi": mean + half, "n": n,
          "unpaired": int(len(a.index.union(b.index)) - len(common))}


def _pair_frames(frame: pd.DataFrame, claim: Claim) -> tuple[pd.DataFrame, pd.DataFrame, str]:
  """The rows of a claim's two sides and the name of the side it is compared against."""
  mine = _select(frame[(frame["method"] == claim.method) & (frame["role"] == claim.role)],
                 claim.where)
  if not len(mine):
    raise ValueError(f"claim {claim.text!r}: no {claim.role} rows of method {claim.method!r} "
                     f"matching {dict(claim.where)}")
  if claim.against is None:
    base = frame[(frame["method"] == claim.method) & (frame["role"] == GT_ONLY)]
    base = base[base["program"].isin(set(mine["program"]))]
    against = f"{GT_ONLY} (same runs)"
  else:
    base = _select(frame[(frame["method"] == claim.against)
                         & (frame["role"] == claim.against_role)], claim.against_where)
    against = (claim.against + (f" {claim.against_role}" if claim.against_role != "student"
                                else "")
               + (f" {dict(claim.against_where)}" if claim.against_where else ""))
  if not len(base):
    raise ValueError(f"claim {claim.text!r}: no rows to compare against ({against})")
  return mine, base, against


def claim_margin(claim: Claim, metric: str) -> float:
  """The equivalence margin of a claim on ``metric``: the claim's own ``margin`` for its
  primary metric when set, otherwise :data:`MARGINS` of the metric."""
  if metric == claim.metric and claim.margin:
    return float(claim.margin)
  if metric not in MARGINS:
    raise ValueError(f"metric {metric!r}: no equivalence margin; known: {sorted(MARGINS)}")
  return MARGINS[metric]


def _metric_stats(mine: pd.DataFrame, base: pd.DataFrame, metric: str, direction: int,
                  margin: float, worlds: Sequence[int], *, full: bool = True
                  ) -> dict[str, Any]:
  """The statistics of one paired comparison on one metric (see the module doc): the
  interval, dropped rows and raw verdict, and with ``full`` the tests and the power."""
  (kept_a, drop_a), (kept_b, drop_b) = _kept_rows(mine, metric), _kept_rows(base, metric)
  a, b = _world_means(kept_a, metric), _world_means(kept_b, metric)
  paired = paired_interval(a, b)
  common = a.index.intersection(b.index).sort_values()
  d = (a.loc[common] - b.loc[common]).to_numpy(float)
  n = int(d.size)
  dropped = {k: drop_a[k] + drop_b[k] for k in ("diverged", "non-finite")}
  missing = sorted(int(w) for w in set(worlds) - set(int(w) for w in common))
  raw = verdict(paired["lo"], paired["hi"], direction, margin)
  if not full:
    return {**paired, "margin": margin, "missing": missing, "dropped": dropped,
            "raw_verdict": raw}
  sd = float(d.std(ddof=1)) if n > 1 else math.nan
  if direction == 0:
    p_t = stats.equivalence_p(d, margin) if n > 1 else math.nan
    p_perm = stats.equivalence_p(d, margin, test="sign-flip") if n > 0 else math.nan
    needs = stats.worlds_needed(sd, margin, equivalence=True, alpha=ALPHA, power=POWER)
  else:
    p_t = stats.paired_t_p(d) if n > 1 else math.nan
    p_perm = stats.sign_flip_test(d) if n > 0 else math.nan
    needs = stats.worlds_needed(sd, MDE_TARGET, alpha=ALPHA, power=POWER)
  return {**paired, "sd": sd, "p_t": p_t, "p_perm": p_perm,
          "p_diff_t": stats.paired_t_p(d) if n > 1 else math.nan,
          "p_diff_perm": stats.sign_flip_test(d) if n > 0 else math.nan,
          "mde": stats.min_detectable_effect(sd, n, alpha=ALPHA, power=POWER),
          "needs": needs, "margin": margin, "missing": missing, "dropped": dropped,
          "raw_verdict": raw}


def _not_judged(claim: Claim, worlds: Sequence[int]) -> dict[str, Any]:
  """The statistics of a claim whose primary metric is not a column of the raw rows: no
  interval, no p-value (NaN: the claim keeps its place in the Holm family), verdict
  :data:`NOT_JUDGED`."""
  nan = math.nan
  return {"diff": nan, "ci": nan, "lo": nan, "hi": nan, "n": 0, "unpaired": 0, "sd": nan,
          "p_t": nan, "p_perm": nan, "p_diff_t": nan, "p_diff_perm": nan, "mde": nan,
          "needs": -1, "margin": claim_margin(claim, claim.metric), "missing": list(worlds),
          "dropped": {"diverged": 0, "non-finite": 0}, "raw_verdict": NOT_JUDGED,
          "not_judged": True}


def claim_stats(frame: pd.DataFrame, claim: Claim,
                secondary: Sequence[str] = SECONDARY) -> dict[str, Any]:
  """The uncorrected statistics of one claim: its primary metric and the secondary ones
  (those of ``secondary`` present in ``frame`` and different from the primary)."""
  mine, base, against = _pair_frames(frame, claim)
  worlds = sorted(int(w) for w in frame["seed"].unique())
  if claim.metric in frame.columns:
    primary = _metric_stats(mine, base, claim.metric, claim.direction,
                            claim_margin(claim, claim.metric), worlds)
  else:  # rows kept from before the metric existed: said per claim, no fall-back
    primary = _not_judged(claim, worlds)
  second = {m: _metric_stats(mine, base, m, claim.direction, claim_margin(claim, m), worlds,
                            full=False)
            for m in secondary if m != claim.metric and m in frame.columns}
  return {"claim": claim.text, "metric": claim.metric, "direction": claim.direction,
          "against": against, "source": claim.source, **primary, "secondary": second}


def _call(r: Mapping[str, Any], p_t: float, p_perm: float) -> tuple[str, bool]:
  """The verdict word and fragility of one claim from its Holm-corrected p-values."""
  direction = r["direction"]
  if r.get("not_judged"):
    return NOT_JUDGED, False
  if direction == 0:
    if p_t < ALPHA:
      return "reproduced", not p_perm < ALPHA
    if r["raw_verdict"] == "not reproduced":  # a difference beyond the margin, uncorrected
      return "not reproduced", not r["p_diff_perm"] < ALPHA
    return "inconclusive", False
  if p_t < ALPHA:
    word = "reproduced" if math.copysign(1.0, r["diff"]) == direction else "not reproduced"
    return word, not p_perm < ALPHA
  return "inconclusive", False


def judge_claims(frame: pd.DataFrame, claims: Sequence[Claim],
                 secondary: Sequence[str] = SECONDARY) -> list[dict[str, Any]]:
  """Every claim of one experiment with its Holm-corrected verdict.

  The family is the experiment's claims, each tested once on its primary metric (the
  two-sided paired t-test of Δ = 0, or the TOST p-value of an equivalence claim).
  ``holm_t`` and ``holm_perm`` are the Holm-adjusted t and sign-flip p-values; the verdict
  word is "reproduced" when ``holm_t`` < α with Δ on the claimed side (or, for an
  equivalence claim, equivalence shown), "not reproduced" when ``holm_t`` < α on the other
  side (or, for an equivalence claim, the uncorrected t-interval excludes 0 and leaves the
  margin), else "inconclusive"; ``fragile`` when the sign-flip test, corrected the same
  way, does not reach α.
  """
  out = [claim_stats(frame, c, secondary) for c in claims]
  holm_t = stats.holm([r["p_t"] for r in out])
  holm_perm = stats.holm([r["p_perm"] for r in out])
  for r, pt, pp in zip(out, holm_t, holm_perm):
    r["holm_t"], r["holm_perm"] = float(pt), float(pp)
    r["verdict"], r["fragile"] = _call(r, r["holm_t"], r["holm_perm"])
  return out


def claim_result(frame: pd.DataFrame, claim: Claim) -> dict[str, Any]:
  """One claim judged alone (a family of one: Holm changes nothing)."""
  return judge_claims(frame, [claim])[0]


def point_table(frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
  """One row per (method, program, role, point): mean ± CI over worlds of each metric and,
  for students, the paired difference against the gt-only student of the same runs;
  ``dropped``: rows left out (diverged or non-finite in any of ``metrics``)."""
  out = []
  keys = ["method", "program", "role", "point"]
  for key, group in frame.groupby(keys, sort=False, dropna=False):
    row = dict(zip(keys, key))
    row["worlds"] = int(group["seed"].nunique())
    row["replicates"] = int(group.groupby("seed").size().max())
    base = frame[(frame["method"] == row["method"]) & (frame["role"] == GT_ONLY)
                 & (frame["program"] == row["program"])]
    dropped = 0
    for m in metrics:
      counts = _kept_rows(group, m)[1]
      dropped = max(dropped, counts["diverged"] + counts["non-finite"])
      values = world_values(group, m)
      mean, half, _ = t_interval(values.to_numpy(float))
      row[m], row[f"{m}_ci"] = mean, half
      if row["role"] == "student" and len(base):
        d = paired_interval(values, world_values(base, m))
        row[f"{m}_diff"], row[f"{m}_diff_ci"] = d["diff"], d["ci"]
    row["dropped"] = dropped
    for c in ("temperature", "alpha", "params", "flops/cand"):
      if c in group.columns:
        row[c] = pd.to_numeric(group[c], errors="coerce").mean()
    out.append(row)
  return pd.DataFrame(out)


def _pm(mean: float, half: float, digits: int = 3) -> str:
  if not math.isfinite(mean):
    return "n/a"
  return f"{mean:.{digits}f} ± {half:.{digits}f}" if math.isfinite(half) else f"{mean:.{digits}f}"


def markdown_points(table: pd.DataFrame, metrics: Sequence[str], diff_metric: str) -> str:
  """The per-point table as Markdown: metrics mean ± CI, Δ vs gt-only ± CI, dropped rows."""
  head = ["method", "point", "worlds × replicates", *metrics, f"Δ {diff_metric} vs gt-only",
          "dropped rows"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for _, r in table.iterrows():
    name = r["point"] if r["role"] != "student" or not r["program"] else f"[{r['program']}] {r['point']}"
    diff = (_pm(r.get(f"{diff_metric}_diff", math.nan), r.get(f"{diff_metric}_diff_ci", math.nan))
            if r["role"] == "student" else "")
    lines.append("| " + " | ".join([str(r["method"]), str(name),
                                     f"{r['worlds']} × {r['replicates']}",
                                     *(_pm(r[m], r[f"{m}_ci"]) for m in metrics), diff,
                                     str(int(r["dropped"]))]) + " |")
  return "\n".join(lines)


def _p(p: float) -> str:
  return "n/a" if not math.isfinite(p) else f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _ci(r: Mapping[str, Any]) -> str:
  if not math.isfinite(r["diff"]):
    return "n/a"
  if not math.isfinite(r["ci"]):
    return f"{r['diff']:+.4f} [CI undefined]"
  return f"{r['diff']:+.4f} [{r['lo']:+.4f}, {r['hi']:+.4f}]"


def _needs(r: Mapping[str, Any]) -> str:
  """'reaches' or the worlds a claim would need (at the SD measured)."""
  if r.get("not_judged"):
    return "n/a (needs a re-run)"
  target = r["margin"] if r["direction"] == 0 else MDE_TARGET
  if r["direction"] == 0:
    reached = r["needs"] != -1 and r["n"] >= r["needs"]
    what = f"TOST at ±{target:g}"
  else:
    reached = math.isfinite(r["mde"]) and r["mde"] <= target
    what = f"{target:g}"
  if reached:
    return f"reaches {what}"
  return (f"needs {r['needs']} worlds for {what}" if r["needs"] > 0
          else f"cannot reach {what}")


def _dropped(r: Mapping[str, Any]) -> str:
  if r.get("not_judged"):
    return f"no {r['metric']} column"
  d = r["dropped"]
  text = f"{d['diverged']} diverged, {d['non-finite']} non-finite"
  if r["missing"]:
    text += f"; **missing worlds {r['missing']}**"
  return text


def markdown_claims(results: Sequence[Mapping[str, Any]]) -> str:
  """The claims table: the primary metric's paired Δ with its t-interval, the t and
  sign-flip p-values raw and Holm-corrected, the raw and corrected verdicts, fragility, the
  minimum detectable effect, dropped rows, and the secondary metrics' verdicts beside."""
  lines = ["| claim | primary metric | against | worlds | paired Δ (95% t CI) | p (t) | "
           "p (sign-flip) | Holm p (t / sign-flip) | raw verdict | verdict (Holm) | "
           "MDE (80%) | worlds for the target | dropped rows | secondary metrics |",
           "|" + "---|" * 14]
  for r in results:
    word = f"**{r['verdict']}**" + (" *fragile*" if r["fragile"] else "")
    second = "; ".join(f"{m}: {s['raw_verdict']}" for m, s in r["secondary"].items())
    claim = str(r["claim"]).replace("|", "\\|")  # a literal |Δ| must not split the cell
    metric = r["metric"] + (f" (margin ±{r['margin']:g})" if r["direction"] == 0 else "")
    mde = f"{r['mde']:.4f}" if math.isfinite(r["mde"]) else "n/a"
    lines.append(" | ".join([
        f"| {claim}", metric, str(r["against"]), str(r["n"]), _ci(r), _p(r["p_t"]),
        _p(r["p_perm"]), f"{_p(r['holm_t'])} / {_p(r['holm_perm'])}", r["raw_verdict"],
        word, mde, _needs(r), _dropped(r), second]) + " |")
  return "\n".join(lines)


def markdown_secondary(results: Sequence[Mapping[str, Any]]) -> str:
  """The secondary metrics of each claim: paired Δ, t-interval and uncorrected verdict."""
  metrics = list(dict.fromkeys(m for r in results for m in r["secondary"]))
  if not metrics:
    return ""
  lines = ["| claim | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
  for r in results:
    cells = [(f"{_ci(r['secondary'][m])} {r['secondary'][m]['raw_verdict']}"
              if m in r["secondary"] else "") for m in metrics]
    claim = str(r["claim"]).replace("|", "\\|")
    lines.append(f"| {claim} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def method_text(n_claims: int, primaries: Sequence[str] = (PRIMARY,),
                margins: Sequence[str] | None = None) -> str:
  """The paragraph of ``summary.md`` that states how the claims are judged: ``primaries``
  are the primary metrics the claims declare (each said with what it measures), ``margins``
  the metrics whose equivalence margin is stated (default: every one of :data:`MARGINS`)."""
  shown = [m for m in (MARGINS if margins is None else margins) if m in MARGINS]
  margin_text = ", ".join(f"{m} ±{MARGINS[m]:g}" for m in shown)
  primary_text = "; ".join(
      f"{m} ({PRIMARY_METRICS[m]})" if m in PRIMARY_METRICS else m
      for m in dict.fromkeys(primaries))
  return (
      f"Each claim is judged on its declared primary metric: {primary_text}. A claim whose "
      f"primary metric is not a column of the kept rows says so (\"{NOT_JUDGED}\") and "
      f"keeps its place in the Holm family. Holm–Bonferroni over the {n_claims} "
      f"claim(s) of this experiment at α = {ALPHA:g}; the verdict word uses the corrected "
      f"t-test p-value, the raw verdict is the uncorrected 95% t-interval's. Beside the "
      f"t-test, the exact sign-flip permutation test over worlds (smallest reachable "
      f"two-sided p with n worlds: 2^(1−n)); a verdict the corrected t-test calls but the "
      f"corrected sign-flip test does not reach is *fragile*. MDE: the smallest true "
      f"difference the two-sided paired t-test detects with {POWER:.0%} power at the "
      f"claim's world count, from the between-world SD of its paired differences; each "
      f"claim reaches {MDE_TARGET:g} or says how many worlds it would need (equivalence "
      f"claims: TOST with {POWER:.0%} power at a true difference of 0). Equivalence "
      f"margins per metric: {margin_text}. Dropped rows: diverged or non-finite rows of the "
      f"claim's two sides, left out and counted; a claim with a missing world is computed "
      f"on the worlds present and says which are missing. Secondary metrics: uncorrected "
      f"t-interval verdicts, for reading beside the primary one. Method: "
      f"docs/research/methods.md.")


def write_summary(out_dir: Path, *, title: str, command: str, frame: pd.DataFrame,
                  claims: Sequence[Claim], metrics: Sequence[str], diff_metric: str,
                  figures: Sequence[Path], notes: str = "",
                  secondary: Sequence[str] = SECONDARY) -> str:
  """``summary.md``: the command, the claims with verdicts, the secondary metrics, the
  per-point table, the figures; returns its text."""
  results = judge_claims(frame, claims, secondary)
  table = point_table(frame, metrics)
  worlds = sorted(int(s) for s in frame["seed"].unique())
  smoke = "smoke" in set(frame.get("preset", pd.Series(dtype=str)).astype(str))
  text = "\n\n".join(filter(None, [
      f"# {title}",
      f"Produced by `{command}` (rebuild without training: add `--from-results`). "
      f"World seeds {worlds}; mean ± 95% t-interval over worlds (replicates averaged "
      f"within each world); Δ = paired difference, world by world (against the "
      f"ground-truth-only student of the same runs: same world, same replicate seeds, "
      f"α = 0, unless the claim names another arm)."
      + (" **Smoke run: tiny preset, 2 epochs, not a result.**" if smoke else ""),
      "## Claims\n\n" + method_text(
          len(results), [r["metric"] for r in results],
          list(dict.fromkeys([*(r["metric"] for r in results),
                              *(m for r in results for m in r["secondary"])])))
      + "\n\n" + markdown_claims(results),
      "## Secondary metrics of each claim\n\n" + markdown_secondary(results)
      if any(r["secondary"] for r in results) else "",
      "## Every point\n\n" + markdown_points(table, metrics, diff_metric),
      notes,
      "## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures),
  ])) + "\n"
  (out_dir / "summary.md").write_text(text)
  return text


# ---------------------------------------------------------------------- stability


def compare_verdicts(kept: pd.DataFrame, other: pd.DataFrame, claims: Sequence[Claim],
                     secondary: Sequence[str] = SECONDARY) -> list[dict[str, Any]]:
  """Every claim judged on two runs of one experiment (e.g. the kept run and a re-run with
  another CPU layout, ``sweep.group_size`` 4 instead of 1), on the worlds both hold.

  Returns one entry per claim: ``claim``, ``metric``, the two judgements (``kept``,
  ``other``: :func:`judge_claims`'s dicts), ``changed`` (the verdict words differ),
  ``fragile`` (either call is fragile) and ``flagged``: a change where neither call is
  fragile (nor not judged). Issue 23 §6 asks that no claim be flagged: a layout change
  (floating-point order only) may flip a fragile verdict, never a firm one.
  """
  worlds = sorted(set(int(w) for w in kept["seed"].unique())
                  & set(int(w) for w in other["seed"].unique()))
  if not worlds:
    raise ValueError("compare_verdicts: the two runs share no world seed")
  on = lambda f: f[f["seed"].astype(int).isin(worlds)]
  out = []
  for claim, a, b in zip(claims, judge_claims(on(kept), claims, secondary),
                         judge_claims(on(other), claims, secondary)):
    changed = a["verdict"] != b["verdict"]
    fragile = bool(a["fragile"] or b["fragile"])
    absent = bool(a.get("not_judged") or b.get("not_judged"))
    out.append({"claim": claim.text, "metric": claim.metric, "kept": a, "other": b,
                "worlds": worlds, "changed": changed, "fragile": fragile,
                "flagged": changed and not fragile and not absent})
  return out


def markdown_comparison(rows: Sequence[Mapping[str, Any]], kept_name: str,
                        other_name: str) -> str:
  """The comparison of :func:`compare_verdicts` as Markdown: a verdict line per claim and
  the changes, with every non-fragile flip named."""
  def word(r: Mapping[str, Any]) -> str:
    return r["verdict"] + (" (fragile)" if r["fragile"] else "")
  changed = [r for r in rows if r["changed"]]
  flagged = [r for r in rows if r["flagged"]]
  worlds = rows[0]["worlds"] if rows else []
  lines = [f"# Stability: {other_name} against {kept_name}", "",
           f"Both judged on the world seeds they share, {worlds}, with the same claims and "
           f"rules (Holm within the experiment). A verdict that changes where neither call "
           f"is fragile is a **non-fragile flip**.", "",
           f"- claims: {len(rows)}; verdicts changed: {len(changed)}; non-fragile flips: "
           f"{len(flagged)}" + (" — " + "; ".join(f"**{r['claim']}**" for r in flagged)
                                if flagged else "."), "",
           f"| claim | primary metric | Δ {kept_name} | verdict {kept_name} | Δ {other_name} "
           f"| verdict {other_name} | change |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    change = ("**non-fragile flip**" if r["flagged"] else "changed (fragile)"
              if r["changed"] and r["fragile"] else "changed" if r["changed"] else "same")
    claim = str(r["claim"]).replace("|", "\\|")
    lines.append(f"| {claim} | {r['metric']} | {_ci(r['kept'])} | {word(r['kept'])} | "
                 f"{_ci(r['other'])} | {word(r['other'])} | {change} |")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- figures


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only, no display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _numbers(values: Any) -> Any:
  """Floats rounded to 10 significant digits (NaN and ±inf as strings), nested lists kept."""
  arr = np.asarray(values, dtype=float)
  if arr.ndim == 0:
    v = float(arr)
    return float(f"{v:.10g}") if math.isfinite(v) else str(v)
  return [_numbers(v) for v in arr]


def figure_data(fig: Any) -> dict[str, Any]:
  """What a figure plots, as plain data: per axes its title, axis labels, tick labels and
  every line (x, y), bar or patch (x, y, width, height), collection (offsets, segments),
  image (array) and text. ``save_figure`` writes it beside the PNG so that a test can
  compare what is plotted exactly (a PNG's bytes vary with the renderer)."""
  from matplotlib.collections import Collection, LineCollection
  from matplotlib.patches import Rectangle
  axes = []
  for ax in fig.get_axes():
    entry: dict[str, Any] = {
        "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
        "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
        "yticklabels": [t.get_text() for t in ax.get_yticklabels()],
        "lines": [{"label": str(l.get_label()), "x": _numbers(l.get_xdata()),
                   "y": _numbers(l.get_ydata())} for l in ax.get_lines()],
        "patches": [_numbers([p.get_x(), p.get_y(), p.get_width(), p.get_height()])
                    for p in ax.patches if isinstance(p, Rectangle)],
        "collections": [], "images": [_numbers(np.ma.filled(np.ma.asarray(
            im.get_array(), dtype=float), np.nan)) for im in ax.get_images()],
        "texts": [t.get_text() for t in ax.texts]}
    for c in ax.collections:
      if not isinstance(c, Collection):
        continue
      item: dict[str, Any] = {"offsets": _numbers(np.ma.filled(np.ma.asarray(
          c.get_offsets(), dtype=float), np.nan))}
      if isinstance(c, LineCollection):
        item["segments"] = [_numbers(seg) for seg in c.get_segments()]
      else:
        item["paths"] = [_numbers(path.vertices) for path in c.get_paths()]
      entry["collections"].append(item)
    axes.append(entry)
  return {"axes": axes, "suptitle": fig._suptitle.get_text() if fig._suptitle else ""}


def save_figure(fig: Any, path: Path, *, tight: bool = True) -> Path:
  """Lays out (``tight``), writes at 110 dpi, writes :func:`figure_data` to
  ``<path>.json`` (same stem) and closes ``fig``; returns ``path``."""
  import json
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=110)
  path.with_suffix(".json").write_text(
      json.dumps(figure_data(fig), ensure_ascii=False, indent=None, sort_keys=True) + "\n")
  pyplot().close(fig)
  return path


def diff_bars(table: pd.DataFrame, metric: str, path: Path, *, title: str,
              label: Callable[[pd.Series], str] | None = None) -> Path:
  """Horizontal bars: each student point's paired Δ ``metric`` vs gt-only with its CI."""
  plt = pyplot()
  rows = table[table["role"] == "student"]
  label = label or (lambda r: f"{r['method']} {r['point']}")
  names = [label(r) for _, r in rows.iterrows()]
  fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
  y = np.arange(len(rows))
  err = np.nan_to_num(rows[f"{metric}_diff_ci"].to_numpy(float))
  ax.barh(y, rows[f"{metric}_diff"].to_numpy(float), xerr=err, color="tab:blue", alpha=0.7,
          capsize=3)
  ax.axvline(0.0, color="k", lw=0.8)
  ax.set_yticks(y, names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel(f"Δ {metric} vs gt-only student (95% CI over world seeds)")
  ax.set_title(title, fontsize=10)
  return save_figure(fig, path)


# ------------------------------------------------------------------------------- main


@dataclasses.dataclass
class Experiment:
  """An experiment script's definition, run by :func:`main`.

  ``methods(smoke)`` lists the arms; ``claims`` the verdicts to compute; ``figures(frame,
  table, out_dir)`` draws the PNGs from the raw rows (and returns their paths);
  ``notes(frame)`` adds Markdown (e.g. a numerical check) to the summary.
  """

  name: str
  title: str
  methods: Callable[[bool], Sequence[Method]]
  claims: Sequence[Claim]
  figures: Callable[[pd.DataFrame, pd.DataFrame, Path], list[Path]]
  metrics: Sequence[str] = METRICS
  diff_metric: str = PRIMARY
  world_seeds: Sequence[int] = tuple(range(10))  # 10 worlds: see docs/research/methods.md
  replicates: Sequence[int] = (0, 1)
  notes: Callable[[pd.DataFrame], str] | None = None
  secondary: Sequence[str] = SECONDARY  # printed beside each claim's primary verdict
  configure: Callable[[Any, Method], None] | None = None
  base: str = "quickstart"  # the config file the methods override: configs/<base>.py


def summarize(exp: Experiment, out_dir: Path, command: str) -> str:
  """Rebuilds ``summary.md`` and the figures from ``<out_dir>/raw.csv``."""
  raw = out_dir / "raw.csv"
  if not raw.exists():
    raise FileNotFoundError(f"{raw}: no raw results; run the experiment first")
  frame = load_raw(raw)
  table = point_table(frame, exp.metrics)
  figures = exp.figures(frame, table, out_dir)
  return write_summary(out_dir, title=exp.title, command=command, frame=frame,
                       claims=exp.claims, metrics=exp.metrics, diff_metric=exp.diff_metric,
                       figures=figures, notes=exp.notes(frame) if exp.notes else "",
                       secondary=exp.secondary)


def use_compilation_cache(path: Path | None = None) -> None:
  """Turns on JAX's persistent compilation cache (unless ``JAX_COMPILATION_CACHE_DIR`` set
  one already).

  Every world of an experiment, and every method with the same structure, compiles the
  same programs (the data are arguments, not constants); with the cache only the first
  compiles them. On the tiny smoke preset, where compilation is most of the time, a
  world's runs went from 153 s and 118 s to 22 s and 7 s (on a loaded 2-core CPU).
  """
  import os
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  path = path or Path.home() / ".cache" / "prerank-jax" / "xla"
  path.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(path))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(exp: Experiment, argv: Sequence[str] | None = None) -> Path:
  """The command line every experiment script shares.

  ``--smoke``: tiny preset, 2 world seeds, 2 epochs (seconds; results go to
  ``<out>/<name>-smoke/``). ``--from-results``: rebuild the summary and figures from the
  kept ``raw.csv`` without training. ``--letor``: the same methods on the world written as
  LETOR files (``experiments/letor_world.py``; results in ``<out>/<name>_letor/``).
  ``--group-size N``: every method with ``sweep.group_size = N`` (another CPU layout;
  results in ``<out>/<name>-groupN/``). ``--compare-to DIR``: then compare every verdict
  with the run kept in ``DIR`` (:func:`compare_verdicts`), write ``stability.md`` and exit
  1 on a non-fragile flip (issue 23 §6):

    python experiments/e4_ranking_distillation.py --group-size 4 \\
        --compare-to experiments/results/e4_ranking_distillation
  Returns the results directory.
  """
  parser = argparse.ArgumentParser(description=exp.title)
  parser.add_argument("--smoke", action="store_true", help="tiny preset, 2 world seeds")
  parser.add_argument("--letor", action="store_true",
                      help="the world as LETOR files through the LETOR loader")
  parser.add_argument("--from-results", action="store_true",
                      help="rebuild summary.md and figures from raw.csv, no training")
  parser.add_argument("--world-seeds", type=int, nargs="+", default=None)
  parser.add_argument("--replicates", type=int, nargs="*", default=None,
                      help="sweep.seeds inside each world (student replicates)")
  parser.add_argument("--out", default=str(RESULTS))
  parser.add_argument("--group-size", type=int, default=None,
                      help="sweep.group_size of every method (another CPU layout); results "
                           "go to <name>-group<N>/")
  parser.add_argument("--compare-to", default=None, metavar="DIR",
                      help="after the summary, compare every verdict with the run in DIR "
                           "(its raw.csv); writes stability.md, exits 1 on a non-fragile "
                           "flip")
  args = parser.parse_args(argv)
  script = f"experiments/{exp.name}.py"
  if args.letor:
    from letor_world import letor_experiment
    exp = letor_experiment(exp)
  compare_to = Path(args.compare_to) if args.compare_to else None
  if compare_to is not None and not (compare_to / "raw.csv").is_file():
    raise SystemExit(f"--compare-to {compare_to}: no raw.csv there")
  if args.group_size is not None:
    if args.group_size < 1:
      raise SystemExit(f"--group-size: must be >= 1, got {args.group_size}")
    exp = dataclasses.replace(exp, methods=_with_group_size(exp.methods, args.group_size))
  use_compilation_cache()
  folder = f"{exp.name}-smoke" if args.smoke else exp.name
  if args.group_size is not None:
    folder += f"-group{args.group_size}"
  out_dir = Path(args.out) / folder
  command = " ".join(["python", script, *map(shlex.quote, argv if argv is not None
                                               else sys.argv[1:])])
  command = re.sub(r" --compare-to \S+", "", command)  # a check, not part of the run
  if not args.from_results:
    worlds = args.world_seeds or ((0, 1) if args.smoke else exp.world_seeds)
    replicates = args.replicates if args.replicates is not None else (
        exp.replicates[:2] if args.smoke else exp.replicates)
    t0 = time.perf_counter()
    raw = run_methods(out_dir.name, exp.methods(args.smoke), worlds,
                      out=out_dir.parent, smoke=args.smoke, replicates=replicates,
                      configure=exp.configure, base=exp.base)
    frame = load_raw(raw)
    frame["preset"] = "smoke" if args.smoke else "small"
    frame.to_csv(raw, index=False)
    print(f"{exp.name}: trained in {time.perf_counter() - t0:.0f} s; rows in {raw}")
  else:
    command = command.replace(" --from-results", "")
  t0 = time.perf_counter()
  text = summarize(exp, out_dir, command)
  print(text)
  print(f"{exp.name}: summary and figures in {out_dir} ({time.perf_counter() - t0:.1f} s)")
  if compare_to is not None:
    rows = compare_verdicts(load_raw(compare_to / "raw.csv"), load_raw(out_dir / "raw.csv"),
                            exp.claims, exp.secondary)
    report = markdown_comparison(rows, compare_to.name, out_dir.name)
    (out_dir / "stability.md").write_text(report)
    print(report)
    flips = [r["claim"] for r in rows if r["flagged"]]
    if flips:
      raise SystemExit(f"{out_dir.name}: {len(flips)} non-fragile verdict flip(s) against "
                       f"{compare_to}: {flips}")
  return out_dir


def _with_group_size(methods: Callable[[bool], Sequence[Method]], group_size: int
                     ) -> Callable[[bool], list[Method]]:
  """``methods`` with ``sweep.group_size = group_size`` added to every method."""
  def wrapped(smoke: bool) -> list[Method]:
    return [dataclasses.replace(m, overrides={**m.overrides, "sweep.group_size": group_size})
            for m in methods(smoke)]
  return wrapped
