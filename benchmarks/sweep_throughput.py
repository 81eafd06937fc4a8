"""Sweep throughput: one compiled program for K points against the PyTorch a user would pick.

Two shapes, each with the quickstart's student loss (Hinton listwise KD mixed with BCE on
the exposed labels, α = 0.9, Adam at 3e-3, K temperatures from 0.5 to 8):

  - ``quickstart``: the "small" simulator (2,000 train requests, lists of up to N = 100
    candidates, 16 student features), batch 32 requests, MLP 64-32; K = 16 is the target.
  - ``realistic``: 512 train requests of N = 400 candidates (same features), batch 64
    requests, MLP 256-128; K = 8 is the target.

For each K it measures, in one process, every side warmed up (one untimed epoch) and timed
over the same ``--epochs`` epochs (the median is reported):

  - prerank-jax, the training steps of one epoch (``Trainer.train_epoch``: the work the
    PyTorch loops do) with all K points in one vmap and vmapped ``g`` at a time and
    scanned over the groups (``sweep.group_size=g``), and a whole prerank-jax epoch in the
    best layout (steps plus the per-epoch validation monitor);
  - prerank-jax, K single-point runs one after another (measured, each run its own state);
  - PyTorch eager: K runs one after another, each its own ``nn.Sequential`` and Adam;
  - PyTorch ``torch.func``: the K models' parameters stacked (``stack_module_state``), one
    ``vmap(grad_and_value(functional_call))`` per step over the K points, one Adam over the
    stacked parameters (Adam is elementwise, so this is K independent Adams). Every point
    sees the same batch of requests per step (the cheapest data path PyTorch can take;
    prerank-jax gives each point its own order);
  - achieved FLOP/s (XLA's cost analysis of the compiled step × steps / wall time) as a
    fraction of this machine's dense f32 matmul FLOP/s (1024², measured in the same run),
    and the compiled programs' temporaries.

The teacher scores are a fixed noisy copy of the true relevance: training a teacher is not
what is measured. PyTorch is optional (``pip install -e '.[bench]'``); without it the
PyTorch columns are empty. Run:

  python benchmarks/sweep_throughput.py [--shapes quickstart realistic] [--ks 16]
      [--epochs 3] [--group-sizes 4] [--torch-threads 1 2] [--out benchmarks/results]

Expected runtime on a 2-core CPU: 26 minutes with PyTorch, both shapes, default Ks, under a
load average of 10-15 (the recorded run); a quiet machine should need a fraction of that.
On a GPU (``benchmarks/accelerator.sh``) JAX and PyTorch both run on the chip.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import feature_sizes
from prerank_jax.config_files import repo_config
from prerank_jax.data.simulator import PRESETS, simulate
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, in_groups, stack_points

ROOT = Path(__file__).resolve().parent.parent

SHAPES: dict[str, dict[str, Any]] = {
    "quickstart": dict(data=dict(PRESETS["small"]), batch_size=32, hidden=(64, 32),
                       ks=(16,)),
    "realistic": dict(data=dict(PRESETS["small"], num_requests=512, num_eval_requests=128,
                                list_size=400, min_list_size=400, num_exposed=20,
                                num_items=20000),
                      batch_size=64, hidden=(256, 128), ks=(8,)),
}


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
  """Dense f32 matmul FLOP/s of this machine, measured with XLA (best of 3 bursts)."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = 0.0
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(repeats):
      out = f(a)
    out.block_until_ready()
    best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t))
  return best


def make_data(params: dict, seed: int = 0) -> SweepData:
  splits = simulate(params, seed=seed)
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


def _median_epoch(run_epoch: Callable[[], None], epochs: int) -> float:
  """One untimed warm-up epoch, then the median wall time of ``epochs`` timed ones."""
  run_epoch()
  times = []
  for _ in range(epochs):
    t = time.perf_counter()
    run_epoch()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def training_epoch(trainer, group_size: int = 0):
  """One epoch of training steps only (``Trainer.train_epoch``), vmapped over points,
  ``group_size`` at a time (:func:`in_groups`; 0 = all in one vmap)."""
  return jax.jit(in_groups(jax.vmap(trainer.train_epoch, in_axes=(0, 0, None)), group_size))


