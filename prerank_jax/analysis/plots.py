"""Figures of loaded results: ``temperature`` × ``alpha`` (T × α) heatmaps, quality vs keep ratio, learning curves.

Each function takes DataFrames from :mod:`prerank_jax.analysis.load` and returns a
:class:`matplotlib.figure.Figure` drawn on the Agg canvas (no pyplot state, no display
needed); save it with ``fig.savefig(path)``. Seeds are pooled by :func:`mean_ci` within a
``setup`` (runs that differ only by their seed); several setups get their own panels or
lines. The cost-vs-quality Pareto front is drawn by ``prerank_jax/host/pareto.py``.
"""

from __future__ import annotations

import re
import warnings
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from prerank_jax.analysis.select import VALID_PREFIX, valid_column
from prerank_jax.analysis.stats import mean_ci

_KEEP = re.compile(r"^(?P<family>[^()]+?)@(?P<pct>\d+(?:\.\d+)?)%$")
#: Reference rows drawn beside the students, with their line style.
REFERENCE_STYLE = {
    "teacher": dict(color="black", lw=2.2, ls="-", marker="*", ms=9, zorder=5),
    "oracle (truth)": dict(color="goldenrod", lw=2.0, ls="--", marker="D", ms=5, zorder=4),
    # The same reference when the data has no truth column: scored by the logged labels.
    "oracle (logged labels)": dict(color="goldenrod", lw=2.0, ls="--", marker="D", ms=5,
                                   zorder=4),
    "random": dict(color="grey", lw=1.2, ls=":", marker="x", ms=5, zorder=3),
}


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig


def keep_ratio_columns(columns: Sequence[str], family: str) -> list[tuple[float, str]]:
  """``[(keep ratio, column)]`` of a metric family, sorted by ratio.

  A keep-ratio column is named ``<family>@<percent>%``: ``recall@10%`` → ``(0.1,
  "recall@10%")``, ``sys_ndcg@10@25%`` is family ``sys_ndcg@10`` at 0.25. Teacher
  consistency ``R@(k,r%)`` is not such a family.
  """
  out = []
  for c in columns:
    m = _KEEP.match(str(c))
    if m and m["family"] == family:
      out.append((float(m["pct"]) / 100.0, str(c)))
  return sorted(out)


def keep_ratio_families(columns: Sequence[str]) -> list[str]:
  """The families plotted against the keep ratio: ``recall`` and every ``sys_*``."""
  families = []
  for c in columns:
    m = _KEEP.match(str(c))
    if m and (m["family"] == "recall" or m["family"].startswith("sys_")) \
        and m["family"] not in families:
      families.append(m["family"])
  return families


