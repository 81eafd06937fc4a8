"""List-length scaling: time and memory of one training step per loss family, and of evaluation.

For N ∈ {100, 500, 1000, 5000} candidates per list and a batch of 16 requests, with the
quickstart student (MLP 64-32 over 16 features) and Adam, it compiles one training step
(``Trainer.step``: forward, loss, backward, update) per loss family and measures

  - the step's peak memory from XLA's compiled ``memory_analysis()``: arguments + outputs +
    temporaries (what the program holds at once; XLA's buffer assignment, not a guess);
  - its wall time, the median of ``--repeats`` steps after a warm-up step;
  - the growth exponents: the least-squares slope of log(memory) and log(time) against
    log(N) over the measured N (1 = linear, 2 = an N × N intermediate).

The families (distillation term + BCE on the exposed labels, α = 0.5):

  pointwise     hinton_pointwise                 O(N)
  listwise      hinton_listwise                  O(N)
  pairwise_top  ranknet_distill, pairwise_top=P  O(N·P) pairs with the teacher's top P
  rankdistil    rankdistil (8 PL samples)        O(S·N): S sorts
  rd            ranking_distillation (exact)     O(N log N): sorts
  soft_recall   soft_recall (NeuralSort)         O(R·128·N): row blocks of the relaxed sort
  rankflow      rankflow                         O(N log N): a top-k mask

and two all-pairs controls that are N × N by definition (``pairwise_all``:
``ranknet_distill`` with ``pairwise_top=0``; ``fsltr_priority``), to show what the
measurement reports for an N² loss. A control whose compiled memory exceeds ``--budget-gib``
is compiled but not run.

Evaluation: :func:`prerank_jax.evaluate.evaluate_stacked` (every full-list metric at every
keep ratio, the cascade and teacher-consistency metrics) on 16 requests, measured the same
way.

Run:

  python benchmarks/list_scaling.py [--sizes 100 500 1000 5000] [--batch 16]
      [--families ...] [--out benchmarks/results]

Expected runtime on a 2-core CPU: about 10 minutes on a quiet machine (compilation
dominates); 30 minutes were not enough under a load average of 10.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import Batch, feature_sizes
from prerank_jax.config_files import repo_config
from prerank_jax.evaluate import _evaluate_stacked
from prerank_jax.losses.registry import HPARAMS
from prerank_jax.train import make_train

ROOT = Path(__file__).resolve().parent.parent
PAIR_TOP = 50  # pairwise_top P of the bounded pairwise family

FAMILIES: dict[str, dict] = {
    "pointwise": dict(kd="hinton_pointwise"),
    "listwise": dict(kd="hinton_listwise"),
    "pairwise_top": dict(kd="ranknet_distill", options=dict(pairwise_top=PAIR_TOP)),
    "rankdistil": dict(kd="rankdistil"),
    "rd": dict(kd="ranking_distillation"),
    "soft_recall": dict(kd="soft_recall"),
    "rankflow": dict(kd="rankflow"),
    "pairwise_all (control)": dict(kd="ranknet_distill", options=dict(pairwise_top=0)),
    "fsltr_priority (control)": dict(kd="fsltr_priority"),
}


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_batch(r: int, n: int, seed: int = 0, features: int = 8) -> Batch:
  """Synthetic full lists: 10 exposed candidates per list with binary clicks, graded truth
  0-3 and a noisy teacher."""
  rng = np.random.default_rng(seed)
  truth = rng.integers(0, 4, (r, n)).astype(np.float32)
  exposed = np.zeros((r, n), bool)
  exposed[:, :10] = True
  label = np.where(exposed, (truth >= 2).astype(np.float32), 0.0).astype(np.float32)
  f32 = lambda *s: rng.normal(size=s).astype(np.float32)
  return Batch(context=f32(r, features), items=f32(r, n, features), cross=f32(r, n, features),
               label=label, exposed=exposed, valid=np.ones((r, n), bool),
               true_relevance=truth, propensity=np.ones((r, n), np.float32),
               teacher_scores=(truth + f32(r, n))[..., None],
               exposure_propensity=np.ones((r, n), np.float32))


def peak_bytes(compiled) -> int:
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def step_point(family: dict, batch: Batch, repeats: int, budget: int) -> dict:
  config = repo_config("quickstart", "full")
  config.student.batch_size = batch.label.shape[0]
  config.student.loss.kd = family["kd"]
  config.student.loss.gt = "bce"
  for name, value in family.get("options", {}).items():
    config.student.loss.options[name] = value
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(batch),
                       num_train_requests=batch.label.shape[0])
  hparams = {n: jnp.float32(h.default) for n, h in HPARAMS.items()}
  hparams["alpha"] = jnp.float32(0.5)
  batch = jax.device_put(batch)
  state = jax.jit(trainer.init)(hparams, jax.random.key(0))
  compiled = jax.jit(trainer.step).lower(state, batch, hparams).compile()
  out = {"peak_MiB": peak_bytes(compiled) / 2**20,
         "temp_MiB": compiled.memory_analysis().temp_size_in_bytes / 2**20}
  if peak_bytes(compiled) > budget:
    out["step_s"] = None
    out["note"] = "over the memory budget: compiled, not run"
    return out
  box = [state]

  def run():
    box[0], loss = compiled(box[0], batch, hparams)
    return loss

  out["step_s"] = median_time(run, repeats)
  out["loss_finite"] = bool(np.isfinite(run()))
  return out


def eval_point(batch: Batch, repeats: int) -> dict:
  config = repo_config("quickstart", "full")
  scores = jnp.asarray(np.random.default_rng(1).normal(size=(1, *batch.label.shape)),
                       jnp.float32)
  teacher = jnp.asarray(batch.teacher_scores[..., 0])
  batch = jax.device_put(batch)
  kwargs = dict(k=int(config.eval.k), keep_ratios=tuple(config.eval.keep_ratios),
                ndcg_empty="exclude", gain="exp2")
  compiled = _evaluate_stacked.lower(scores, batch, teacher, jnp.float32(2.0),
                                     **kwargs).compile()
  run = lambda: compiled(scores, batch, teacher, jnp.float32(2.0))
  return {"peak_MiB": peak_bytes(compiled) / 2**20,
          "temp_MiB": compiled.memory_analysis().temp_size_in_bytes / 2**20,
          "step_s": median_time(run, repeats)}


def slope(ns, values) -> float | None:
  pts = [(n, v) for n, v in zip(ns, values) if v is not None and v > 0]
  if len(pts) < 2:
    return None
  x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
  return float(np.polyfit(x, y, 1)[0])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000, 5000])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--families", nargs="+", default=list(FAMILIES) + ["evaluation"],
                      choices=list(FAMILIES) + ["evaluation"])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--budget-gib", type=float, default=4.0)
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  parser.add_argument("--from-results", metavar="FILE", nargs="+",
                      help="print the report of results files and exit (runs nothing): a "
                           "JSON written by this script (its meta is used), and optionally "
                           "rows printed by other runs (.jsonl, one row a line)")
  args = parser.parse_args()
  if args.from_results:
    meta, rows = None, []
    for name in args.from_results:
      text = Path(name).read_text()
      if name.endswith(".jsonl"):
        rows += [json.loads(line) for line in text.splitlines() if line.strip()]
      else:
        results = json.loads(text)
        meta, rows = results["meta"], rows + results["rows"]
    print(report(meta, rows), end="")
    return
  budget = int(args.budget_gib * 2**30)
  meta = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
      "machine": f"{platform.processor() or platform.machine()}, "
                 f"{jax.device_count()} × {jax.devices()[0].device_kind} "
                 f"({jax.default_backend()})",
      "jax": jax.__version__, "batch": args.batch, "sizes": args.sizes,
      "budget_GiB": args.budget_gib, "pairwise_top": PAIR_TOP, "repeats": args.repeats,
      "load_average_at_start": list(os.getloadavg()),
      "model": "mlp_student 64-32, 16 input features, Adam",
  }
  batches = {n: make_batch(args.batch, n) for n in args.sizes}
  rows = []
  for name in args.families:
    points = {}
    for n in args.sizes:
      points[n] = (eval_point(batches[n], args.repeats) if name == "evaluation" else
                   step_point(FAMILIES[name], batches[n], args.repeats, budget))
      log(f"{name} N={n}: {points[n]}")
    row = {"family": name, "kd": FAMILIES.get(name, {}).get("kd", "evaluate_stacked"),
           "points": {str(n): p for n, p in points.items()},
           "memory_exponent": slope(args.sizes, [points[n]["peak_MiB"] for n in args.sizes]),
           "temp_exponent": slope(args.sizes, [points[n]["temp_MiB"] for n in args.sizes]),
           "time_exponent": slope(args.sizes, [points[n]["step_s"] for n in args.sizes])}
    largest = points[max(args.sizes)]
    row["fits_budget_at_largest_N"] = (largest["peak_MiB"] * 2**20 <= budget
                                       and largest["step_s"] is not None)
    print(json.dumps(row), flush=True)
    rows.append(row)
    # Written after every family, so a run stopped part-way keeps what it measured.
    meta["load_average_at_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "list_scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

  text = report(meta, rows)
  print(text)
  (Path(args.out) / "list_scaling.md").write_text(text)


def report(meta: dict, rows: list[dict]) -> str:
  """The README's text and table, from a results JSON's ``meta`` and ``rows``."""
  f = lambda x, fmt: "—" if x is None else format(x, fmt)
  load = lambda key: ", ".join(f"{x:.1f}" for x in meta[key])
  head = " | ".join(f"N={n}: MiB / ms" for n in meta['sizes'])
  lines = [f"Machine: {meta['machine']}; jax {meta['jax']}; {meta['date']}. One training "
           f"step (forward, loss, backward, Adam) of the quickstart student on a batch of "
           f"{meta['batch']} lists; memory = XLA's compiled arguments + outputs + temporaries; "
           f"time = median of {meta['repeats']} steps after a warm-up. Exponents: slope of "
           "log(value) on log(N) (temporaries for memory). The evaluation row is every "
           "full-list metric of evaluate_stacked on the same lists. Load average (1, 5, 15 "
           f"min): {load('load_average_at_start')} at the start, "
           f"{load('load_average_at_end')} at the end.", "",
           f"| family | {head} | memory exp. | time exp. | ≤ {meta['budget_GiB']:g} GiB at "
           f"N={max(meta['sizes'])} |", "|" + "---|" * (len(meta['sizes']) + 4)]
  for r in rows:
    cells = " | ".join(f"{p['peak_MiB']:.0f} / {f(p['step_s'] and 1e3 * p['step_s'], '.0f')}"
                       for p in r["points"].values())
    lines.append(f"| {r['family']} | {cells} | {f(r['temp_exponent'], '.2f')} "
                 f"| {f(r['time_exponent'], '.2f')} "
                 f"| {'yes' if r['fits_budget_at_largest_N'] else 'no'} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