def time_jax(trainer, k: int, data: SweepData, epochs: int, batch_size: int,
             group_sizes: list[int]) -> dict:
  """Median epoch times of every layout, the training FLOPs and the temporaries.

  ``layouts`` maps ``g`` (0 = one vmap) to seconds per epoch; ``full_s`` is a whole
  prerank-jax epoch (``run_chunk``: steps plus the validation monitor) in the fastest
  layout. XLA's cost analysis counts a loop body once, so the epoch's FLOPs are
  steps × (FLOPs of one compiled vmapped step).
  """
  hparams, rngs = stack_points(points_for(k))
  init = compile_sweep(trainer).init
  out: dict[str, Any] = {"layouts": {}, "temp_MiB": {}}
  for g in [0] + [g for g in group_sizes if 0 < g < k and k % g == 0]:
    exe = training_epoch(trainer, g).lower(init(hparams, rngs), hparams, data).compile()
    out["temp_MiB"][g] = exe.memory_analysis().temp_size_in_bytes / 2**20
    box = [init(hparams, rngs)]

    def run(exe=exe, box=box):
      box[0], _ = exe(box[0], hparams, data)
      jax.block_until_ready(box[0])

    out["layouts"][g] = _median_epoch(run, epochs)
    log(f"K={k} group_size={g}: {out['layouts'][g]:.3f} s/epoch")
  best_g = min(out["layouts"], key=out["layouts"].get)
  full = compile_sweep(trainer, group_size=best_g).run_chunk
  box = [init(hparams, rngs)]

  def run_full():
    box[0], _ = full(box[0], hparams, data)  # donates its state
    jax.block_until_ready(box[0])

  out["full_s"] = _median_epoch(run_full, epochs)
  out["best_group_size"] = best_g
  state = init(hparams, rngs)
  batch = data.train.take(slice(0, batch_size))
  step = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, 0))).lower(state, batch, hparams)
  out["flops"] = _flops(step.compile()) * trainer.steps_per_epoch
  out["state_bytes"] = sum(x.nbytes for x in jax.tree.leaves(state))
  return out


def time_jax_sequential(trainer, k: int, data: SweepData, epochs: int) -> float:
  """K single-point prerank-jax runs one after another: seconds for one epoch of all K."""
  init = compile_sweep(trainer).init
  exe = training_epoch(trainer)
  states = []
  for p in points_for(k):
    hparams, rngs = stack_points([p])
    states.append([init(hparams, rngs), hparams])

  def run():
    for box in states:
      box[0], _ = exe(box[0], box[1], data)
      jax.block_until_ready(box[0])

  return _median_epoch(run, epochs)


