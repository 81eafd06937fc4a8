"""E2 — Hinton et al. (2015): the temperature T × mixing weight α grid, with and without T².

Claims re-run (quickstart world: "small" simulator, MLP 64-32 student on context and item
features, MLP 256-256-128 teacher that also sees the cross features; hinton_listwise):

- soft targets help: the distilled student (T = 4, α = 0.5) beats the student trained on
  exposed labels alone (Hinton et al. 2015, §3);
- a raised temperature helps: T = 4 beats T = 1 at α = 0.5 (§2);
- the T² factor matters when soft and hard targets are mixed: without it the soft term's
  gradients shrink as 1/T² (§2, "it is important to multiply them by T²"), so at T = 4,
  α = 0.5 the T² student beats the one without.

Each world seed is two runs (T² on / off, ``student.loss.options.kd_temperature_squared``),
each the whole T × α grid plus the gt-only student, all × ``sweep.seeds`` replicates, as
one compiled program.

  python experiments/e2_hinton.py            # full: 10 worlds × 2 replicates
  python experiments/e2_hinton.py --smoke    # tiny preset, 2 worlds, seconds
  python experiments/e2_hinton.py --from-results   # tables and figures from raw.csv
  python experiments/e2_hinton.py --letor [--smoke]   # on LETOR files (letor_world.py)

Full runtime: measured, see the README (results kept in experiments/results/e2_hinton/ and
e2_hinton_letor/).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import Claim, Experiment, Method

TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
ALPHAS = (0.25, 0.5, 0.75, 1.0)
T2, NO_T2 = "hinton_listwise ×T²", "hinton_listwise no T²"


def methods(smoke: bool) -> list[Method]:
  temps, alphas = ((1.0, 4.0), (0.5, 1.0)) if smoke else (TEMPERATURES, ALPHAS)
  grid = {"student.loss.kd": "hinton_listwise", "sweep.temperature": temps,
          "sweep.alpha": alphas}
  return [Method(T2, {**grid, "student.loss.options.kd_temperature_squared": True}),
          Method(NO_T2, {**grid, "student.loss.options.kd_temperature_squared": False})]


CLAIMS = [
    Claim("distillation (T=4, α=0.5) beats the gt-only student", T2, harness.PRIMARY, +1,
          where={"temperature": 4.0, "alpha": 0.5}, source="Hinton et al. 2015 §3"),
    Claim("T=4 beats T=1 at α=0.5", T2, harness.PRIMARY, +1, where={"temperature": 4.0, "alpha": 0.5},
          against=T2, against_where={"temperature": 1.0, "alpha": 0.5}, source="Hinton et al. 2015 §2"),
    Claim("with T², T=4 α=0.5 beats the same point without T²", T2, harness.PRIMARY, +1,
          where={"temperature": 4.0, "alpha": 0.5}, against=NO_T2,
          against_where={"temperature": 4.0, "alpha": 0.5}, source="Hinton et al. 2015 §2"),
]


def heatmaps(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path,
             metric: str = "ndcg@10") -> list[Path]:
  """Δ metric vs gt-only over T × α, one panel per T² setting, CI half-widths in cells."""
  plt = harness.pyplot()
  students = table[table["role"] == "student"]
  temps = sorted(students["temperature"].unique())
  alphas = sorted(students["alpha"].unique())
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), squeeze=False)
  values = students[f"{metric}_diff"].to_numpy(float)
  bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
  for ax, method in zip(axes[0], (T2, NO_T2)):
    grid = np.full((len(temps), len(alphas)), np.nan)
    half = np.full_like(grid, np.nan)
    for _, r in students[students["method"] == method].iterrows():
      i, j = temps.index(r["temperature"]), alphas.index(r["alpha"])
      grid[i, j], half[i, j] = r[f"{metric}_diff"], r[f"{metric}_diff_ci"]
    image = ax.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, origin="lower",
                      aspect="auto")
    for i in range(len(temps)):
      for j in range(len(alphas)):
        if math.isfinite(grid[i, j]):
          dark = abs(grid[i, j]) > 0.6 * bound
          ax.text(j, i, f"{grid[i, j]:+.3f}\n±{half[i, j]:.3f}", ha="center", va="center",
                  fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_xlabel("α (weight of the distillation term)")
    ax.set_ylabel("T")
    ax.set_title(method, fontsize=10)
  fig.colorbar(image, ax=axes[0].tolist(), label=f"Δ {metric} vs gt-only (95% CI in cells)")
  return [harness.save_figure(fig, out_dir / "e2_heatmap.png", tight=False)]


def notes(frame: pd.DataFrame) -> str:
  """Where the T² factor cannot matter, and a check that the raw rows agree."""
  students = frame[frame["role"] == "student"]
  same = []
  students = students.sort_values(["method", "seed", "replicate_seed"], kind="stable")
  for (t, alpha), group in students.groupby(["temperature", "alpha"]):
    on = group[group["method"] == T2]["ndcg@10"].to_numpy(float)
    off = group[group["method"] == NO_T2]["ndcg@10"].to_numpy(float)
    if len(on) and len(on) == len(off):
      same.append((t, alpha, float(np.max(np.abs(on - off)))))
  lines = ["## Reading the T² comparison", "",
           "T² rescales the distillation term only. At T = 1 it is 1, and at α = 1 the "
           "loss is the distillation term alone, whose constant factor Adam's step "
           "normalisation removes (up to its ε), so those points must agree with and "
           "without T²; the T² question is only open for α < 1 and T > 1. Largest "
           "|NDCG@10 (T²) − NDCG@10 (no T²)| over worlds and replicates, per point:", "",
           "| T | α | max abs difference |", "|---|---|---|"]
  lines += [f"| {t:g} | {a:g} | {d:.2e} |" for t, a, d in same]
  return "\n".join(lines)


EXPERIMENT = Experiment(
    name="e2_hinton", title="E2 — Hinton KD: T × α, with and without T²",
    methods=methods, claims=CLAIMS, figures=heatmaps, notes=notes)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
