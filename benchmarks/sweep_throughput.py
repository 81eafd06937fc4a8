"""Sweep throughput: one vmapped program for K points vs K runs one after another.

On the quickstart data ("small" simulator: 2,000 train requests × up to 100 candidates)
and the quickstart student (MLP 64-32, Hinton listwise KD mixed with BCE, batch 32
requests, Adam), for K = 1, 4, 16, 64 sweep points it measures, in one process:

  - wall time per epoch and (requests × points) per second of the vmapped sweep, for the
    training steps alone (the work the PyTorch loop does), with all K points in one vmap
    and in groups (``sweep.group_size``, default 4 here), and a whole prerank-jax epoch
    (steps plus the per-epoch validation monitor);
  - achieved FLOP/s (XLA's cost analysis of the compiled epoch / wall time) as a fraction of
    this machine's dense f32 matmul FLOP/s, measured in the same run;
  - the compiled program's memory (arguments, outputs, temporaries) split into the shared
    data and the per-point state, so growth with K can be attributed;
  - (a) K sequential single-point prerank-jax runs;
  - (b) a plain PyTorch loop training the same model with the same loss K times
    (optional: ``pip install torch==2.13.0``; skipped if torch is missing).

The teacher scores are a fixed noisy copy of the true relevance: training a teacher is not
what is measured here. Run:

  python benchmarks/sweep_throughput.py [--ks 1 4 16 64] [--epochs 3] [--group-size 4] [--out benchmarks/results]

Expected runtime on a 2-core CPU: about 3 minutes with PyTorch.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import feature_sizes
from prerank_jax.config_files import repo_config
from prerank_jax.data.simulator import PRESETS, simulate
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, in_groups, stack_points

ROOT = Path(__file__).resolve().parent.parent


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
  """Dense f32 matmul FLOP/s of this machine, measured with XLA."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - t)


def make_data(seed: int = 0) -> SweepData:
  splits = simulate(PRESETS["small"], seed=seed)
  rng = np.random.default_rng(seed)
  out = {}
  for name in ("train", "valid"):
    b = splits[name]
    teacher = (b.true_relevance + rng.normal(size=b.label.shape)).astype(np.float32)
    out[name] = b._replace(teacher_scores=teacher[..., None])
  return SweepData(out["train"], out["valid"])


def points_for(k: int):
  temps = np.geomspace(0.5, 8.0, k).tolist()
  return grid_points({"temperature": temps, "alpha": (0.9,), "learning_rate": (3e-3,)},
                     seed=0, mode="zip")


def _flops(exe) -> float:
  cost = exe.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def training_epoch(trainer, group_size: int = 0):
  """One epoch of training steps only (:attr:`Trainer.train_epoch`), vmapped over points:
  the work the PyTorch loop does, without the per-epoch validation monitor that
  ``run_chunk`` adds (timed separately); with ``group_size`` the points run as
  ``sweep.group_size`` does (:func:`in_groups`)."""
  return jax.jit(in_groups(jax.vmap(trainer.train_epoch, in_axes=(0, 0, None)), group_size))


def _best_time(fn, state, hparams, data, repeats: int):
  state, _ = fn(state, hparams, data)  # warm-up
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    state, _ = fn(state, hparams, data)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t)
  return min(times), state


