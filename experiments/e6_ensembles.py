"""E6 — ensembles of 1, 3 and 5 teachers, and each way of combining them.

The teachers of an ensemble are the same architecture trained from different seeds, as one
vmapped sweep (``teacher.num_teachers``); the n = 3 ensemble is the first three members of
the n = 5 one. The student (hinton_listwise, T = 2, α = 0.5) distils the combined scores,
with each combiner of ``prerank_jax.losses.ensemble.ENSEMBLES`` (``student.loss.ensemble``).

Claims re-run:

- an ensemble of 5 teachers (mean logits) gives a better student than one teacher
  (Hinton et al. 2015 §3 distil an ensemble; the ensemble is the better teacher);
- so does an ensemble of 3;
- with 5 teachers, every combiner's student beats the gt-only student.

The first two compare students of different teachers (an ensemble against one). Their
primary metric is the cascade with ONE common reference ranker, the oracle
(``harness.CROSS_TEACHER``, ``oracle_sys_ndcg@10@25%``), so that the better teacher is not
counted as the better pre-ranker; ``sys_ndcg@10@25%`` (each method's own teacher) and
recall@25% are secondary. The claims against the gt-only student of the same run share
its teacher and keep recall@25%.

  python experiments/e6_ensembles.py [--smoke] [--from-results]

Full runtime: measured, see the README (results kept in experiments/results/e6_ensembles/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import harness
from harness import Claim, Experiment, Method
from prerank_jax.losses.ensemble import ENSEMBLES

SIZES = (1, 3, 5)
ONE = "1 teacher"


def name(n: int, combiner: str) -> str:
  return ONE if n == 1 else f"{n} teachers, {combiner}"


def methods(smoke: bool) -> list[Method]:
  grid = {"student.loss.kd": "hinton_listwise", "sweep.temperature": (2.0,),
          "sweep.alpha": (0.5,)}
  out = [Method(ONE, {**grid, "teacher.num_teachers": 1})]
  for n in ((3,) if smoke else SIZES[1:]):
    out += [Method(name(n, c), {**grid, "teacher.num_teachers": n, "student.loss.ensemble": c})
            for c in ENSEMBLES]
  return out


def claims(largest: int) -> list[Claim]:
  oracle = " (both cascades re-ranked by the oracle)"
  out = [Claim(f"{largest} teachers (mean_logits) beat 1 teacher" + oracle,
               name(largest, "mean_logits"), harness.CROSS_TEACHER, +1, against=ONE,
               source="Hinton et al. 2015 §3")]
  if largest > 3:
    out.append(Claim("3 teachers (mean_logits) beat 1 teacher" + oracle,
                     name(3, "mean_logits"), harness.CROSS_TEACHER, +1, against=ONE,
                     source="Hinton et al. 2015 §3"))
  out += [Claim(f"{largest} teachers ({c}) beat gt-only", name(largest, c), harness.PRIMARY, +1,
                source="ensemble distillation") for c in ENSEMBLES]
  return out


def figures(frame: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> list[Path]:
  """Student Δ recall@25% (the primary metric) vs gt-only against the ensemble size, one
  line per combiner."""
  plt = harness.pyplot()
  students = table[table["role"] == "student"]
  fig, ax = plt.subplots(figsize=(6, 4))
  one = students[students["method"] == ONE]
  for k, combiner in enumerate(ENSEMBLES):
    sizes, means, cis = [], [], []
    for n in SIZES:
      rows = one if n == 1 else students[students["method"] == name(n, combiner)]
      if len(rows):
        sizes.append(n + 0.06 * (k - 1))
        means.append(float(rows[f"{harness.PRIMARY}_diff"].iloc[0]))
        cis.append(float(np.nan_to_num(rows[f"{harness.PRIMARY}_diff_ci"].iloc[0])))
    ax.errorbar(sizes, means, yerr=cis, fmt="o-", capsize=3, label=combiner)
  ax.axhline(0, color="k", lw=0.8)
  ax.set_xticks(SIZES)
  ax.set_xlabel("teachers in the ensemble")
  ax.set_ylabel(f"student Δ {harness.PRIMARY} vs gt-only (95% CI)")
  ax.legend()
  return [harness.save_figure(fig, out_dir / "e6_ensembles.png")]


def experiment(smoke: bool = False) -> Experiment:
  return Experiment(name="e6_ensembles", title="E6 — ensembles of teachers and combiners",
                    methods=methods, claims=claims(3 if smoke else SIZES[-1]),
                    figures=figures)


def main(argv=None) -> Path:
  import sys
  argv = sys.argv[1:] if argv is None else list(argv)
  return harness.main(experiment("--smoke" in argv), argv)


if __name__ == "__main__":
  main()
