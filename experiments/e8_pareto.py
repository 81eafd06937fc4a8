"""E8 — cost against quality: the Pareto front over student architectures and sizes.

Each student (linear; COLD-style MLPs of three widths; a two-tower) is distilled from the
same teacher (hinton_listwise, T = 2, α = 0.5) and trained alone on exposed labels (the
gt-only point of the same run: same architecture, same world, same replicate seeds).
Cost is the student's FLOPs per scored candidate (``prerank_jax.models.cost``).

Claims re-run:

- distillation improves the student at every size (one claim per student, on
  recall@25%, the pre-ranker's job: keep the truly relevant candidates for the ranker);
- capacity helps: the widest MLP's distilled student beats the narrowest one's.

The Pareto front is a choice (which student to deploy at which budget), so it is chosen
on the validation split (``valid/recall@25%``, as ``prerank_jax.host.pareto`` does) and
only drawn at the test values. Rows without validation columns (rows from before they
existed) get no front, and the summary says so: it needs a re-run.

  python experiments/e8_pareto.py [--smoke] [--from-results]

Full runtime: measured, see the README (results kept in experiments/results/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import Claim, Experiment, Method
from prerank_jax.host.pareto import pareto_front

STUDENTS = {  # name: overrides of config.student.model
    "linear": {"student.model.name": "linear"},
    "mlp 16": {"student.model.name": "mlp_student", "student.model.hidden": (16,)},
    "mlp 64-32": {"student.model.name": "mlp_student", "student.model.hidden": (64, 32)},
    "mlp 256-128": {"student.model.name": "mlp_student", "student.model.hidden": (256, 128)},
    "two-tower": {"student.model.name": "two_tower"},
}
SMOKE = ("linear", "mlp 16")
METRIC = "recall@25%"
VALID = f"valid/{METRIC}"  # the front is chosen on this column, never on the test split


def methods(smoke: bool) -> list[Method]:
  grid = {"student.loss.kd": "hinton_listwise", "sweep.temperature": (2.0,),
          "sweep.alpha": (0.5,)}
  return [Method(n, {**grid, **o}) for n, o in STUDENTS.items() if not smoke or n in SMOKE]


def claims(names) -> list[Claim]:
  out = [Claim(f"distillation improves the {n} student", n, METRIC, +1,
               source="Hinton et al. 2015; COLD (Wang et al. 2020)") for n in names]
  mlps = [n for n in names if n.startswith("mlp")]
  if len(mlps) > 1:
    out.append(Claim(f"the {mlps[-1]} student beats the {mlps[0]} student", mlps[-1], METRIC,
                     +1, against=mlps[0], source="capacity"))
  return out


def valid_means(frame: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray | None:
  """Per row of ``rows`` (points of the per-point table), the mean over worlds of its
  :data:`VALID` metric (worlds averaged as for the test metric: replicates first, diverged
  or non-finite rows left out); ``None`` when the raw rows have no validation column."""
  if VALID not in frame.columns:
    return None
  out = []
  for _, r in rows.iterrows():
    group = frame[(frame["method"] == r["method"]) & (frame["role"] == r["role"])
                  & (frame["program"] == r["program"]) & (frame["point"] == r["point"])]
    out.append(float(harness.world_values(group, VALID).mean()))
  return np.asarray(out, float)


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  """Recall@25% (95% CI) against FLOPs per candidate, distilled and gt-only, with the
  distilled students' Pareto front chosen on validation (none without ``valid/`` rows)."""
  plt = harness.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for role, marker in (("student", "o"), (harness.GT_ONLY, "s")):
    rows = table[table["role"] == role]
    ax.errorbar(rows["flops/cand"], rows[METRIC], yerr=np.nan_to_num(
        rows[f"{METRIC}_ci"].to_numpy(float)), fmt=marker, capsize=3,
        mfc="none" if role != "student" else None, ms=9 if role != "student" else 6,
        label="distilled" if role == "student" else "gt-only (same architecture)")
    if role == "student":
      for _, r in rows.iterrows():
        ax.annotate(r["method"], (r["flops/cand"], r[METRIC]), fontsize=8,
                    textcoords="offset points", xytext=(4, 4))
      valid = valid_means(frame, rows)
      if valid is not None:  # chosen on validation, drawn at the test values
        front = pareto_front(rows["flops/cand"], valid)
        order = np.argsort(rows["flops/cand"].to_numpy(float)[front])
        ax.plot(rows["flops/cand"].to_numpy(float)[front][order],
                rows[METRIC].to_numpy(float)[front][order], "k--", lw=0.8, marker="x",
                label=f"Pareto front (distilled; chosen on {VALID})")
  ax.set_xscale("log")
  ax.set_xlabel("student FLOPs per candidate")
  ax.set_ylabel(f"test {METRIC} (95% CI over worlds)")
  ax.legend(fontsize=8)
  return [harness.save_figure(fig, out_dir / "e8_pareto.png")]


def notes(frame: pd.DataFrame) -> str:
  """How the front was chosen, or why there is none."""
  if VALID in frame.columns:
    return (f"## The Pareto front\n\nChosen on the validation split ({VALID}, mean over "
            f"worlds), drawn at the test values: the test split never chooses.")
  return (f"## The Pareto front\n\n**No Pareto front: the kept raw rows have no {VALID} "
          f"column (they predate the validation metrics) — needs a re-run.** A front chosen "
          f"on the test metric it is reported on would be selected on the test split, so "
          f"none is drawn.")


def experiment(smoke: bool = False) -> Experiment:
  names = SMOKE if smoke else tuple(STUDENTS)
  return Experiment(name="e8_pareto", title="E8 — student cost against recall: the Pareto front",
                    methods=methods, claims=claims(names), figures=figures,
                    metrics=(METRIC, "ndcg@10", "R@(10,25%)"), diff_metric=METRIC,
                    notes=notes)


def main(argv=None) -> Path:
  import sys
  argv = sys.argv[1:] if argv is None else list(argv)
  return harness.main(experiment("--smoke" in argv), argv)


if __name__ == "__main__":
  main()