def time_jax(trainer, k: int, data: SweepData, epochs: int, batch_size: int,
             group_size: int):
  """Best-of-``epochs`` wall times of one vmapped epoch, its training FLOPs and memory.

  Returns a dict: ``train_s`` (training steps only, as the PyTorch loop, all K points in
  one vmap), ``grouped_s`` (the same with ``sweep.group_size=group_size``), ``full_s``
  (a whole prerank-jax epoch, ``run_chunk`` in groups: steps plus the per-epoch
  validation monitor), the training ``flops``, the temporaries of both training programs
  and the per-point ``state_bytes``. XLA's cost analysis counts a loop body once, so the
  epoch's FLOPs are steps × (FLOPs of one compiled vmapped step).
  """
  hparams, rngs = stack_points(points_for(k))
  state = compile_sweep(trainer).init(hparams, rngs)
  exes = {
      "train_s": training_epoch(trainer),
      "grouped_s": training_epoch(trainer, group_size),
      "full_s": compile_sweep(trainer, group_size=group_size).run_chunk,
  }
  exes = {name: f.lower(state, hparams, data).compile() for name, f in exes.items()}
  batch = data.train.take(slice(0, batch_size))
  step = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, 0))).lower(state, batch, hparams)
  out = {"flops": _flops(step.compile()) * trainer.steps_per_epoch,
         "temp_MiB": exes["train_s"].memory_analysis().temp_size_in_bytes / 2**20,
         "grouped_temp_MiB": exes["grouped_s"].memory_analysis().temp_size_in_bytes / 2**20}
  for name, exe in exes.items():
    out[name], state = _best_time(exe, state, hparams, data, epochs)
  out["state_bytes"] = sum(x.nbytes for x in jax.tree.leaves(state))
  return out