def _plottable(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows worth plotting: not diverged, with a setup key (one per run if missing)."""
  frame = frame[frame.get("status", pd.Series("ok", index=frame.index)) != "diverged"]
  if "setup" not in frame.columns:
    frame = frame.assign(setup=frame.get("run", "all"))
  return frame


def _setup_names(frame: pd.DataFrame) -> dict[str, str]:
  """``setup → "runA+runB"`` for titles and legends."""
  return {s: "+".join(dict.fromkeys(map(str, g.get("run", pd.Series([s])))))
          for s, g in frame.groupby("setup", sort=False)}


def grid_table(frame: pd.DataFrame, metric: str, *, rows: str = "temperature", cols: str = "alpha",
               exclude: str = r"^gt-only", level: float = 0.95
               ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
  """The ``rows × cols`` grid of one setup: ``(mean, ci half width, seeds)`` tables.

  Student rows only, diverged points and points whose name matches ``exclude`` (the
  ground-truth-only baseline) left out; the mean and t-interval are over seeds
  (:func:`mean_ci`). Index: sorted ``rows`` values; columns: sorted ``cols`` values.
  """
  for field, name in (("rows", rows), ("cols", cols), ("metric", metric)):
    if name not in frame.columns:
      raise ValueError(f"grid_table: {field}={name!r} is not a column; columns are "
                       f"{list(frame.columns)}")
  students = _plottable(frame)
  students = students[(students.get("role", "student") == "student")
                      & students[rows].notna() & students[cols].notna()]
  if exclude and "point" in students.columns:
    students = students[~students["point"].astype(str).str.contains(exclude, regex=True)]
  if students.empty:
    raise ValueError(f"grid_table: no student rows with {rows!r} and {cols!r}")
  stats = mean_ci(students, metric, by=[rows, cols], level=level)
  mean = stats.pivot(index=rows, columns=cols, values=metric).sort_index().sort_index(axis=1)
  half = stats.pivot(index=rows, columns=cols, values=f"{metric}_ci").reindex_like(mean)
  return mean, half, int(stats["n"].max())


def choice_column(metric: str) -> str:
  """The column a point is chosen on for ``metric``: ``valid/<metric>`` (itself when
  ``metric`` already is a validation column)."""
  return metric if metric.startswith(VALID_PREFIX) else valid_column(metric)


def best_valid_cell(frame: pd.DataFrame, metric: str, shown: pd.DataFrame, *,
                    rows: str = "temperature", cols: str = "alpha", exclude: str = r"^gt-only",
                    level: float = 0.95) -> tuple[int, int] | None:
  """``(i, j)`` in ``shown`` (a :func:`grid_table` mean) of the cell with the best mean
  ``valid/<metric>`` over seeds (first in row-major order on ties), or ``None`` when the
  frame has no such column or no finite cell."""
  column = choice_column(metric)
  if column not in frame.columns:
    return None
  chosen, _, _ = grid_table(frame, column, rows=rows, cols=cols, exclude=exclude,
                            level=level)
  values = chosen.reindex(index=shown.index, columns=shown.columns).to_numpy(np.float64)
  if not np.isfinite(values).any():
    return None
  bi, bj = np.unravel_index(np.nanargmax(values), values.shape)
  return int(bi), int(bj)


def heatmap_figure(frame: pd.DataFrame, metric: str, *, rows: str = "temperature", cols: str = "alpha",
                   exclude: str = r"^gt-only", level: float = 0.95) -> Figure:
  """``temperature`` × ``alpha`` (T × α) heatmap of ``metric``: mean over seeds, each cell annotated (± CI half width
  when there are ≥ 2 seeds), the cell chosen on validation outlined; one panel per
  setup × program.

  The cells show ``metric`` as given (the test split for a plain name). The outlined cell
  is the one with the best mean ``valid/<metric>`` (:func:`best_valid_cell`), never the
  best shown value: choosing on test and reporting test overstates the winner. Without a
  ``valid/<metric>`` column (a run written before validation metrics existed) no cell is
  outlined and the title says so. The title quotes the ground-truth-only student
  (``exclude``'s match) when present, the grid's reference point. Raises ``ValueError``
  when ``rows``/``cols`` are not columns.
  """
  frame = _plottable(frame)
  if "program" not in frame.columns:
    frame = frame.assign(program="")
  if "role" not in frame.columns:
    frame = frame.assign(role="student")
  names = _setup_names(frame)
  panels = [(key, group) for key, group in frame.groupby(["setup", "program"], sort=False)
            if (group["role"] == "student").any()]
  if not panels:
    raise ValueError("heatmap_figure: no student rows to draw")
  fig = _figure(5.2 * len(panels) + 0.6, 4.4)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, ((setup, program), part) in zip(axes, panels):
    mean, half, seeds = grid_table(part, metric, rows=rows, cols=cols, exclude=exclude,
                                   level=level)
    values = mean.to_numpy(np.float64)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.85)
    ax.set_xticks(range(values.shape[1]), [f"{v:g}" for v in mean.columns])
    ax.set_yticks(range(values.shape[0]), [f"{v:g}" for v in mean.index])
    ax.set_xlabel("alpha (α, weight of the KD term)" if cols == "alpha" else cols)
    ax.set_ylabel("temperature (T)" if rows == "temperature" else rows)
    lo, hi = np.nanmin(values), np.nanmax(values)
    for i in range(values.shape[0]):
      for j in range(values.shape[1]):
        if not np.isfinite(values[i, j]):
          continue
        text = f"{values[i, j]:.3f}"
        if seeds > 1 and np.isfinite(half.iat[i, j]):
          text += f"\n±{half.iat[i, j]:.3f}"
        dark = values[i, j] < lo + 0.6 * (hi - lo) if hi > lo else True
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="white" if dark else "black")
    best = best_valid_cell(part, metric, mean, rows=rows, cols=cols, exclude=exclude,
                           level=level)
    if best is not None:
      bi, bj = best
      ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    title = f"{metric}: {names[setup]}" + (f" [{program}]" if program else "")
    title += (f"\n□ = best {choice_column(metric)}" if best is not None
              else f"\nno {choice_column(metric)} column: no cell chosen")
    ref = (part[part["point"].astype(str).str.contains(exclude, regex=True)]
           if exclude and "point" in part.columns else part.iloc[:0])
    if len(ref):
      title += f"\ngt-only: {pd.to_numeric(ref[metric]).mean():.3f}"
    title += (f"\nmean over {seeds} seeds ± {level:.0%} t-interval" if seeds > 1
              else "\none seed (no interval)")
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  return fig


def keep_ratio_figure(frame: pd.DataFrame, *, families: Sequence[str] | None = None,
                      level: float = 0.95) -> Figure:
  """Quality vs keep ratio: one panel per family (``recall``, ``sys_*``), one line per
  model of each setup, the teacher, the oracle and random drawn as references.

  x: the fraction of candidates the pre-ranker keeps (``recall@10%`` ... ``@90%``
  columns); y: the mean over seeds, with a shaded t-interval when there are ≥ 2 seeds.
  """
  frame = _plottable(frame)
  families = list(families) if families is not None else keep_ratio_families(frame.columns)
  if not families:
    raise ValueError("keep_ratio_figure: no '<family>@<r>%' columns (recall@10%, ...) in "
                     f"{list(frame.columns)}")
  names = _setup_names(frame)
  several = len(names) > 1
  fig = _figure(5.5 * len(families) + 2.6, 4.6)
  axes = fig.subplots(1, len(families), squeeze=False)[0]
  for ax, family in zip(axes, families):
    cols = keep_ratio_columns(frame.columns, family)
    if not cols:
      raise ValueError(f"keep_ratio_figure: family {family!r} has no '{family}@<r>%' "
                       "columns")
    ratios = np.array([r for r, _ in cols]) * 100
    stats = mean_ci(frame, [c for _, c in cols], by=["setup", "model"], level=level)
    student_i = 0
    for _, row in stats.iterrows():
      model = str(row["model"])
      y = np.array([row[c] for _, c in cols], np.float64)
      if not np.isfinite(y).any():
        continue
      label = f"{names[row['setup']]}: {model}" if several else model
      style = REFERENCE_STYLE.get(model)
      if style is None:
        if model.startswith("teacher"):
          style = REFERENCE_STYLE["teacher"]
        else:
          style = dict(color=matplotlib.colormaps["tab10"](student_i % 10), lw=1.1,
                       marker="o", ms=3, alpha=0.85)
          student_i += 1
      ax.plot(ratios, y, label=label, **style)
      if int(row["n"]) > 1:
        lo = np.array([row[f"{c}_lo"] for _, c in cols], np.float64)
        hi = np.array([row[f"{c}_hi"] for _, c in cols], np.float64)
        ax.fill_between(ratios, lo, hi, color=style["color"], lw=0,
                        alpha=0.15 if model in REFERENCE_STYLE else 0.06)
    ax.set_xlabel("keep ratio r (% of candidates kept by the pre-ranker)")
    ax.set_ylabel(f"{family}@r")
    ax.set_title(f"{family} vs keep ratio" + (" (mean ± t-interval over seeds)"
                                               if int(stats["n"].max()) > 1 else ""),
                 fontsize=10)
    ax.set_xticks(ratios)
    ax.grid(True, alpha=0.3)
  axes[-1].legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  ncol=1 + (len(stats) > 16))
  fig.tight_layout()
  return fig


def learning_curves_figure(history: pd.DataFrame, *, metrics: Sequence[str] | None = None,
                           roles: Sequence[str] = ("student",), level: float = 0.95) -> Figure:
  """Per-epoch curves (:func:`~prerank_jax.analysis.load.load_history`): one panel per
  metric, one line per point (mean over the seeds of a setup, shaded t-interval).

  ``metrics`` defaults to every logged metric; ``roles`` picks students and/or teachers.
  """
  ids = {"run", "seed", "setup", "model", "point", "role", "program", "epoch"}
  part = history[history["role"].isin(list(roles))] if "role" in history.columns else history
  if part.empty:
    raise ValueError(f"learning_curves_figure: no history rows with roles {list(roles)}")
  if metrics is None:
    metrics = [c for c in part.columns if c not in ids and part[c].notna().any()]
  metrics = list(metrics)
  if not metrics:
    raise ValueError("learning_curves_figure: no metric columns to plot")
  if "setup" not in part.columns:
    part = part.assign(setup=part.get("run", "all"))
  names = _setup_names(part)
  several = len(names) > 1
  stats = mean_ci(part, metrics, by=["setup", "model", "epoch"], level=level)
  fig = _figure(4.6 * len(metrics) + 2.6, 4.2)
  axes = fig.subplots(1, len(metrics), squeeze=False)[0]
  colors = matplotlib.colormaps["tab20"]
  for ax, metric in zip(axes, metrics):
    for i, ((setup, model), curve) in enumerate(stats.groupby(["setup", "model"], sort=False)):
      curve = curve.sort_values("epoch")
      label = f"{names[setup]}: {model}" if several else str(model)
      color = colors(i % 20)
      ax.plot(curve["epoch"], curve[metric], lw=1.2, marker=".", color=color, label=label)
      if int(curve["n"].max()) > 1:
        ax.fill_between(curve["epoch"], curve[f"{metric}_lo"], curve[f"{metric}_hi"],
                        color=color, alpha=0.12, lw=0)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.set_title(metric, fontsize=10)
    ax.grid(True, alpha=0.3)
  axes[-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
  fig.tight_layout()
  return fig


def headline_metrics(columns: Sequence[str], *, keep_ratio: float = 0.25) -> list[str]:
  """The heatmap metrics of a report: teacher consistency ``R@(k,r%)``, ``recall@r%`` and
  the cascade's ``sys_ndcg@k@r%`` at the keep ratio closest to ``keep_ratio`` (those
  present, in that order)."""
  out = []
  consistency = [(float(m[2]) / 100, c) for c in columns
                 if (m := re.match(r"^R@\((\d+),(\d+(?:\.\d+)?)%\)$", str(c)))]
  system = [f for f in keep_ratio_families(columns) if f.startswith("sys_ndcg")][:1]
  for found in (sorted(consistency), keep_ratio_columns(columns, "recall"),
                *(keep_ratio_columns(columns, f) for f in system)):
    if found:
      out.append(min(found, key=lambda rc: abs(rc[0] - keep_ratio))[1])
  return out


def report_figures(frame: pd.DataFrame, history: pd.DataFrame | None = None, *,
                   keep_ratio: float = 0.25, level: float = 0.95) -> dict[str, Figure]:
  """The figures ``prerank-jax report`` writes: ``{file name: figure}``.

  ``heatmap_<metric>.png`` per headline metric (:func:`headline_metrics`) when the
  students sweep both ``temperature`` and ``alpha`` over ≥ 2 values each (skipped with a warning when a cell
  would pool several points, e.g. a third swept axis); ``keep_ratio.png`` when keep-ratio
  columns exist; ``learning_curves.png`` from the history when given.
  """
  figures: dict[str, Figure] = {}
  students = _plottable(frame)  # the grid: students, not diverged, not gt-only
  if "role" in students.columns:
    students = students[students["role"] == "student"]
  if "point" in students.columns:
    students = students[~students["point"].astype(str).str.contains(r"^gt-only")]
  if {"temperature", "alpha"} <= set(students.columns) \
      and students["temperature"].nunique() > 1 \
      and students["alpha"].nunique() > 1:
    for metric in headline_metrics(list(frame.columns), keep_ratio=keep_ratio):
      safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_")
      try:
        figures[f"heatmap_{safe}.png"] = heatmap_figure(frame, metric, level=level)
      except ValueError as e:  # e.g. a third swept axis: T × α cells are not one point
        warnings.warn(f"report_figures: no heatmap of {metric}: {e}")
  if keep_ratio_families(frame.columns):
    figures["keep_ratio.png"] = keep_ratio_figure(frame, level=level)
  if history is not None and not history.empty:
    figures["learning_curves.png"] = learning_curves_figure(history, level=level)
  return figures
