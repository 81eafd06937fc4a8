"""E4 — Ranking Distillation (Tang & Wang, KDD 2018) at the paper's settings.

The reference form, as released (graytowne/rank_distill): the ground-truth term is the
pointwise log-loss on the instance's positives and 3 sampled negatives, summed per instance
and averaged over instances (``gt=gt_extra_positives``, ``gt_num_negatives=3``,
``gt_list_reduction=sum_per_list``); the distillation term treats the teacher's top K = 10
of the candidates (ground-truth positives excluded) as weighted positives with the position
weight w^a (λ = 1) and, after a warm-up of 10 epochs (``rd_warmup_steps`` = 10 × steps per
epoch), the hybrid weight w^a·w^b (μ = 0.1); loss = GT + α_p·KD with α_p = 1, i.e. our
α = α_p/(1 + α_p) = 0.5. Claims re-run (quickstart world, 20 student epochs):

- RD beats the student trained on the ground truth alone (the paper's Tables 3–4);
- the hybrid weighting beats the position-only weighting (the paper's Figure 4/Table 5);
- the λ and μ sweeps (the paper's Figure 5) are reported as tables, without a claim.

  python experiments/e4_ranking_distillation.py [--smoke] [--from-results]
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

import harness
from harness import Claim, Experiment, Method

HYBRID, POSITION, LAMBDA, MU = ("RD hybrid (paper)", "RD position-only", "RD λ sweep",
                                "RD μ sweep")
WARMUP_EPOCHS = 10
NEVER = 1e12  # a warm-up that never ends: the position weight only


def _warmup_steps(smoke: bool) -> float:
  config = harness.base_config(0, smoke=smoke)
  steps_per_epoch = math.ceil(config.data.num_requests / config.student.batch_size)
  epochs = min(WARMUP_EPOCHS, config.student.num_epochs // 2)
  return float(epochs * steps_per_epoch)


def methods(smoke: bool) -> list[Method]:
  warmup = _warmup_steps(smoke)
  reference = {"student.loss.kd": "ranking_distillation",
               "student.loss.gt": "gt_extra_positives",
               "student.loss.options.gt_num_negatives": 3,
               "student.loss.options.gt_list_reduction": "sum_per_list",
               "sweep.temperature": (1.0,),  # RD has no temperature: one point, not three
               "sweep.alpha": (0.5,), "sweep.rd_topk": (10.0,), "sweep.rd_lambda": (1.0,),
               "sweep.rd_mu": (0.1,), "sweep.rd_warmup_steps": (warmup,)}
  return [Method(HYBRID, reference),
          Method(POSITION, {**reference, "sweep.rd_warmup_steps": (NEVER,)}),
          Method(LAMBDA, {**reference, "sweep.rd_lambda": (0.5, 1.0, 2.0, 5.0)}),
          Method(MU, {**reference, "sweep.rd_mu": (0.01, 0.1, 1.0)})]


CLAIMS = [
    Claim("RD (hybrid, paper settings) beats the ground-truth-only student", HYBRID,
          harness.PRIMARY, +1, source="Tang & Wang 2018, Tables 3–4"),
    Claim("the hybrid weighting beats the position-only weighting", HYBRID, harness.PRIMARY, +1,
          against=POSITION, source="Tang & Wang 2018, §4.2 / Table 5"),
]


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  path = out_dir / "e4_diff.png"
  harness.diff_bars(table, harness.PRIMARY, path,
                    title="E4: Δ recall@25% of RD vs the gt-only student (same runs)")
  return [path]


EXPERIMENT = Experiment(
    name="e4_ranking_distillation", title="E4 — Ranking Distillation at the paper's settings",
    methods=methods, claims=CLAIMS, figures=figures)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
