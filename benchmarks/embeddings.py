"""Embedding tables across sweep points: DSSM step time and peak memory for K points.

The shape of issue 21: the ``dssm`` student (towers 128-64-32, d = 16) over a user table and
an item table of ``rows`` rows each (the behaviour sequence, 20 slots, shares the item
table), 8 context and 8 item float features, lists of N = 100, batches of 32 requests,
the quickstart's student loss (Hinton listwise KD + BCE, α = 0.9, Adam at 3e-3). Each
configuration runs in a fresh process, so its peak RSS is its own:

  - prerank-jax, for ``rows`` × K × update: one jitted, vmapped training step of all K
    points (``Trainer.step``, the state donated) with ``student.embedding_update`` =
    ``dense`` (optax Adam over every row) or ``sparse`` (lazy Adam over the rows looked
    up, :mod:`prerank_jax.train.sparse_embeddings`); median seconds per step after two
    warm-up steps, and the process's peak RSS;
  - PyTorch eager, the same model (``nn.Embedding`` + ``F.embedding_bag`` mean pooling of
    the behaviour), ``dense`` (Adam) and ``sparse`` (sparse gradients, ``SparseAdam`` on
    the tables + Adam on the towers): K runs one after another, each warmed up and timed
    over the same steps, their measured step times summed, and the process's peak RSS
    (one model alive at a time). Torch runs in ``--torch-python`` (default: this interpreter); when
    torch is absent there, the record says so and has no PyTorch rows.

Run (the full grid; ``--ks 1 4 --rows 100000`` is the short version):

  python benchmarks/embeddings.py [--ks 1 4 16] [--rows 100000 1000000]
      [--updates dense sparse] [--steps 5] [--no-torch] [--torch-python /tmp/torchenv/bin/python]
      [--note "..."] [--out benchmarks/results/embeddings.json]

Expected runtime: the full grid took about 25 minutes on the shared 2-core CPU under load
(K = 16 with 10^6-row tables: 16 × 2 tables × 10^6 × 16 floats × 3 = 6 GiB of state). torch
is not a dependency of the package: install a CPU build into a separate venv
(``python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

B, N, L, D, FLOATS = 32, 100, 20, 16, 8
TOWER = (128, 64, 32)


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # KiB on Linux


def _data(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  valid = np.ones((B, N), bool)
  exposed = np.zeros((B, N), bool)
  exposed[:, :10] = True
  return dict(
      context=rng.standard_normal((B, FLOATS), np.float32),
      items=rng.standard_normal((B, N, FLOATS), np.float32),
      cross=np.zeros((B, N, 1), np.float32),
      label=(exposed & (rng.random((B, N)) < 0.2)).astype(np.float32),
      exposed=exposed, valid=valid,
      teacher_scores=rng.standard_normal((B, N, 1), np.float32),
      context_ids=rng.integers(1, rows, (B, 1)).astype(np.int32),
      item_ids=rng.integers(1, rows, (B, N, 1)).astype(np.int32),
      sequence_ids=rng.integers(1, rows, (B, L, 1)).astype(np.int32),
      sequence_mask=np.ones((B, L), bool))


def _time(fn, steps: int) -> float:
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def run_jax(k: int, rows: int, steps: int, update: str) -> dict:
  """One configuration of prerank-jax (in this process): the trainer's jitted, vmapped
  step of all K points with ``student.embedding_update = update``, the state donated."""
  import jax

  from prerank_jax.batch import Batch, feature_sizes
  from prerank_jax.config_files import repo_config
  from prerank_jax.models import model_config
  from prerank_jax.train import make_train
  from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points

  config = repo_config("quickstart", "full")
  config.student.model = model_config("dssm", id_tower=TOWER, id_embed_dim=D,
                                      context_vocab=(rows,), item_vocab=(rows,))
  config.student.batch_size = B
  config.student.embedding_update = update
  batch = Batch(**_data(rows))
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(batch),
                       num_train_requests=B)
  temps = tuple(float(t) for t in np.geomspace(0.5, 8.0, k))
  hparams, rngs = stack_points(grid_points(
      {"temperature": temps, "alpha": (0.9,), "learning_rate": (3e-3,)}, seed=0))
  # The runner's initialisation: points in groups of one on CPU (compile_sweep).
  state = compile_sweep(trainer, group_size=1).init(hparams, rngs)
  step = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, 0)), donate_argnums=0)
  batch = jax.device_put(batch)
  holder = {"state": state}

  def one():
    holder["state"], loss = step(holder["state"], batch, hparams)
    jax.block_until_ready(loss)

  for _ in range(2):
    one()
  step_s = _time(one, steps)
  params = sum(int(x.size) for x in jax.tree.leaves(holder["state"].params)) // k
  touched = np.unique(np.concatenate([batch.item_ids.reshape(-1),
                                      batch.sequence_ids.reshape(-1)]))
  return {"side": "prerank-jax", "update": update, "k": k, "rows": rows,
          "params_per_point": params, "step_s": step_s, "peak_rss_gib": _peak_rss_gib(),
          "item_rows_touched_per_step": int(len(touched))}


def run_torch(k: int, rows: int, steps: int, update: str) -> dict:
  """PyTorch eager, K sequential runs, each measured: K models trained one after another
  (each its own seed, warmed up, then timed), the step time is the sum of the K runs'
  measured medians (never one run's time multiplied by K); peak RSS of the process (one
  model alive at a time).

  ``update="dense"``: ``nn.Embedding`` tables and ``torch.optim.Adam`` over everything;
  ``"sparse"``: sparse embedding gradients (``sparse=True``) with ``torch.optim.SparseAdam``
  on the tables and Adam on the towers, the eager baseline a user would pick for large
  tables.
  """
  import torch
  import torch.nn.functional as F
  from torch import nn

  data = {name: torch.from_numpy(v) for name, v in _data(rows).items()}
  sparse = update == "sparse"

  def tower(n_in):
    widths = [n_in, *TOWER]
    layers = []
    for a, b in zip(widths, widths[1:]):
      layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])

  class DSSM(nn.Module):
    def __init__(self):
      super().__init__()
      self.user = nn.Embedding(rows, D, sparse=sparse)
      self.item = nn.Embedding(rows, D, sparse=sparse)
      self.user_tower = tower(FLOATS + 2 * D)
      self.item_tower = tower(FLOATS + D)

    def forward(self, d):
      behaviour = F.embedding_bag(d["sequence_ids"][..., 0].long(), self.item.weight,
                                  mode="mean", padding_idx=0, sparse=sparse)  # EmbeddingBag
      u = self.user_tower(torch.cat([d["context"], self.user(d["context_ids"][:, 0].long()),
                                     behaviour], -1))
      v = self.item_tower(torch.cat([d["items"], self.item(d["item_ids"][..., 0].long())],
                                    -1))
      return torch.einsum("bnd,bd->bn", v, u)

  temperature, alpha = 2.0, 0.9
  run_steps = []
  for run in range(k):
    torch.manual_seed(run)
    run_steps.append(_torch_run(torch, F, DSSM(), data, sparse, temperature, alpha, steps))
  step_s = float(sum(run_steps))
  return {"side": "pytorch eager (K sequential runs, each measured)", "update": update,
          "k": k, "rows": rows, "step_s": step_s, "run_step_s": run_steps,
          "peak_rss_gib": _peak_rss_gib(), "torch": torch.__version__,
          "torch_threads": torch.get_num_threads()}


def _torch_run(torch, F, model, data, sparse, temperature, alpha, steps) -> float:
  """One PyTorch training run: 2 warm-up steps, then the median of ``steps`` timed ones."""
  tables = [model.user.weight, model.item.weight]
  others = [p for p in model.parameters() if all(p is not t for t in tables)]
  if sparse:
    opts = [torch.optim.SparseAdam(tables, lr=3e-3), torch.optim.Adam(others, lr=3e-3)]
  else:
    opts = [torch.optim.Adam(model.parameters(), lr=3e-3)]

  def one():
    for opt in opts:
      opt.zero_grad()
    s = model(data)
    kd = -(torch.softmax(data["teacher_scores"][..., 0] / temperature, -1)
           * torch.log_softmax(s / temperature, -1)).sum(-1).mean() * temperature**2
    gt = F.binary_cross_entropy_with_logits(s[data["exposed"]],
                                            data["label"][data["exposed"]])
    (alpha * kd + (1 - alpha) * gt).backward()
    for opt in opts:
      opt.step()

  for _ in range(2):
    one()
  return _time(one, steps)


def _subprocess(python: str, side: str, update: str, k: int, rows: int, steps: int) -> dict:
  """One configuration in a fresh process (so its peak RSS is its own)."""
  t = time.perf_counter()
  proc = subprocess.run([python, __file__, "--one", side, update, str(k), str(rows),
                         "--steps", str(steps)], capture_output=True, text=True,
                        cwd=Path(__file__).resolve().parents[1])
  line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
  if proc.returncode or not line:
    row = {"side": side, "update": update, "k": k, "rows": rows,
           "error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
  else:
    row = json.loads(line[0][len("RESULT "):])
  row["wall_s"] = time.perf_counter() - t
  row["load_average_after"] = os.getloadavg()
  print(json.dumps(row), flush=True)
  return row


def _has_torch(python: str) -> bool:
  return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
  parser.add_argument("--updates", nargs="+", default=["dense", "sparse"],
                      choices=["dense", "sparse"])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--jax-updates", nargs="+", choices=["dense", "sparse"],
                      help="prerank-jax's updates (default: --updates)")
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--torch-python", default=sys.executable,
                      help="a Python with torch (e.g. a separate venv); default: this one")
  parser.add_argument("--note", default="")
  parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embeddings.json"))
  parser.add_argument("--one", nargs=4, metavar=("SIDE", "UPDATE", "K", "ROWS"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    side, update, k, rows = args.one[0], args.one[1], int(args.one[2]), int(args.one[3])
    out = (run_jax if side == "jax" else run_torch)(k, rows, args.steps, update)
    print("RESULT " + json.dumps(out), flush=True)
    return
  torch_note = ""
  use_torch = not args.no_torch
  if use_torch and not _has_torch(args.torch_python):
    torch_note = f"torch is absent from {args.torch_python}: no PyTorch baseline"
    print(torch_note, flush=True)
    use_torch = False
  results = []
  started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  load_before = os.getloadavg()
  for rows in args.rows:
    for k in args.ks:
      for update in args.jax_updates or args.updates:
        results.append(_subprocess(sys.executable, "jax", update, k, rows, args.steps))
      if use_torch:  # K sequential runs, each measured, in the same run as prerank-jax's
        for update in args.updates:
          results.append(_subprocess(args.torch_python, "torch", update, k, rows, args.steps))
  record = {"benchmark": "benchmarks/embeddings.py", "argv": sys.argv[1:], "date": started,
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_average_before": load_before,
                        "load_average_after": os.getloadavg()},
            "note": " ".join(x for x in (args.note, torch_note) if x),
            "shape": {"batch_requests": B, "list_size": N, "sequence_length": L,
                      "embed_dim": D, "tower": TOWER, "float_features": FLOATS,
                      "tables": "user and item, `rows` each; behaviour shares the item table"},
            "results": results}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  tmp = args.out.with_suffix(".tmp")
  tmp.write_text(json.dumps(record, indent=1) + "\n")
  tmp.replace(args.out)   # the previous results stay until this run's exist
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
