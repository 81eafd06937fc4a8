"""E5 — does the teacher's quality matter? Under-trained, quickstart, over-parameterised
and oracle teachers, each distilled into the same student (hinton_listwise, T = 2).

Claims re-run:

- distilling the quickstart teacher (α = 0.5) beats the gt-only student;
- a poor (under-trained, 1 epoch) teacher passes on its faults: at α = 1 its student is
  *worse* than the gt-only student (Cho & Hariharan 2019 argue the teacher must suit the
  student; this repository's earlier 3-seed table found this);
- a bigger, more accurate teacher is not a better teacher: the over-parameterised
  teacher's student is equivalent to the quickstart teacher's (Cho & Hariharan 2019, "more
  accurate teachers often don't make good teachers");
- a perfect (oracle) teacher gives a better student than the quickstart teacher.

The last two compare students of different teachers. Their primary metric is the cascade
with ONE common reference ranker, the oracle (``harness.CROSS_TEACHER``,
``oracle_sys_ndcg@10@25%``: each student keeps its top 25%, the oracle reorders what was
kept, |Δ| ≤ 0.01 for the equivalence), so that the better teacher is not counted as the
better pre-ranker; ``sys_ndcg@10@25%`` (each method's own teacher) is secondary.

  python experiments/e5_teacher_quality.py [--smoke] [--from-results]

Full runtime: measured, see the README (results kept in experiments/results/).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import harness
from harness import Claim, Experiment, Method

UNDER, BASE, OVER, ORACLE = ("under-trained teacher", "quickstart teacher",
                             "over-parameterised teacher", "oracle teacher")


def methods(smoke: bool) -> list[Method]:
  grid = {"student.loss.kd": "hinton_listwise", "sweep.temperature": (2.0,),
          "sweep.alpha": (0.5, 1.0)}
  big = (512, 512) if smoke else (1024, 1024, 512)
  return [Method(UNDER, {**grid, "teacher.num_epochs": 1, "teacher.epochs_per_chunk": 1}),
          Method(BASE, grid),
          Method(OVER, {**grid, "teacher.model.hidden": big}),
          Method(ORACLE, {**grid, "teacher.model.name": "oracle"})]


CLAIMS = [
    Claim("the quickstart teacher's student (α=0.5) beats gt-only", BASE, harness.PRIMARY, +1,
          where={"alpha": 0.5}, source="Hinton et al. 2015"),
    Claim("an under-trained teacher's student (α=1) is worse than gt-only", UNDER,
          harness.PRIMARY, -1, where={"alpha": 1.0}, source="Cho & Hariharan 2019"),
    Claim("over-parameterised teacher ≈ quickstart teacher for the student (α=0.5, both "
          "cascades re-ranked by the oracle, |Δ| ≤ 0.01)", OVER, harness.CROSS_TEACHER, 0,
          where={"alpha": 0.5}, against=BASE, against_where={"alpha": 0.5}, margin=0.01,
          source="Cho & Hariharan 2019"),
    Claim("an oracle teacher's student (α=0.5) beats the quickstart teacher's (both "
          "cascades re-ranked by the oracle)", ORACLE, harness.CROSS_TEACHER, +1,
          where={"alpha": 0.5}, against=BASE, against_where={"alpha": 0.5},
          source="teacher quality"),
]


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  """Teacher NDCG@10 beside its students' Δ recall@25% (the primary metric) vs gt-only."""
  plt = harness.pyplot()
  import numpy as np
  teachers = table[table["role"] == "teacher"].set_index("method")
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  names = [m for m in (UNDER, BASE, OVER, ORACLE) if m in teachers.index]
  y = np.arange(len(names))
  ax1.barh(y, teachers.loc[names, "ndcg@10"], xerr=np.nan_to_num(
      teachers.loc[names, "ndcg@10_ci"].to_numpy(float)), capsize=3, color="tab:gray")
  ax1.set_yticks(y, names)
  ax1.invert_yaxis()
  ax1.set_xlabel("teacher test NDCG@10 (95% CI)")
  students = table[table["role"] == "student"]
  for k, alpha in enumerate(sorted(students["alpha"].unique())):
    rows = students[students["alpha"] == alpha].set_index("method").reindex(names)
    ax2.barh(y + 0.4 * k - 0.2, rows[f"{harness.PRIMARY}_diff"], height=0.4,
             xerr=np.nan_to_num(rows[f"{harness.PRIMARY}_diff_ci"].to_numpy(float)), capsize=3,
             label=f"α = {alpha:g}")
  ax2.axvline(0, color="k", lw=0.8)
  ax2.set_yticks(y, names)
  ax2.invert_yaxis()
  ax2.set_xlabel(f"student Δ {harness.PRIMARY} vs gt-only (95% CI)")
  ax2.legend()
  return [harness.save_figure(fig, out_dir / "e5_teacher_quality.png")]


EXPERIMENT = Experiment(name="e5_teacher_quality",
                        title="E5 — teacher quality and the distilled student",
                        methods=methods, claims=CLAIMS, figures=figures)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
