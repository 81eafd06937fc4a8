"""Is the simulator sound? What the logs hide, as paired comparisons over world seeds.

The quickstart pipeline ("small" simulator, presets as shipped, nothing tuned) in each
world, two runs:

- ``quickstart``: the teacher (MLP 256-256-128 that sees the cross features), the 3×3
  (T, α) grid of distilled students and the gt-only student;
- ``heavy model without cross features``: a teacher of the same width and depth that does
  *not* see the cross features (``mlp_heavy_no_cross``), with one student point.

Claims, on true relevance over full candidate lists of held-out requests (the ordering the
simulator is built to have): oracle > teacher > heavy model without cross features ≈
gt-only student; teacher > distilled students (the mean over the grid) > gt-only student
> random. The teacher's advantage must come from the cross features, not from its size.

  python experiments/simulator_soundness.py            # full: 10 worlds × 2 replicates
  python experiments/simulator_soundness.py --smoke    # tiny preset, 2 worlds
  python experiments/simulator_soundness.py --from-results   # tables and figures
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import GT_ONLY, Claim, Experiment, Method

QUICKSTART, NO_CROSS = "quickstart", "heavy model without cross features"
METRICS = ("ndcg@10", "recall@25%", "R@(10,25%)", "ndcg@10_logs")


def methods(smoke: bool) -> list[Method]:
  return [Method(QUICKSTART, {}),
          Method(NO_CROSS, {"teacher.model.name": "mlp_heavy_no_cross",
                            "sweep.temperature": (1.0,), "sweep.alpha": (1.0,)})]


SOURCE = "the simulator's design (prerank_jax/data/simulator.py)"
CLAIMS = [
    Claim("the oracle (true relevance) beats the teacher", QUICKSTART, harness.PRIMARY, +1,
          role="reference", where={"point": "oracle (truth)"}, against=QUICKSTART,
          against_role="teacher", source=SOURCE),
    Claim("the teacher (sees cross features) beats the heavy model without them",
          QUICKSTART, harness.PRIMARY, +1, role="teacher", against=NO_CROSS,
          against_role="teacher", source=SOURCE),
    Claim("the teacher beats its distilled students (mean over the grid)", QUICKSTART,
          harness.PRIMARY, +1, role="teacher", against=QUICKSTART, source=SOURCE),
    Claim("distilled students (mean over the grid) beat the gt-only student", QUICKSTART,
          harness.PRIMARY, +1, source="Hinton et al. 2015; the seed's claim"),
    Claim("the heavy model without cross features ≈ the gt-only student (|Δ| ≤ 0.005): "
          "the teacher's advantage is its features, not its size", NO_CROSS, harness.PRIMARY, 0,
          role="teacher", against=QUICKSTART, against_role=GT_ONLY, margin=0.005,
          source=SOURCE),
    Claim("the gt-only student beats random scores", QUICKSTART, harness.PRIMARY, +1,
          role=GT_ONLY, against=QUICKSTART, against_role="reference",
          against_where={"point": "random"}, source=SOURCE),
]

ORDER = [  # (row name, method, role, point or None for every point of the role)
    ("oracle (truth)", QUICKSTART, "reference", "oracle (truth)"),
    ("teacher (sees cross features)", QUICKSTART, "teacher", None),
    (NO_CROSS, NO_CROSS, "teacher", None),
    ("distilled students (mean over the 3×3 grid)", QUICKSTART, "student", None),
    ("student gt-only (α = 0)", QUICKSTART, GT_ONLY, None),
    ("random", QUICKSTART, "reference", "random"),
]


def model_rows(frame: pd.DataFrame) -> pd.DataFrame:
  """One row per model of ``ORDER``: mean ± 95% CI over worlds of each metric (a world's
  value: the mean over its rows, i.e. replicates and, for the students, grid points)."""
  out = []
  for name, method, role, point in ORDER:
    rows = frame[(frame["method"] == method) & (frame["role"] == role)]
    if point is not None:
      rows = rows[rows["point"] == point]
    row = {"model": name, "worlds": int(rows["seed"].nunique())}
    for m in METRICS:
      mean, half, _ = harness.t_interval(harness.world_values(rows, m).to_numpy(float))
      row[m], row[f"{m}_ci"] = mean, half
    out.append(row)
  return pd.DataFrame(out)


def notes(frame: pd.DataFrame) -> str:
  table = model_rows(frame)
  lines = ["## The ordering, mean ± 95% CI over worlds", "",
           "| model | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
  for _, r in table.iterrows():
    lines.append(f"| {r['model']} | " + " | ".join(
        harness._pm(r[m], r[f"{m}_ci"]) for m in METRICS) + " |")
  return "\n".join(lines)


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  """NDCG@10 per model of the ordering, with its 95% CI over worlds."""
  plt = harness.pyplot()
  rows = model_rows(frame)
  fig, ax = plt.subplots(figsize=(7, 3.2))
  y = np.arange(len(rows))
  err = [h if math.isfinite(h) else 0.0 for h in rows["ndcg@10_ci"]]
  ax.barh(y, rows["ndcg@10"].to_numpy(float), xerr=err, color="tab:blue", alpha=0.7,
          capsize=3)
  ax.set_yticks(y, rows["model"], fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel("NDCG@10 on the truth (95% CI over world seeds)")
  ax.set_title("Simulator soundness: what each model recovers", fontsize=10)
  return [harness.save_figure(fig, out_dir / "soundness_ndcg.png")]


EXPERIMENT = Experiment(
    name="simulator_soundness", title="Is the simulator sound? oracle > teacher > ... > random",
    methods=methods, claims=CLAIMS, figures=figures, notes=notes, metrics=METRICS)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
