"""Streaming input (grain) against the sweep's step rate, on the quickstart student.

The quickstart sweep (10 points: 3×3 (T, α) + gt-only; MLP 64-32 student, batch 32
requests, "small" simulator: 2,000 train requests × 100 candidates) is trained for a few
epochs three ways, in one process:

  - compute only: the jitted vmapped step on a batch already on device, repeated: the
    step rate the input has to keep up with;
  - streaming from host memory (``BatchSource``) through the grain pipeline;
  - streaming from the TFDS dataset's ArrayRecord files (``RecordSource``; the dataset
    ``prerank_simulator/small`` is prepared into a temporary directory first).

Each streaming variant runs with the grid's shared order (one seed: B requests a step,
broadcast to the points), with per-point orders (distinct seeds: P × B requests a step,
``streaming.order="device"``) and with per-point orders drawn inside a shared block of
``steps_per_call`` steps (``streaming.order="block"``: B records decoded a step, P × B
requests handed to the step).
Compute-only and streamed epochs alternate (this CPU's speed drifts by tens of percent).
Reported per variant, as medians over the rounds: wall time per step, the host time blocked
waiting for the next batch, the pipeline's time per step read alone, and the *input wait
share* ``max(0, t_stream − t_compute) / t_stream``: the part of a step's time lost to
input. Target: < 10 %.

  python benchmarks/input_pipeline.py [--rounds 5] [--threads 2] [--prefetch 4] [--workers 0]
      [--steps_per_call 8]

Expected runtime on a 2-core CPU: about 1.5 minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from prerank_jax.batch import feature_sizes
from prerank_jax.config_files import repo_config
from prerank_jax.data import simulator_tfds, streaming, tfds_base
from prerank_jax.train.host_fed import GrainFeed
from prerank_jax.host.plan import student_points
from prerank_jax.train.loop import make_train
from prerank_jax.train.sweep import stack_points


def scored(batch, seed):
  rng = np.random.default_rng(seed)
  noisy = batch.true_relevance + rng.standard_normal(batch.valid.shape).astype(np.float32)
  return batch._replace(teacher_scores=noisy[..., None].astype(np.float32))


def time_compute(feed, state, hparams, calls, steps: int) -> float:
  """Seconds for one epoch of the compiled step loop on batches already on device."""
  step = feed._steps[feed.broadcast]
  t = time.perf_counter()
  for on_device in calls:
    state, loss = step(state, on_device, hparams)
  jax.block_until_ready(loss)
  return time.perf_counter() - t


def time_stream(feed, state, hparams, steps: int) -> tuple[float, float]:
  """(wall seconds, seconds blocked in next()) for one streamed epoch."""
  step = feed._steps[feed.broadcast]
  waited, done = 0.0, 0
  t = time.perf_counter()
  while done < steps:
    t0 = time.perf_counter()
    arrays = next(feed.input)
    waited += time.perf_counter() - t0
    state, loss = step(state, feed._put(arrays), hparams)
    done += arrays["valid"].shape[0]
  jax.block_until_ready(loss)
  return time.perf_counter() - t, waited


def measure(feed, state, hparams, *, steps: int, rounds: int) -> dict:
  """Alternates compute-only and streamed rounds of ``steps`` steps (this 2-core CPU's
  speed drifts, so each streamed round is compared with the compute round next to it) and
  returns medians."""
  step = feed._steps[feed.broadcast]
  calls = [feed._put(feed.input.dataset_arrays(c))
           for c in range(feed.input.calls.calls_per_epoch)]  # epoch 0, on device
  for on_device in calls[-2:]:                             # compile both call lengths
    _, loss = step(state, on_device, hparams)
  jax.block_until_ready(loss)
  time_stream(feed, state, hparams, steps)                 # epoch 0: warm-up
  compute, wall, blocked, share = [], [], [], []
  for _ in range(rounds):
    c = time_compute(feed, state, hparams, calls, steps)
    w, b = time_stream(feed, state, hparams, steps)
    compute.append(c)
    wall.append(w)
    blocked.append(b)
    share.append(max(0.0, w - c) / w)
  median = lambda x: float(np.median(x))
  return {"compute_ms_per_step": 1e3 * median(compute) / steps,
          "stream_ms_per_step": 1e3 * median(wall) / steps,
          "blocked_ms_per_step": 1e3 * median(blocked) / steps,
          "input_wait_share": median(share), "input_wait_share_rounds": share}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of one epoch")
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--prefetch", type=int, default=4)
  parser.add_argument("--workers", type=int, default=0)
  parser.add_argument("--steps_per_call", type=int, default=8)
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args()
  if args.workers:
    from absl import flags

    flags.FLAGS.mark_as_parsed()  # grain worker processes need parsed absl flags

  config = repo_config("quickstart", "full")
  config.streaming.num_threads = args.threads
  config.streaming.prefetch = args.prefetch
  config.streaming.worker_count = args.workers
  config.streaming.steps_per_call = args.steps_per_call
  config.student.num_epochs = args.rounds + 2
  params = simulator_tfds.PRESETS["small"]
  with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    splits, builder = simulator_tfds.load(params, seed=0, data_dir=args.data_dir or tmp)
    prepare_s = time.perf_counter() - t0
    train = scored(splits["train"], 0)
    trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                         num_train_requests=train.num_requests)
    points = student_points(config)
    steps = trainer.steps_per_epoch
    reader = tfds_base.RecordReader(tfds_base.split_files(builder, "train"),
                                    tfds_base.builder_shapes(builder))
    sources = {"memory": streaming.BatchSource(train),
               "records": streaming.RecordSource(reader, {"teacher_scores":
                                                          train.teacher_scores})}
    rows = []
    distinct = [p._replace(seed=i) for i, p in enumerate(points)]
    for orders, pts, kind in (("shared (one seed)", points, "device"),
                              ("per point (P seeds)", distinct, "device"),
                              ("per point in blocks", distinct, "block")):
      config.streaming.order = kind
      hparams, rngs = stack_points(pts)
      state = jax.jit(jax.vmap(trainer.init))(hparams, rngs)
      for name, source in sources.items():
        feed = GrainFeed(config, "student", trainer, train, source=source)
        feed.start(state)
        result = measure(feed, state, hparams, steps=steps, rounds=args.rounds)
        sample = source.gather(feed.order.step_indices(0))
        # Input alone: the same pipeline read without training.
        feed2 = GrainFeed(config, "student", trainer, train, source=source)
        feed2.start(state)
        for timed in (False, True):  # epoch 0 warms up; epoch 1 is timed
          done, t = 0, time.perf_counter()
          while done < steps:
            done += next(feed2.input)["valid"].shape[0]
        input_only = time.perf_counter() - t
        rows.append({"order": orders, "source": name,
                     "requests_per_step": int(np.prod(sample["valid"].shape[:-1])),
                     "input_only_ms_per_step": 1e3 * input_only / steps, **result})
  print(f"prerank_simulator/small prepared in {prepare_s:.1f} s; {len(points)} points, "
        f"batch {config.student.batch_size}, {args.rounds} rounds of {steps} steps; grain threads={args.threads} "
        f"prefetch={args.prefetch} workers={args.workers} steps/call={args.steps_per_call}; {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} {jax.default_backend()} device(s)\n")
  header = (f"{'order':<22} {'source':<8} {'req/step':>8} {'compute':>9} {'stream':>9} "
            f"{'input':>9} {'blocked':>9} {'wait share':>10}")
  print(header + "\n" + "-" * len(header))
  for r in rows:
    print(f"{r['order']:<22} {r['source']:<8} {r['requests_per_step']:>8} "
          f"{r['compute_ms_per_step']:>7.2f}ms {r['stream_ms_per_step']:>7.2f}ms "
          f"{r['input_only_ms_per_step']:>7.2f}ms {r['blocked_ms_per_step']:>7.2f}ms "
          f"{100 * r['input_wait_share']:>9.1f}%")
  out = Path(__file__).resolve().parent / "results"
  out.mkdir(exist_ok=True)
  (out / "input_pipeline.json").write_text(json.dumps(
      {"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
  sys.exit(main())