class TorchBaselines:
  """The same model, loss and optimizer in PyTorch, on the device JAX uses."""

  def __init__(self, data: SweepData, hidden: tuple[int, ...], batch_size: int):
    import torch
    self.torch = torch
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    self.dev = "cuda" if gpu else "cpu"
    if gpu:  # XLA's default f32 matmuls on a GPU use TF32; give PyTorch the same
      torch.set_float32_matmul_precision("high")
    train = data.train
    put = lambda x: torch.from_numpy(np.array(x)).to(self.dev)
    self.ctx, self.items = put(train.context), put(train.items)
    self.label = (put(train.label) > 0).float()
    self.exposed, self.valid = put(train.exposed & train.valid), put(train.valid)
    self.teacher = put(train.teacher_scores[..., 0])
    self.requests = train.num_requests
    self.b = batch_size
    self.steps = self.requests // batch_size
    self.widths = [self.ctx.shape[-1] + self.items.shape[-1], *hidden]

  def _model(self, seed: int):
    torch = self.torch
    torch.manual_seed(seed)
    layers = []
    for a, c in zip(self.widths, self.widths[1:]):
      layers += [torch.nn.Linear(a, c), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(self.widths[-1], 1)).to(self.dev)

  def _loss(self, s, idx, temperature, alpha):
    torch = self.torch
    v, e = self.valid[idx], self.exposed[idx]
    neg = torch.finfo(s.dtype).min
    log_p = torch.log_softmax(self.teacher[idx].masked_fill(~v, neg) / temperature, -1)
    log_q = torch.log_softmax(s.masked_fill(~v, neg) / temperature, -1)
    kd = (temperature**2 * (log_p.exp() * (log_p - log_q)).masked_fill(~v, 0).sum(-1)).mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(s, self.label[idx],
                                                               reduction="none")
    gt = bce.masked_fill(~e, 0).sum() / e.sum().clamp(min=1)
    return alpha * kd + (1 - alpha) * gt

  def _inputs(self, idx):
    n = self.items.shape[1]
    return self.torch.cat([self.ctx[idx][:, None, :].expand(-1, n, -1), self.items[idx]], -1)

  def _orders(self):
    perm = self.torch.randperm(self.requests, device=self.dev)
    return perm[: self.steps * self.b].view(self.steps, self.b)

  def _sync(self):
    if self.dev == "cuda":
      self.torch.cuda.synchronize()

  def eager(self, k: int, epochs: int) -> float:
    """K eager runs one after another; seconds for one epoch of all K (median)."""
    runs = []
    for i, point in enumerate(points_for(k)):
      model = self._model(i)
      runs.append((model, self.torch.optim.Adam(model.parameters(),
                                                lr=point.hparams["learning_rate"]),
                   point.hparams["temperature"], point.hparams["alpha"]))

    def run():
      for model, opt, temperature, alpha in runs:
        for idx in self._orders():
          loss = self._loss(model(self._inputs(idx)).squeeze(-1), idx, temperature, alpha)
          opt.zero_grad()
          loss.backward()
          opt.step()
        self._sync()

    return _median_epoch(run, epochs)

  def func(self, k: int, epochs: int) -> float:
    """``torch.func`` ensembling of the K points; seconds per epoch (median)."""
    torch = self.torch
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap
    points = points_for(k)
    lrs = {p.hparams["learning_rate"] for p in points}
    assert len(lrs) == 1, "one Adam over stacked parameters needs one learning rate"
    params, buffers = stack_module_state([self._model(i) for i in range(k)])
    params = {n: p.detach() for n, p in params.items()}
    base = copy.deepcopy(self._model(0)).to("meta")
    temps = torch.tensor([p.hparams["temperature"] for p in points], device=self.dev)
    alphas = torch.tensor([p.hparams["alpha"] for p in points], device=self.dev)

    def loss_one(p, bufs, temperature, alpha, x, idx):
      s = functional_call(base, (p, bufs), (x,)).squeeze(-1)
      return self._loss(s, idx, temperature, alpha)

    step = vmap(grad_and_value(loss_one), in_dims=(0, 0, 0, 0, None, None))
    opt = torch.optim.Adam(list(params.values()), lr=lrs.pop())

    def run():
      for idx in self._orders():
        grads, _ = step(params, buffers, temps, alphas, self._inputs(idx), idx)
        for name, p in params.items():
          p.grad = grads[name]
        opt.step()
      self._sync()

    return _median_epoch(run, epochs)


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cpu_count() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def torch_baselines(data, hidden, batch_size) -> TorchBaselines | None:
  try:
    import torch  # noqa: F401
  except ImportError:
    return None
  return TorchBaselines(data, hidden, batch_size)


