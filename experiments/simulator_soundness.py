"""Is the simulator sound? What the logs hide, measured over seeds.

Runs the quickstart pipeline ("small" simulator) for several seeds and reports, on true
relevance over full candidate lists of held-out requests:
  oracle (scores = truth)  ≥  teacher (sees cross features)  ≥  ...  ≥  random,
together with a heavy model that does *not* see the cross features (same width and depth
as the teacher), a student trained on exposed labels alone (gt-only, α = 0) and the
distilled students. Nothing here is tuned: the simulator presets are used as shipped.

  python experiments/simulator_soundness.py [--seeds 0 1 2] [--out experiments/results]

Expected runtime on a 2-core CPU: about 1 minute per seed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from prerank_jax.config_files import repo_config
from prerank_jax.host.runner import run

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--out", default=str(ROOT / "experiments" / "results"))
  args = parser.parse_args()
  metrics = ["ndcg@10", "recall@25%", "R@(10,25%)", "ndcg@10_logs"]
  table: dict[str, list[list[float]]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in args.seeds:
      for variant in ("teacher", "no_cross"):
        config = repo_config("quickstart")
        config.seed, config.workdir, config.progress = seed, tmp, False
        config.name = f"seed{seed}_{variant}"
        if variant == "no_cross":
          config.teacher.model.name = "mlp_heavy_no_cross"
          config.sweep.temperature, config.sweep.alpha = (1.0,), (1.0,)
        result = run(config)
        for row in result.rows:
          name = row["model"]
          if variant == "no_cross":
            if name != "teacher":
              continue
            name = "heavy model without cross features"
          elif name.startswith("student T="):
            name = "distilled students (mean over the 3×3 grid)"
          table.setdefault(name, []).append([row[m] for m in metrics])
        print(f"seed {seed} {variant}: {result.timings['total_s']:.0f} s")
  lines = [f"Simulator soundness, 'small' preset, seeds {args.seeds}: mean ± std over seeds "
           "(distilled students: over seeds and grid points).", "",
           "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
  order = ["oracle (truth)", "teacher", "heavy model without cross features",
           "distilled students (mean over the 3×3 grid)", "student gt-only", "random"]
  for name in order:
    values = np.array(table[name])
    cells = [f"{m:.3f} ± {s:.3f}" for m, s in zip(values.mean(0), values.std(0))]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n"
  print(text)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "simulator_soundness.md").write_text(text)


if __name__ == "__main__":
  main()
