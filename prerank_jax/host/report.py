"""Result tables: terminal text, CSV and Markdown, and the sweep point chosen on
validation (:func:`select_on_valid`)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any, Sequence

Row = dict[str, Any]
#: The prefix of the validation split's metric columns (``valid/ndcg@10``, ...).
VALID_PREFIX = "valid/"


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.4g}"
  return str(value)


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
  """An aligned plain-text table (the terminal view)."""
  cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  line = lambda xs: "  ".join(x.rjust(w) if i else x.ljust(w)
                              for i, (x, w) in enumerate(zip(xs, widths)))
  return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def terminal_columns(columns: Sequence[str], *, k: int, keep_ratios: Sequence[float],
                     has_truth: bool = True) -> list[str]:
  """The columns a reader needs first (about 8), chosen per run, for the terminal.

  ``model`` (and ``replicate_seed`` with replicates), the headline metric and the headline
  metric at each keep ratio r, the student's cost and ``status``. With the truth the
  headline is ``ndcg@k`` and, per r, ``sys_ndcg@k@r`` (NDCG@k of the cascade: the model
  keeps its top ⌈r·n⌉, the teacher reranks them); without it, ``R@(k,r)`` (teacher
  consistency). Columns the run does not have are skipped; the full table stays in
  results.md / results.csv.
  """
  from prerank_jax.evaluate import keep_label

  wanted = ["model", "replicate_seed"]
  if has_truth:
    wanted += [f"ndcg@{k}", *(f"sys_ndcg@{k}@{keep_label(r)}" for r in keep_ratios)]
  else:
    wanted += [f"R@({k},{keep_label(r)})" for r in keep_ratios]
  wanted += ["flops/cand", "status"]
  present = set(columns)
  return [c for c in wanted if c in present]


def full_table_note(run_dir: Any, columns: Sequence[str], shown: Sequence[str]) -> str:
  """Where the columns the terminal leaves out are: one line under the terminal table."""
  valid = any(str(c).startswith(VALID_PREFIX) for c in columns)
  return (f"Showing {len(shown)} of {len(columns)} columns, test split"
          + (f" (the validation split's metrics are the {VALID_PREFIX}* columns)"
             if valid else "")
          + f"; the full table is in {run_dir}/results.md and results.csv (per-candidate "
          f"scores of every split: scores.parquet; TREC run files and qrels: trec/).")


def headline_metric(columns: Sequence[str], *, k: int, keep_ratios: Sequence[float],
                    has_truth: bool = True) -> str:
  """The metric a run's sweep point is selected on: ``ndcg@k`` with the truth, else
  teacher consistency ``R@(k,r)`` at the first keep ratio (the terminal's first metric,
  :func:`terminal_columns`)."""
  shown = terminal_columns(columns, k=k, keep_ratios=keep_ratios, has_truth=has_truth)
  metrics = [c for c in shown if c not in ("model", "replicate_seed", "flops/cand", "status")]
  if not metrics:
    raise ValueError(f"headline_metric: none of ndcg@{k} / R@({k},r) in {list(columns)}")
  return metrics[0]


def select_on_valid(rows: Sequence[Row], metric: str) -> dict[str, Any] | None:
  """The student sweep point validation selects, and its test value.

  Definition: among the student rows that did not diverge (``status == "ok"``), grouped
  by point (the ``model`` name without a replicate's `` seed=<s>`` suffix, so replicates
  of ``sweep.seeds`` pool), the point with the highest mean of ``valid/<metric>``; ties go
  to the first in table order. Its ``<metric>`` (test) is reported, never used to choose.

  Returns:
    ``{"model", "metric", "valid", "test", "replicates", "points"}`` (means over the
    replicates; ``points``: how many were compared), or ``None`` when the rows have no
    ``valid/<metric>`` (a run written before validation metrics existed) or no student
    point to choose from.
  """
  key = f"{VALID_PREFIX}{metric}"
  groups: dict[str, list[Row]] = {}
  for row in rows:
    if row.get("status") != "ok" or key not in row:
      continue
    groups.setdefault(re.sub(r" seed=-?\d+$", "", str(row["model"])), []).append(row)
  if not groups:
    return None
  mean = lambda rs, c: float(sum(float(r[c]) for r in rs) / len(rs))
  best = None
  for model, group in groups.items():
    value = mean(group, key)
    if math.isfinite(value) and (best is None or value > best[1]):
      best = (model, value, group)
  if best is None:
    return None
  model, value, group = best
  return {"model": model, "metric": metric, "valid": value, "test": mean(group, metric),
          "replicates": len(group), "points": len(groups)}


def selection_text(selected: dict[str, Any] | None) -> str:
  """One line for results.md and the terminal: the point validation selects (or why none)."""
  if selected is None:
    return ("Selection: no student point with validation metrics to choose from; no point "
            "is selected (the test split is never used to choose).")
  m = selected["metric"]
  over = f", mean of {selected['replicates']} replicates" if selected["replicates"] > 1 else ""
  return (f"Selected on validation: **{selected['model']}**, the best "
          f"{VALID_PREFIX}{m} ({selected['valid']:.4f}{over}) of {selected['points']} "
          f"student points; its test {m} is {selected['test']:.4f}. The test split is "
          f"never used to choose.")


def markdown_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
  out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(out)


def csv_text(rows: Sequence[Row], columns: Sequence[str]) -> str:
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


def result_files(rows: Sequence[Row], columns: Sequence[str], *, history: dict[str, Any],
                 header: str) -> dict[str, str]:
  """The result files of a finished run: results.csv, results.md, history.json."""
  md = f"{header}\n\n{markdown_table(rows, columns)}\n"
  return {
      "results.csv": csv_text(rows, columns),
      "results.md": md,
      "history.json": json.dumps(history, indent=1),
  }


def selection_report(run_dirs: Sequence[Any]) -> str:
  """What ``prerank-jax report`` prints after the tables: per setup (runs that differ only
  by their seed are pooled) and program, the student point chosen on validation and its
  test value (:func:`prerank_jax.analysis.best_on_valid`).

  The metric is the headline of the runs: ``ndcg@k`` when they have a truth, else teacher
  consistency ``R@(k,r)`` at the first keep ratio in their columns. Runs without ``valid/``
  columns get a line saying that nothing is chosen and how to add them; the test split is
  never used to choose.
  """
  from prerank_jax.analysis import best_on_valid, load_runs

  frame = load_runs(list(run_dirs), config_columns=False)
  columns = [str(c) for c in frame.columns]
  metric = next((c for c in columns if re.fullmatch(r"ndcg@\d+", c)), None) or next(
      (c for c in columns if re.fullmatch(r"R@\(\d+,[^)]*\)", c)), None)
  if metric is None:
    return "Chosen on validation: no ndcg@k or R@(k,r) column to choose on."
  try:
    best = best_on_valid(frame, metric)
  except ValueError as e:
    return f"Chosen on validation: nothing ({e})"
  runs = {s: "+".join(dict.fromkeys(map(str, g["run"])))
          for s, g in frame.groupby("setup", sort=False)}
  lines = [f"Chosen on validation (valid/{metric}; the test value is reported, never used "
           "to choose):", ""]
  for _, row in best.iterrows():
    where = runs.get(row["setup"], str(row["setup"])) + (
        f" [{row['program']}]" if row.get("program") else "")
    seeds = frame.loc[frame["setup"] == row["setup"], "run"].nunique()
    lines.append(f"- {where}: **{row['model']}**, valid/{metric} "
                 f"{row[f'valid/{metric}']:.4f}, test {metric} {row[metric]:.4f} "
                 f"({row['n']} rows over {seeds} run(s); {row['candidates']} points "
                 "compared)")
  return "\n".join(lines)


def write_figures(run_dirs: Sequence[Any], out_dir: Any, *,
                  keep_ratio: float = 0.25) -> list[Any]:
  """Writes the analysis figures of finished runs as PNGs in ``out_dir``, next to the tables.

  The figures are :func:`prerank_jax.analysis.report_figures` of the runs' results and
  per-epoch history: T × α heatmaps of the headline metrics (with the seeds' CI width),
  quality vs keep ratio for every model beside the teacher and the oracle, and learning
  curves. (``pareto.png`` is written by :func:`prerank_jax.host.pareto.write_pareto_report`.)

  Returns:
    The written paths, in the order of ``report_figures``.
  """
  from pathlib import Path

  from prerank_jax.analysis import load_history, load_runs, report_figures

  frame = load_runs(run_dirs)
  try:
    history = load_history(run_dirs)
  except (FileNotFoundError, ValueError):  # a run without per-epoch history: no curves
    history = None
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for name, fig in report_figures(frame, history, keep_ratio=keep_ratio).items():
    path = out_dir / name
    fig.savefig(path, dpi=110)
    written.append(path)
  return written
