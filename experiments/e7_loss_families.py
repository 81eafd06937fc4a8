"""E7 — every distillation loss family at an equal budget.

Every registered KD loss trains the same student (MLP 64-32, 20 epochs, batch 32, Adam
3e-3) from the same teacher at α = 0.5, with T = 2 where the loss has a temperature and
every other hyperparameter at its registered default (the reference's, where one exists):
the losses are structural programs of one run per world, sharing the teacher, each with its
own ground-truth-only student. Nothing is tuned per method. Claims: each family beats the
ground-truth-only student (the papers each claim this for their loss), judged on the
primary metric recall@25% of the truly relevant, with NDCG@10 beside it.

  python experiments/e7_loss_families.py [--smoke] [--from-results]
  python experiments/e7_loss_families.py --letor [--smoke]   # on LETOR files (letor_world.py)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import harness
from harness import Claim, Experiment, Method

GROUPS = {  # one run per group and world (each a structural program per loss)
    "distribution matching": ("hinton_listwise", "hinton_pointwise", "logit_mse",
                              "listnet_distill"),
    "pairwise and top-K": ("ranknet_distill", "soft_pairwise_distill",
                           "ranking_distillation", "rankdistil"),
    "cascade": ("fsltr_priority", "soft_recall", "rankflow"),
}
FAMILIES = {  # registry name -> family and paper
    "hinton_listwise": ("listwise KD", "Hinton et al. 2015"),
    "hinton_pointwise": ("pointwise KD", "Hinton et al. 2015"),
    "logit_mse": ("logit regression", "Ba & Caruana 2014"),
    "listnet_distill": ("listwise KD", "Cao et al. 2007"),
    "ranknet_distill": ("pairwise", "Burges 2005"),
    "soft_pairwise_distill": ("pairwise", "Burges 2005"),
    "ranking_distillation": ("top-K positives", "Tang & Wang 2018"),
    "rankdistil": ("top-k listwise", "Reddi et al. 2021"),
    "fsltr_priority": ("cascade pairwise", "Zheng et al. 2024"),
    "soft_recall": ("cascade recall", "LCRON, Wang et al. 2025"),
    "rankflow": ("cascade", "Qin et al. 2022"),
}
def methods(smoke: bool) -> list[Method]:
  return [Method(group, {"sweep.temperature": (2.0,), "sweep.alpha": (0.5,),
                         "sweep.programs": "student.loss.kd=" + "|".join(names)})
          for group, names in GROUPS.items()]


CLAIMS = [Claim(f"{name} ({FAMILIES[name][0]}) beats the ground-truth-only student", group,
                harness.PRIMARY, +1, where={"program": f"kd={name}"}, source=FAMILIES[name][1])
          for group, names in GROUPS.items() for name in names]


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  path = out_dir / "e7_diff.png"
  harness.diff_bars(table, harness.PRIMARY, path,
                    title="E7: Δ recall@25% vs the gt-only student, every KD loss at α = 0.5",
                    label=lambda r: r["program"])
  return [path]


EXPERIMENT = Experiment(name="e7_loss_families", title="E7 — every loss family, equal budget",
                        methods=methods, claims=CLAIMS, figures=figures)

if __name__ == "__main__":
  harness.main(EXPERIMENT)
