"""Cost-vs-quality Pareto report over finished runs: which student to deploy at which budget.

Every run dir holds ``results.csv`` (one row per sweep point, the teacher and the
references) with the cost columns ``params`` and ``flops/cand`` (FLOPs per candidate from
XLA's cost analysis; older runs without them fall back to ``history.json``'s ``costs``).
:func:`write_pareto_report` plots cost (log x) against teacher-consistency R@(k, r) and
true-relevance recall@r on the test split, one point per model and grid point, marks the
Pareto front of each panel, and writes ``pareto.png`` and ``pareto.md``.

The front is a choice of points (which student to deploy at which budget), so it is
chosen on the validation split's ``valid/`` columns and only reported on test: a point is
on the front when no other point is at most as costly and at least as good *on
validation*. Runs written before validation metrics existed get no front (the report says
so; ``prerank-jax eval <run dir>`` adds the columns); the test split never chooses.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prerank_jax.evaluate import keep_label
from prerank_jax.host.rundir import write_text_atomic

COST_COLUMNS = ("params", "flops/cand")
VALID_PREFIX = "valid/"  # the validation split's metric columns (host/report.py)


def add_cost_columns(rows: list[dict[str, Any]], columns: Sequence[str],
                     costs: dict[str, float], *, num_teachers: int = 1) -> list[str]:
  """Adds ``params`` and ``flops/cand`` to the student rows and the teacher row.

  Student rows (every sweep point) get the student's costs; the ``teacher`` row gets the
  cost of what it scores with: ``num_teachers`` × one teacher (an ensemble runs every
  member). References without a model (oracle, random) are left blank. Returns the columns
  with the two cost columns inserted before ``status`` (or appended).
  """
  for row in rows:
    if row.get("status") != "reference":
      row["params"] = int(costs["student_params"])
      row["flops/cand"] = float(costs["student_flops_per_candidate"])
    elif row.get("model") == "teacher":
      row["params"] = int(costs["teacher_params"]) * num_teachers
      row["flops/cand"] = float(costs["teacher_flops_per_candidate"]) * num_teachers
  columns = [c for c in columns if c not in COST_COLUMNS]
  at = columns.index("status") if "status" in columns else len(columns)
  return [*columns[:at], *COST_COLUMNS, *columns[at:]]


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> np.ndarray:
  """Bool mask ``[P]`` of the points no other point dominates (low cost, high value).

  Definition: point i is on the front iff no j has ``cost_j <= cost_i`` and
  ``value_j >= value_i`` with at least one strict. Identical points are all on the front;
  a point with a non-finite cost or value is never on it and dominates nothing.
  """
  c = np.asarray(costs, np.float64).reshape(-1)
  v = np.asarray(values, np.float64).reshape(-1)
  if c.shape != v.shape:
    raise ValueError(f"pareto_front: costs and values must have the same length, got "
                     f"{c.shape} and {v.shape}")
  ok = np.isfinite(c) & np.isfinite(v)
  le = c[None, :] <= c[:, None]            # [i, j]: cost_j <= cost_i
  ge = v[None, :] >= v[:, None]
  strict = (c[None, :] < c[:, None]) | (v[None, :] > v[:, None])
  dominated = np.any(le & ge & strict & ok[None, :], axis=1)
  return ok & ~dominated


def _number(text: str) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    return math.nan


def _metric_column(header: Sequence[str], pattern: str) -> str:
  for name in header:
    if re.fullmatch(pattern, name):
      return name
  raise ValueError(f"results.csv has no column matching {pattern!r} (columns: "
                   f"{list(header)}); evaluate with that keep ratio in eval.keep_ratios")


def load_points(run_dir: Path, *, keep_ratio: float = 0.25) -> tuple[list[dict], str, str]:
  """The plottable rows of one run: students and the teacher, with costs and metrics.

  Returns:
    ``(points, consistency_column, recall_column)``; each point is ``{"run", "model",
    "arch", "role", "status", "params", "flops", "consistency", "recall",
    "valid_consistency", "valid_recall"}`` (the ``valid_`` values from the ``valid/``
    columns, NaN when the run has none).
  """
  from prerank_jax.analysis.load import normalize_name  # pandas: only when reading

  run_dir = Path(run_dir)
  results = run_dir / "results.csv"
  if not results.exists():
    raise FileNotFoundError(f"{run_dir}: no results.csv (is it a finished run dir?)")
  with results.open(newline="") as f:
    reader = csv.DictReader(f)
    header, rows = list(reader.fieldnames or []), list(reader)
  label = keep_label(keep_ratio)
  consistency = _metric_column(header, rf"R@\(\d+,{re.escape(label)}\)")
  recall = _metric_column(header, rf"recall@{re.escape(label)}")
  costs, arch = {}, {}
  if (run_dir / "history.json").exists():
    costs = json.loads((run_dir / "history.json").read_text()).get("costs", {})
  if (run_dir / "config.json").exists():
    config = json.loads((run_dir / "config.json").read_text())
    arch = {role: config.get(role, {}).get("model", {}).get("name", "") for role in
            ("student", "teacher")}
  points = []
  for row in rows:
    status = row.get("status", "")
    if status == "reference" and row["model"] != "teacher":
      continue
    role = "teacher" if row["model"] == "teacher" else "student"
    flops = _number(row.get("flops/cand", ""))
    params = _number(row.get("params", ""))
    if not math.isfinite(flops):  # runs written before the cost columns existed
      flops = _number(costs.get(f"{role}_flops_per_candidate"))
      params = _number(costs.get(f"{role}_params"))
    points.append({"run": run_dir.name, "model": normalize_name(row["model"]),
                   "arch": arch.get(role, ""),
                   "role": role, "status": status, "params": params, "flops": flops,
                   "consistency": _number(row[consistency]), "recall": _number(row[recall]),
                   "valid_consistency": _number(row.get(f"{VALID_PREFIX}{consistency}")),
                   "valid_recall": _number(row.get(f"{VALID_PREFIX}{recall}"))})
  return points, consistency, recall


def _dedupe_teachers(points: list[dict]) -> list[dict]:
  """One teacher point per distinct teacher (runs reusing a teacher repeat its row)."""
  seen, out = set(), []
  for p in points:
    if p["role"] == "teacher":
      key = (p["arch"], p["params"], p["flops"], p["recall"])
      if key in seen:
        continue
      seen.add(key)
    out.append(p)
  return out


def validation_fronts(points: Sequence[dict[str, Any]]) -> dict[str, np.ndarray] | None:
  """``{"consistency", "recall"} → bool [P]``: each panel's Pareto front chosen on the
  validation values (``valid_consistency``, ``valid_recall``) of :func:`load_points`,
  or ``None`` when no point has a validation value (runs older than the ``valid/``
  columns). A point without a validation value is never on a front."""
  if not any(np.isfinite(p[f"valid_{key}"]) for p in points
             for key in ("consistency", "recall")):
    return None
  flops = [p["flops"] for p in points]
  return {key: pareto_front(flops, [p[f"valid_{key}"] for p in points])
          for key in ("consistency", "recall")}


def pareto_figure(points: Sequence[dict[str, Any]], *, consistency: str, recall: str,
                  title: str = "", fronts: dict[str, np.ndarray] | None = None
                  ) -> "matplotlib.figure.Figure":
  """Cost (log x) against teacher consistency and against true recall, fronts marked.

  Two panels share the x axis, FLOPs per candidate: ``consistency`` (R@(k, r)) and
  ``recall`` (recall@r) as given (the test split's), one marker per point of
  :func:`load_points` (a star per teacher), coloured by role and architecture, with each
  panel's front (``fronts``, chosen on validation by :func:`validation_fronts`) as a
  black line through circled points. Points chosen on validation need not climb on test,
  so the line joins them in cost order; with ``fronts=None`` no front is drawn.

  Args:
    points: dicts with ``flops``, ``consistency``, ``recall``, ``role`` and ``arch``.
    consistency: the consistency column's name (axis label).
    recall: the recall column's name (axis label).
    title: the figure's title.
    fronts: ``{"consistency", "recall"} → bool [P]`` membership, or ``None``.

  Returns:
    A figure on the Agg canvas (no pyplot state).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  import matplotlib

  flops = np.array([p["flops"] for p in points], np.float64)
  fig = Figure(figsize=(12, 4.8))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2, sharex=True)
  groups = sorted({(p["role"], p["arch"] or p["role"]) for p in points})
  colors = matplotlib.colormaps["tab10"]
  for ax, key, label in zip(axes, ("consistency", "recall"),
                            (f"teacher consistency {consistency}", f"true relevance {recall}")):
    values = np.array([p[key] for p in points], np.float64)
    for g, (role, arch) in enumerate(groups):
      sel = [i for i, p in enumerate(points) if (p["role"], p["arch"] or p["role"]) == (role, arch)]
      ax.scatter(flops[sel], values[sel], color=colors(g % 10),
                 marker="*" if role == "teacher" else "o", s=120 if role == "teacher" else 36,
                 label=f"{arch} ({role})", alpha=0.8, zorder=3)
    front = (np.flatnonzero(fronts[key]) if fronts is not None
             else np.zeros(0, dtype=np.int64))
    front = front[np.argsort(flops[front], kind="stable")]
    if front.size:
      ax.plot(flops[front], values[front], color="black", lw=1, zorder=2,
              label="Pareto front (chosen on validation)")
      ax.scatter(flops[front], values[front], facecolors="none", edgecolors="black", s=110,
                 zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per candidate (XLA cost analysis, log scale)")
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=8, loc="lower right")
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def write_pareto_report(run_dirs: Sequence[Path], out_dir: Path, *,
                        keep_ratio: float = 0.25) -> tuple[Path, Path]:
  """Writes ``<out_dir>/pareto.png`` and ``<out_dir>/pareto.md`` over finished runs.

  Two panels share the x axis, FLOPs per candidate (log scale): teacher-consistency
  R@(k, r) and true-relevance recall@r at ``keep_ratio`` r. One point per student grid
  point and per distinct teacher; diverged points are left out. The Pareto front
  (:func:`pareto_front`) of each panel is drawn as a step line. The Markdown table lists
  every point by cost with its front membership.

  Args:
    run_dirs: finished run dirs (each with ``results.csv``).
    out_dir: where to write (``prerank-jax report`` passes the first run dir).
    keep_ratio: r; must be one of the runs' ``eval.keep_ratios``.

  Returns:
    ``(png_path, md_path)``.
  """
  if not run_dirs:
    raise ValueError("write_pareto_report: needs at least one run dir")
  points, columns = [], set()
  for run_dir in run_dirs:
    got, consistency, recall = load_points(Path(run_dir), keep_ratio=keep_ratio)
    points += got
    columns.add((consistency, recall))
  if len(columns) > 1:
    raise ValueError(f"write_pareto_report: the runs use different k ({sorted(columns)}); "
                     "report runs evaluated alike")
  consistency, recall = columns.pop()
  points = [p for p in _dedupe_teachers(points) if p["status"] != "diverged"]
  points.sort(key=lambda p: (p["flops"], p["run"], p["model"]))
  fronts = validation_fronts(points)

  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  png, md = out_dir / "pareto.png", out_dir / "pareto.md"
  fig = pareto_figure(points, consistency=consistency, recall=recall,
                      title=f"cost vs quality at keep ratio {keep_label(keep_ratio)} "
                            f"(test split; fronts chosen on validation): "
                            f"{', '.join(Path(d).name for d in run_dirs)}", fronts=fronts)
  fig.savefig(png, dpi=110)

  fmt = lambda x, spec: "" if not math.isfinite(x) else format(x, spec)
  lines = [
      f"# Pareto report: cost vs quality at keep ratio {keep_label(keep_ratio)}",
      "",
      f"Runs: {', '.join(str(d) for d in run_dirs)}. One row per model and grid point, "
      "sorted by FLOPs per candidate (XLA cost analysis). A point is on a front when no "
      "other point is at most as costly and at least as good **on the validation split** "
      f"(the {VALID_PREFIX} columns); the metric columns are the test split's, reported "
      "for the chosen points, never used to choose. Teacher consistency is "
      "relative to each run's own teacher, so compare it across runs only when they "
      f"share a teacher. Plot: {png.name}.",
      "",
      *([] if fronts is not None else [
          f"No front: these runs have no {VALID_PREFIX} columns (written before validation "
          "metrics existed); `prerank-jax eval <run dir>` re-evaluates a run and adds "
          "them.", ""]),
      f"| run | model | architecture | params | FLOPs/cand | {VALID_PREFIX}{consistency} | "
      f"{consistency} | front | {VALID_PREFIX}{recall} | {recall} | front |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  on = lambda key, i: "✓" if fronts is not None and fronts[key][i] else ""
  for i, p in enumerate(points):
    lines.append(
        f"| {p['run']} | {p['model']} | {p['arch']} | {fmt(p['params'], '.0f')} | "
        f"{fmt(p['flops'], '.4g')} | {fmt(p['valid_consistency'], '.4f')} | "
        f"{fmt(p['consistency'], '.4f')} | {on('consistency', i)} | "
        f"{fmt(p['valid_recall'], '.4f')} | {fmt(p['recall'], '.4f')} | "
        f"{on('recall', i)} |")
  write_text_atomic(md, "\n".join(lines) + "\n")
  return png, md