def run_shape(name: str, ks: list[int], epochs: int, group_sizes: list[int],
              peak: float, skip_torch: bool, torch_threads: list[int]) -> list[dict]:
  spec = SHAPES[name]
  config = repo_config("quickstart", "full")
  config.student.batch_size = spec["batch_size"]
  config.student.model.hidden = tuple(spec["hidden"])
  data = make_data(spec["data"])
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests)
  data = jax.device_put(data)
  torch_side = None if skip_torch else torch_baselines(data, spec["hidden"],
                                                       spec["batch_size"])
  data_bytes = sum(x.nbytes for x in jax.tree.leaves(data))
  requests_per_epoch = trainer.steps_per_epoch * spec["batch_size"]
  rows = []
  for k in ks:
    t = time_jax(trainer, k, data, epochs, spec["batch_size"], group_sizes)
    best = min(t["layouts"].values())
    row = {
        "shape": name, "K": k, "list_size": int(data.train.label.shape[-1]),
        "batch_size": spec["batch_size"], "hidden": list(spec["hidden"]),
        "train_requests": int(data.train.num_requests),
        "steps_per_epoch": trainer.steps_per_epoch,
        "jax_epoch_s": {str(g): s for g, s in t["layouts"].items()},
        "jax_best_s": best, "jax_best_group_size": t["best_group_size"],
        "jax_epoch_with_monitor_s": t["full_s"],
        "temp_MiB": {str(g): m for g, m in t["temp_MiB"].items()},
        "req_x_points_per_s": requests_per_epoch * k / best,
        "gflops": t["flops"] / best / 1e9,
        "peak_fraction": t["flops"] / best / peak,
        "state_MiB": t["state_bytes"] / 2**20, "data_MiB": data_bytes / 2**20,
        "sequential_jax_s": time_jax_sequential(trainer, k, data, epochs),
        "torch_eager_s": None, "torch_func_s": None,
    }
    log(f"K={k} sequential prerank-jax: {row['sequential_jax_s']:.3f} s/epoch")
    if torch_side is not None:
      # Each baseline at every intra-op thread count asked for; the fastest counts.
      for kind in ("eager", "func"):
        times = {}
        for threads in torch_threads:
          torch_side.torch.set_num_threads(threads)
          times[threads] = getattr(torch_side, kind)(k, epochs)
          log(f"K={k} PyTorch {kind}, {threads} threads: {times[threads]:.3f} s/epoch")
        best_threads = min(times, key=times.get)
        row[f"torch_{kind}_s"] = times[best_threads]
        row[f"torch_{kind}_threads"] = best_threads
        row[f"torch_{kind}_s_by_threads"] = {str(t): v for t, v in times.items()}
      best_torch = min(row["torch_eager_s"], row["torch_func_s"])
      row["best_torch_s"] = best_torch
      row["speedup_vs_best_torch"] = best_torch / best
    row["speedup_vs_sequential_jax"] = row["sequential_jax_s"] / best
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def table(rows: list[dict]) -> str:
  lines = ["| shape | K | prerank-jax s/epoch, one vmap | best groups (g) | + monitor "
           "| GFLOP/s | % of matmul peak | temp MiB, one vmap / best | K sequential "
           "prerank-jax runs | PyTorch eager, K runs | PyTorch torch.func | vs best "
           "PyTorch | vs sequential |", "|" + "---|" * 13]
  t = lambda r, kind: ("n/a" if r[f"torch_{kind}_s"] is None else
                       f"{r[f'torch_{kind}_s']:.3f} ({r[f'torch_{kind}_threads']} thr.)")
  for r in rows:
    g = r["jax_best_group_size"]
    grouped = [(int(k), v) for k, v in r["jax_epoch_s"].items() if k != "0"]
    gcell = ("—" if not grouped else
             f"{min(v for _, v in grouped):.3f} ({min(grouped, key=lambda kv: kv[1])[0]})")
    vs = r.get("speedup_vs_best_torch")
    lines.append(
        f"| {r['shape']} (N={r['list_size']}, batch {r['batch_size']}, MLP "
        f"{'-'.join(map(str, r['hidden']))}) | {r['K']} | {r['jax_epoch_s']['0']:.3f} "
        f"| {gcell} | {r['jax_epoch_with_monitor_s']:.3f} | {r['gflops']:.1f} "
        f"| {100 * r['peak_fraction']:.0f}% | {r['temp_MiB']['0']:.1f} / "
        f"{r['temp_MiB'][str(g)]:.1f} | {r['sequential_jax_s']:.3f} "
        f"| {t(r, 'eager')} | {t(r, 'func')} "
        f"| {'n/a' if vs is None else f'{vs:.2f}×'} | {r['speedup_vs_sequential_jax']:.2f}× |")
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
  parser.add_argument("--ks", type=int, nargs="+", default=None,
                      help="sweep sizes for every shape (default: each shape's own)")
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs (median)")
  parser.add_argument("--group-sizes", type=int, nargs="+", default=[4],
                      help="sweep.group_size layouts tried besides one vmap")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--torch-threads", type=int, nargs="+", default=None,
                      help="PyTorch intra-op thread counts tried (default: 1 and all cores; "
                           "on a GPU only the default)")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
  parser.add_argument("--from-results", metavar="JSON",
                      help="print the report of a results file and exit (runs nothing)")
  args = parser.parse_args()
  if args.from_results:
    results = json.loads(Path(args.from_results).read_text())
    print(report(results["meta"], results["rows"]), end="")
    return

  peak = matmul_peak()
  device = jax.devices()[0]
  try:
    import torch
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  meta = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
      "machine": f"{platform.processor() or platform.machine()}, {_cpu_count()} cores, "
                 f"{jax.device_count()} × {device.device_kind} ({jax.default_backend()})",
      "jax": jax.__version__, "torch": torch_version,
      "matmul_peak_gflops": peak / 1e9, "epochs_timed": args.epochs,
      "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
  }
  torch_threads = args.torch_threads or sorted({1, _cpu_count()})
  meta["torch_threads_tried"] = torch_threads
  meta["load_average_at_start"] = list(os.getloadavg())
  print(json.dumps(meta), flush=True)
  rows = []
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tag = jax.default_backend()
  for name in args.shapes:
    rows += run_shape(name, args.ks or list(SHAPES[name]["ks"]), args.epochs,
                      args.group_sizes, peak, args.no_torch, torch_threads)
    # Written after every shape, so a run stopped part-way keeps what it measured.
    meta["load_average_at_end"] = list(os.getloadavg())
    text = report(meta, rows)
    (out / f"sweep_throughput_{tag}.md").write_text(text)
    (out / f"sweep_throughput_{tag}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1))
  print(text)


def report(meta: dict, rows: list[dict]) -> str:
  """The README's text and table, from a results JSON's ``meta`` and ``rows``."""
  # A run whose table was rebuilt from its log has no end-of-run load: "not recorded".
  load = lambda key: (", ".join(f"{x:.1f}" for x in meta[key]) if key in meta
                      else "not recorded")
  return (f"Machine: {meta['machine']}; jax {meta['jax']}, torch {meta['torch']}; "
          f"{meta['date']}; load average (1, 5, 15 min) {load('load_average_at_start')} "
          f"at the start, {load('load_average_at_end')} at the end. Dense f32 matmul "
          f"(1024²) measured in the same run: {meta['matmul_peak_gflops']:.0f} GFLOP/s. "
          f"Seconds per epoch, the median of {meta['epochs_timed']} timed epochs after a "
          "warm-up epoch, every side; PyTorch at the faster of "
          f"{meta['torch_threads_tried']} intra-op threads; XLA_FLAGS="
          f"`{meta.get('XLA_FLAGS') or '(unset)'}`. GFLOP/s and % of peak are for "
          "the fastest prerank-jax layout.\n\n" + table(rows))


if __name__ == "__main__":
  main()
