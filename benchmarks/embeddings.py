"""Embedding tables across sweep points: DSSM step time and peak memory for K points.

The shape of issue 21: the ``dssm`` student (towers 128-64-32, d = 16) over a user table and
an item table of ``rows`` rows each (the behaviour sequence, 20 slots, shares the item
table), 8 context and 8 item float features, lists of N = 100, batches of 32 requests,
the quickstart's student loss (Hinton listwise KD + BCE, α = 0.9, Adam at 3e-3). For each
``rows`` × K it measures, each in a fresh process (so peak RSS is that configuration's):

  - prerank-jax: one jitted, vmapped training step of all K points (``Trainer.step``, the
    state donated), median seconds per step after warm-up, and the process's peak RSS;
  - the tables' Adam update alone, dense (optax over every row, what prerank-jax runs)
    against a row-sparse ("lazy") Adam that gathers, updates and scatters only the rows the
    step looked up, both vmapped over K; ``step_sparse_est_s`` = the measured step − the
    dense table update + the sparse one (an estimate: the sparse update is not wired into
    the trainer);
  - PyTorch eager, the same model (``nn.Embedding`` + ``F.embedding_bag`` mean pooling of
    the behaviour, dense Adam), one run's step time × K (K sequential runs) and one run's
    peak RSS.

Run (the full grid; ``--ks 1 4 --rows 100000`` is the short version):

  python benchmarks/embeddings.py [--ks 1 4 16] [--rows 100000 1000000] [--steps 10]
      [--no-torch] [--note "..."] [--out benchmarks/results/embeddings.json]

Expected runtime: about 2-3 minutes for the short version on the shared 2-core CPU; the
full grid (K = 16 with 10^6-row tables: 16 × 2 tables × 10^6 × 16 floats × 3 = 6 GiB of
state) several times more. PyTorch is optional (``pip install -e '.[bench]'``).
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


def run_jax(k: int, rows: int, steps: int) -> dict:
  """One configuration of prerank-jax (in this process)."""
  import jax
  import jax.numpy as jnp
  import optax

  from prerank_jax.batch import Batch, feature_sizes
  from prerank_jax.config_files import repo_config
  from prerank_jax.models import model_config
  from prerank_jax.train import make_train
  from prerank_jax.train.sweep import grid_points, stack_points

  config = repo_config("quickstart")
  config.student.model = model_config("dssm", id_tower=TOWER, id_embed_dim=D,
                                      context_vocab=(rows,), item_vocab=(rows,))
  config.student.batch_size = B
  batch = Batch(**_data(rows))
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(batch),
                       num_train_requests=B)
  temps = tuple(float(t) for t in np.geomspace(0.5, 8.0, k))
  hparams, rngs = stack_points(grid_points(
      {"temperature": temps, "alpha": (0.9,), "learning_rate": (3e-3,)}, seed=0))
  state = jax.jit(jax.vmap(trainer.init))(hparams, rngs)
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

  # The tables' Adam update alone: dense over every row vs row-sparse over the looked-up
  # rows (the item table's rows of one step: B·N candidates + B·L behaviour slots).
  touched = np.unique(np.concatenate([batch.item_ids.reshape(-1),
                                      batch.sequence_ids.reshape(-1)]))
  idx = jnp.asarray(touched)
  table = jnp.zeros((k, rows, D), jnp.float32)
  grad_rows = jnp.ones((k, len(touched), D), jnp.float32)
  tx = optax.adam(3e-3)
  opt = jax.vmap(tx.init)(table)

  def dense(table, opt):
    grad = jnp.zeros_like(table).at[:, idx].add(grad_rows)   # the dense gradient
    updates, opt = jax.vmap(tx.update)(grad, opt, table)
    return optax.apply_updates(table, updates), opt

  def sparse(table, m, v, count):
    count = count + 1
    mr = 0.9 * m[:, idx] + 0.1 * grad_rows
    vr = 0.999 * v[:, idx] + 0.001 * grad_rows**2
    step_size = 3e-3 * jnp.sqrt(1 - 0.999**count) / (1 - 0.9**count)
    new = table[:, idx] - step_size * mr / (jnp.sqrt(vr) + 1e-8)
    return table.at[:, idx].set(new), m.at[:, idx].set(mr), v.at[:, idx].set(vr), count

  dense_j = jax.jit(dense, donate_argnums=(0, 1))
  sparse_j = jax.jit(sparse, donate_argnums=(0, 1, 2))
  box = {"d": (table, opt)}

  def run_dense():
    box["d"] = dense_j(*box["d"])
    jax.block_until_ready(box["d"][0])

  run_dense()
  dense_s = _time(run_dense, steps)
  del box
  sbox = {"s": (jnp.zeros((k, rows, D)), jnp.zeros((k, rows, D)), jnp.zeros((k, rows, D)),
                jnp.zeros((), jnp.float32))}

  def run_sparse():
    sbox["s"] = sparse_j(*sbox["s"])
    jax.block_until_ready(sbox["s"][0])

  run_sparse()
  sparse_s = _time(run_sparse, steps)
  # Both tables (user and item) pay the update; the user table's touched rows are fewer.
  return {"side": "prerank-jax", "k": k, "rows": rows, "params_per_point": params,
          "step_s": step_s, "peak_rss_gib": _peak_rss_gib(),
          "table_update_dense_s": dense_s, "table_update_sparse_s": sparse_s,
          "touched_rows": int(len(touched)),
          "step_sparse_est_s": step_s - 2 * dense_s + 2 * sparse_s}


def run_torch(k: int, rows: int, steps: int) -> dict:
  """PyTorch eager: one run's step (× K for K sequential runs), one run's peak RSS."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  torch.manual_seed(0)
  data = {name: torch.from_numpy(v) for name, v in _data(rows).items()}

  def tower(n_in):
    widths = [n_in, *TOWER]
    layers = []
    for a, b in zip(widths, widths[1:]):
      layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])

  class DSSM(nn.Module):
    def __init__(self):
      super().__init__()
      self.user = nn.Embedding(rows, D)
      self.item = nn.Embedding(rows, D)
      self.user_tower = tower(FLOATS + 2 * D)
      self.item_tower = tower(FLOATS + D)

    def forward(self, d):
      behaviour = F.embedding_bag(d["sequence_ids"][..., 0].long(), self.item.weight,
                                  mode="mean", padding_idx=0)      # nn.EmbeddingBag
      u = self.user_tower(torch.cat([d["context"], self.user(d["context_ids"][:, 0].long()),
                                     behaviour], -1))
      v = self.item_tower(torch.cat([d["items"], self.item(d["item_ids"][..., 0].long())],
                                    -1))
      return torch.einsum("bnd,bd->bn", v, u)

  model = DSSM()
  opt = torch.optim.Adam(model.parameters(), lr=3e-3)
  temperature, alpha = 2.0, 0.9

  def one():
    opt.zero_grad()
    s = model(data)
    kd = -(torch.softmax(data["teacher_scores"][..., 0] / temperature, -1)
           * torch.log_softmax(s / temperature, -1)).sum(-1).mean() * temperature**2
    gt = F.binary_cross_entropy_with_logits(s[data["exposed"]],
                                            data["label"][data["exposed"]])
    (alpha * kd + (1 - alpha) * gt).backward()
    opt.step()

  for _ in range(2):
    one()
  step_s = _time(one, steps)
  return {"side": "pytorch eager (K sequential runs)", "k": k, "rows": rows,
          "step_s": step_s * k, "one_run_step_s": step_s, "peak_rss_gib": _peak_rss_gib(),
          "torch_threads": torch.get_num_threads()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
  parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--no-torch", action="store_true")
  parser.add_argument("--note", default="")
  parser.add_argument("--out", type=Path, default=Path("benchmarks/results/embeddings.json"))
  parser.add_argument("--one", nargs=3, metavar=("SIDE", "K", "ROWS"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    side, k, rows = args.one[0], int(args.one[1]), int(args.one[2])
    out = (run_jax if side == "jax" else run_torch)(k, rows, args.steps)
    print("RESULT " + json.dumps(out), flush=True)
    return
  results = []
  for rows in args.rows:
    for k in args.ks:
      sides = ["jax"] + ([] if args.no_torch else ["torch"])
      for side in sides:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", side, str(k), str(rows),
                               "--steps", str(args.steps)], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
          row = {"side": side, "k": k, "rows": rows, "error": proc.stderr[-2000:]}
        else:
          row = json.loads(line[0][len("RESULT "):])
        row["wall_s"] = time.perf_counter() - t
        print(json.dumps(row), flush=True)
        results.append(row)
  load = os.getloadavg()
  record = {"benchmark": "benchmarks/embeddings.py", "argv": sys.argv[1:],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "load_average_after": load},
            "note": args.note,
            "shape": {"batch_requests": B, "list_size": N, "sequence_length": L,
                      "embed_dim": D, "tower": TOWER, "float_features": FLOATS,
                      "tables": "user and item, `rows` each; behaviour shares the item table"},
            "results": results}
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(json.dumps(record, indent=1) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
