"""Which way of teaching the pre-ranker works, and how much does the teacher matter?

Two comparisons on the quickstart setting ("small" simulator, MLP 64-32 student on context
and item features only, teacher an MLP 256-256-128 that also sees the cross features), on
true relevance and teacher consistency over full lists of held-out requests, over seeds:

  losses    every distillation loss of the registry at its reference hyperparameters,
            mixed with the ground-truth loss at α = 0.5 (T = 2 where the loss has a
            temperature), all as structural programs of one run per seed (one shared
            teacher), against the student trained on exposed labels alone (α = 0);
  teachers  Hinton listwise KD (T = 2, α ∈ {0.5, 1}) from four teachers: under-trained
            (1 epoch), the quickstart teacher (8 epochs), over-parameterised
            (1024-1024-512, 15× the FLOPs) and the oracle (scores the true relevance).
            R@(k, r) and τ are against each run's own teacher (the gt-only row: against
            the quickstart teacher).

Nothing is tuned per loss or per teacher. Differences smaller than the spread over seeds
are not findings.

  python experiments/distillation_comparison.py [--part losses|teachers|both]
      [--seeds 0 1 2] [--smoke] [--out experiments/results]

Expected runtime on a 2-core CPU: about 3 minutes per seed for each part (``--smoke``:
the tiny preset, seconds).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from prerank_jax.config_files import repo_config
from prerank_jax.host.runner import run
from prerank_jax.losses.registry import KD_LOSSES

ROOT = Path(__file__).resolve().parent.parent
METRICS = ["ndcg@10", "recall@25%", "R@(10,25%)", "kendall_tau", "ndcg@10_logs"]
TEACHERS = {  # name: config overrides of the teacher
    "under-trained (1 epoch)": {"num_epochs": 1, "epochs_per_chunk": 1},
    "quickstart (8 epochs)": {},
    "over-parameterised (1024-1024-512)": {"model.hidden": (1024, 1024, 512)},
    "oracle (true relevance)": {"model.name": "oracle"},
}


def base_config(seed: int, workdir: str, smoke: bool):
  config = repo_config("quickstart", "smoke" if smoke else None)
  config.seed, config.workdir = seed, workdir
  config.progress, config.wandb.mode = False, "disabled"
  return config


def compare_losses(seed: int, workdir: str, smoke: bool) -> dict[str, list[float]]:
  """``{row name: metric values}`` of one seed: one program per KD loss, one teacher."""
  config = base_config(seed, workdir, smoke)
  config.name = f"losses_seed{seed}"
  config.sweep.temperature, config.sweep.alpha = (2.0,), (0.5,)
  config.sweep.programs = "student.loss.kd=" + "|".join(KD_LOSSES)
  result = run(config)
  rows = {}
  for row in result.rows:
    name = row["model"]
    if "gt-only" in name:
      name = "student gt-only (α = 0)"  # identical in every program: keep one
    elif name.startswith("student ["):
      name = name[len("student [kd="):name.index("]")]
    rows.setdefault(name, [row[m] for m in METRICS])
  first = "student gt-only (α = 0)"
  return {first: rows.pop(first), **rows}


def compare_teachers(seed: int, workdir: str, smoke: bool) -> dict[str, list[float]]:
  """``{row name: metric values}`` of one seed: one run per teacher variant."""
  rows = {"student gt-only (α = 0, no teacher)": None}
  for j, (teacher, overrides) in enumerate(TEACHERS.items()):
    config = base_config(seed, workdir, smoke)
    config.name = f"teacher{j}_seed{seed}"
    config.sweep.temperature, config.sweep.alpha = (2.0,), (0.5, 1.0)
    for path, value in overrides.items():
      node = config.teacher
      *parents, leaf = path.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
    result = run(config)
    for row in sorted(result.rows, key=lambda r: r["model"] != "teacher"):
      name = row["model"]
      if name == "teacher":
        rows[f"{teacher}: the teacher itself"] = [row[m] for m in METRICS]
      elif name.startswith("student T="):
        alpha = row["alpha"]
        rows[f"{teacher}: student α = {alpha:g}"] = [row[m] for m in METRICS]
      elif "gt-only" in name and j == 1:  # trained alike in every run (same seed, data);
        # its R@ and τ are against the quickstart teacher, as in the losses table
        rows["student gt-only (α = 0, no teacher)"] = [row[m] for m in METRICS]
    print(f"  seed {seed} {teacher}: {result.timings['total_s']:.0f} s", flush=True)
  return rows


def table(title: str, per_seed: list[dict[str, list[float]]]) -> str:
  lines = [title, "", "| model | " + " | ".join(METRICS) + " |",
           "|---" * (len(METRICS) + 1) + "|"]
  for name in per_seed[0]:
    values = np.array([seed_rows[name] for seed_rows in per_seed])
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(values.mean(0), values.std(0))]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("losses", "teachers", "both"), default="both")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--smoke", action="store_true", help="tiny preset, few epochs")
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  preset = "tiny (smoke)" if args.smoke else "small"
  parts = {"losses": ("loss_comparison.md", compare_losses,
                      f"Distillation losses at α = 0.5 (T = 2 where defined), '{preset}' "
                      f"preset, seeds {args.seeds}: mean ± std over seeds."),
           "teachers": ("teacher_quality.md", compare_teachers,
                        f"Teacher quality and the distilled student (Hinton listwise, T = 2), "
                        f"'{preset}' preset, seeds {args.seeds}: mean ± std over seeds.")}
  for part in (("losses", "teachers") if args.part == "both" else (args.part,)):
    filename, compare, title = parts[part]
    with tempfile.TemporaryDirectory() as tmp:
      per_seed = []
      for seed in args.seeds:
        per_seed.append(compare(seed, tmp, args.smoke))
        print(f"{part}: seed {seed} done", flush=True)
    text = table(title, per_seed)
    print(text)
    (out / filename).write_text(text)


if __name__ == "__main__":
  main()