def torch_epoch_time(data: SweepData, k: int, epochs: int, config) -> float | None:
  """K sequential PyTorch runs of the same model/loss/optimizer; seconds per epoch each."""
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(2)
  # The same device as JAX: a GPU when there is one (the GPU run compares on one chip).
  dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  train = data.train
  put = lambda x: torch.from_numpy(np.asarray(x)).to(dev)
  ctx, items, label = put(train.context), put(train.items), put(train.label)
  exposed, valid = put(train.exposed & train.valid), put(train.valid)
  teacher = put(train.teacher_scores[..., 0])
  b = config.student.batch_size
  steps = train.num_requests // b
  hidden = tuple(config.student.model.hidden)
  total = 0.0
  for point in points_for(k):
    temperature, alpha = point.hparams["temperature"], point.hparams["alpha"]
    torch.manual_seed(0)
    widths = [ctx.shape[-1] + items.shape[-1], *hidden]
    layers = []
    for a, c in zip(widths, widths[1:]):
      layers += [torch.nn.Linear(a, c), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 1)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=point.hparams["learning_rate"])
    t = time.perf_counter()
    for _ in range(epochs):
      order = torch.randperm(train.num_requests, device=dev)[: steps * b].view(steps, b)
      for idx in order:
        x = torch.cat([ctx[idx][:, None, :].expand(-1, items.shape[1], -1), items[idx]], -1)
        s = model(x).squeeze(-1)
        v, e = valid[idx], exposed[idx]
        neg = torch.finfo(s.dtype).min
        log_p = torch.log_softmax(teacher[idx].masked_fill(~v, neg) / temperature, -1)
        log_q = torch.log_softmax(s.masked_fill(~v, neg) / temperature, -1)
        kd = (temperature**2 * (log_p.exp() * (log_p - log_q)).masked_fill(~v, 0).sum(-1)).mean()
        y = (label[idx] > 0).float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(s, y, reduction="none")
        gt = bce.masked_fill(~e, 0).sum() / e.sum().clamp(min=1)
        loss = alpha * kd + (1 - alpha) * gt
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev == "cuda":
      torch.cuda.synchronize()
    total += (time.perf_counter() - t) / epochs
  return total


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64])
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs (best of)")
  parser.add_argument("--torch-max-k", type=int, default=16,
                      help="larger K extrapolate PyTorch linearly from the largest measured K (say so)")
  parser.add_argument("--group-size", type=int, default=4,
                      help="sweep.group_size of the grouped layout")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  args = parser.parse_args()

  config = repo_config("quickstart")
  data = make_data()
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests)
  peak = matmul_peak()
  device = jax.devices()[0]
  machine = (f"{platform.processor() or platform.machine()}, {jax.device_count()} × "
             f"{device.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(data))
  requests_per_epoch = trainer.steps_per_epoch * config.student.batch_size
  b, g = config.student.batch_size, args.group_size

  single = time_jax(trainer, 1, data, args.epochs, b, g)["train_s"]
  torch_per_point, torch_from = None, None  # from the largest K measured so far
  rows = []
  for k in args.ks:
    t = time_jax(trainer, k, data, args.epochs, b, g)
    sequential = k * single  # (a): K single-point programs, one after another
    if k <= args.torch_max_k or torch_per_point is None:
      torch_time, torch_note = torch_epoch_time(data, k, 1, config), "measured"
      if torch_time is not None:
        torch_per_point, torch_from = torch_time / k, k
    else:
      torch_time = k * torch_per_point
      torch_note = f"extrapolated: K={torch_from} × {k / torch_from:g}"
    best = min(t["train_s"], t["grouped_s"])
    rows.append({
        "K": k,
        "epoch_s": t["train_s"],
        "grouped_epoch_s": t["grouped_s"],
        "group_size": g,
        "grouped_epoch_with_monitor_s": t["full_s"],
        "req_x_points_per_s": requests_per_epoch * k / best,
        "gflops": t["flops"] / best / 1e9,
        "peak_fraction": t["flops"] / best / peak,
        "temp_MiB": t["temp_MiB"],
        "grouped_temp_MiB": t["grouped_temp_MiB"],
        "state_MiB": t["state_bytes"] / 2**20,
        "data_MiB": data_bytes / 2**20,
        "sequential_jax_s": sequential,
        "speedup_vs_sequential_jax": sequential / t["train_s"],
        "grouped_speedup_vs_sequential_jax": sequential / t["grouped_s"],
        "torch_s": torch_time,
        "torch_note": torch_note,
        "speedup_vs_torch": None if torch_time is None else torch_time / t["train_s"],
        "grouped_speedup_vs_torch": None if torch_time is None else torch_time / t["grouped_s"],
    })
    print(json.dumps(rows[-1]))
  lines = [f"Machine: {machine}. Dense f32 matmul (1024²) measured in the same run: "
           f"{peak / 1e9:.0f} GFLOP/s. Best of {args.epochs} timed epochs after a warm-up; "
           f"one epoch = {trainer.steps_per_epoch} steps × {config.student.batch_size} "
           "requests. \"train\" columns time the training steps only (the work the PyTorch "
           f"loop does): all K points in one vmap, or vmapped {g} at a time and scanned over "
           f"the groups (`sweep.group_size={g}`). \"+ monitor\" is a whole prerank-jax "
           "epoch in groups: the steps plus the per-epoch validation pass (full-list NDCG "
           "and teacher recall on 500 requests per point). Throughput, GFLOP/s and % of "
           "peak are for the faster of the two training layouts.", "",
           f"| K | train s/epoch, one vmap | train s/epoch, groups of {g} | + monitor "
           "| requests×points/s | GFLOP/s | % of matmul peak | temp MiB, one vmap / groups "
           "| state MiB | data MiB | K sequential runs, s/epoch | speed-up, one vmap / groups "
           "| PyTorch K runs, s/epoch | vs PyTorch, one vmap / groups |",
           "|" + "---|" * 14]
  for r in rows:
    torch_cell = "n/a" if r["torch_s"] is None else f"{r['torch_s']:.2f} ({r['torch_note']})"
    vs_torch = ("n/a" if r["speedup_vs_torch"] is None else
                f"{r['speedup_vs_torch']:.2f}× / {r['grouped_speedup_vs_torch']:.2f}×")
    lines.append(
        f"| {r['K']} | {r['epoch_s']:.3f} | {r['grouped_epoch_s']:.3f} "
        f"| {r['grouped_epoch_with_monitor_s']:.3f} "
        f"| {r['req_x_points_per_s']:.0f} | {r['gflops']:.1f} "
        f"| {100 * r['peak_fraction']:.0f}% | {r['temp_MiB']:.1f} / {r['grouped_temp_MiB']:.1f} "
        f"| {r['state_MiB']:.2f} | {r['data_MiB']:.1f} | {r['sequential_jax_s']:.2f} "
        f"| {r['speedup_vs_sequential_jax']:.2f}× / "
        f"{r['grouped_speedup_vs_sequential_jax']:.2f}× | {torch_cell} | {vs_torch} |")
  text = "\n".join(lines) + "\n"
  print(text)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = jax.default_backend()
  (out / f"sweep_throughput_{tag}.md").write_text(text)
  (out / f"sweep_throughput_{tag}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()
