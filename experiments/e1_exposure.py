"""E1 — Exposure bias: labels only where the cascade showed something, and what removes it.

The claim this framework was seeded with: a pre-ranker trained on the logged labels alone
learns the biases of the logs (only exposed candidates have labels; exposed candidates at
low positions are rarely examined), and distillation from a teacher that scores every
candidate, or importance weighting that divides clicks by their observation propensity,
recovers what the logs hide. Arms, each in every world (quickstart world: "small"
simulator, MLP 64-32 student, MLP 256-256-128 teacher that sees the cross features):

- four ground-truth treatments, as structural programs of one run sharing one teacher
  (``student.loss.gt_weighting``): ``none`` (naive: the logged clicks on the exposed
  candidates), ``ips_examination`` (clicks / θ, position bias), ``ips_exposure`` (clicks /
  π over every candidate, selection bias) and ``ips_both`` (clicks / (π·θ)), each at α = 0
  (ground truth only) and α = 0.5 (with Hinton KD, T = 2);
- three settings of the logs: the quickstart's (E = 10 exposed of 60–100, position bias
  η = 1), strong position bias (η = 2), and a logging policy that orders what it shows
  mostly by item popularity (``data.logging_popularity = 3``), so that position bias
  rewards popularity rather than relevance;
- the same student distilled from the oracle teacher (the simulator's true relevance).

Recall is measured at keep ratios 10–90% of each full list.

  python experiments/e1_exposure.py            # full: 10 worlds × 2 replicates
  python experiments/e1_exposure.py --smoke    # tiny preset, 2 worlds, seconds
  python experiments/e1_exposure.py --from-results   # tables and figures from raw.csv
  python experiments/e1_exposure.py --letor [--smoke]   # on LETOR files (letor_world.py)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import Claim, Experiment, Method

WEIGHTINGS = ("none", "ips_examination", "ips_exposure", "ips_both")
KEEP_RATIOS = (0.1, 0.25, 0.5, 0.75, 0.9)
SETTINGS = {
    "logs E=10 η=1": {},
    "logs E=10 η=2": {"data.position_bias": 2.0},
    "popularity-ordered logs η=1": {"data.logging_popularity": 3.0},
}
ORACLE = "oracle teacher"


def _program(weighting: str) -> str:
  return f"student.loss.gt_weighting={weighting}"


def methods(smoke: bool) -> list[Method]:
  common = {"student.loss.kd": "hinton_listwise", "sweep.temperature": (2.0,),
            "sweep.alpha": (0.0, 0.5), "eval.keep_ratios": KEEP_RATIOS,
            "sweep.programs": "student.loss.gt_weighting=" + "|".join(WEIGHTINGS)}
  out = [Method(name, {**common, **extra}) for name, extra in SETTINGS.items()]
  out.append(Method(ORACLE, {**common, "teacher.model.name": "oracle",
                             "sweep.programs": ""}))
  return out


def _claims() -> list[Claim]:
  base = "logs E=10 η=1"
  label = lambda w: f"gt_weighting={w}"
  claims = []
  for setting in SETTINGS:
    for w in WEIGHTINGS[1:]:
      claims.append(Claim(
          f"{setting}: the {w} ground-truth student keeps more truly relevant candidates than the naive one",
          setting, harness.PRIMARY, +1, where={"program": label(w), "alpha": 0.0},
          against=setting, against_where={"program": label("none"), "alpha": 0.0},
          source="Joachims et al. 2017; Saito et al. 2020"))
    claims.append(Claim(
        f"{setting}: distillation (α = 0.5) beats the naive ground-truth student",
        setting, harness.PRIMARY, +1, where={"program": label("none"), "alpha": 0.5},
        against=setting, against_where={"program": label("none"), "alpha": 0.0},
        source="the seed's claim: the teacher sees every candidate"))
  claims.append(Claim(  # across teachers: the cascade with one common reference ranker
      "the oracle teacher's student beats the learned teacher's student (α = 0.5; both "
      "cascades re-ranked by the oracle)", ORACLE,
      harness.CROSS_TEACHER, +1, where={"alpha": 0.5}, against=base,
      against_where={"program": label("none"), "alpha": 0.5}, source="teacher quality"))
  return claims


def keep_ratio_figure(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  """Recall of truly relevant candidates vs keep ratio, per treatment, α = 0 and 0.5."""
  plt = harness.pyplot()
  settings = [m for m in frame["method"].unique() if m != ORACLE]
  fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4), squeeze=False)
  ratios = [r for r in KEEP_RATIOS if f"recall@{r:.0%}" in frame.columns]
  xs = [100 * r for r in ratios]
  for ax, setting in zip(axes[0], settings):
    rows = frame[(frame["method"] == setting) & (frame["role"] == "student")]
    for (program, alpha), group in rows.groupby(["program", "alpha"], sort=True):
      means = [pd.to_numeric(group[f"recall@{r:.0%}"], errors="coerce").groupby(
          group["seed"]).mean().mean() for r in ratios]
      style = "-" if float(alpha) > 0 else "--"
      ax.plot(xs, means, style, marker="o", ms=3,
              label=f"{program.split('=')[-1]} α={float(alpha):g}")
    for name, style in (("teacher", ":"), ("oracle (truth)", "-.")):
      ref = frame[(frame["method"] == setting) & (frame["model"] == name)]
      if len(ref):
        ax.plot(xs, [pd.to_numeric(ref[f"recall@{r:.0%}"], errors="coerce").mean()
                     for r in ratios], style, color="black", label=name)
    ax.set_xlabel("keep ratio (%)")
    ax.set_ylabel("recall of truly relevant candidates")
    ax.set_title(setting, fontsize=10)
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  path = harness.save_figure(fig, out_dir / "e1_keep_ratio.png")
  diff = out_dir / "e1_diff.png"
  harness.diff_bars(table, harness.PRIMARY, diff, title="E1: Δ recall@25% vs the gt-only student of "
                    "the same program", label=lambda r: f"{r['method']} {r['program']} "
                    f"{r['point']}")
  return [path, diff]


def notes(frame: pd.DataFrame) -> str:
  """How far each treatment's student is from the oracle ranking, per setting."""
  lines = ["## Ground-truth students (α = 0) per treatment, mean over worlds", "",
           "| setting | treatment | ndcg@10 | recall@10% | recall@50% |", "|---|---|---|---|---|"]
  rows = frame[(frame["role"] == "student") & np.isclose(
      pd.to_numeric(frame.get("alpha", 0), errors="coerce"), 0.0)]
  for (method, program), group in rows.groupby(["method", "program"], sort=True):
    vals = [pd.to_numeric(group[c], errors="coerce").groupby(group["seed"]).mean().mean()
            for c in ("ndcg@10", "recall@10%", "recall@50%") if c in group.columns]
    lines.append(f"| {method} | {program or '—'} | " + " | ".join(f"{v:.3f}" for v in vals)
                 + " |")
  return "\n".join(lines)


EXPERIMENT = Experiment(
    name="e1_exposure", title="E1 — exposure and position bias: naive, IPS and distillation",
    methods=methods, claims=_claims(), figures=keep_ratio_figure, notes=notes)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
