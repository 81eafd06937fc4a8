"""Streaming with grain: the device-resident order replayed on the host, the same
parameters as a device-resident run, a resumable iterator, records from ArrayRecord."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.data import streaming
from prerank_jax.train.host_fed import GrainFeed
from prerank_jax.host.plan import student_points
from prerank_jax.train.loop import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, stack_points
from tests.conftest import load_config


def _scored(batch, seed):
  rng = np.random.default_rng(seed)
  return batch._replace(teacher_scores=rng.standard_normal((*batch.valid.shape, 1))
                        .astype(np.float32))


@pytest.fixture(scope="module")
def setup():
  from prerank_jax.data.simulator import PRESETS, simulate

  config = load_config()
  config.sweep.temperature = (1.0, 4.0)
  config.sweep.alpha = (0.5,)
  config.student.epochs_per_chunk = 2
  splits = simulate(PRESETS["tiny"], seed=0)
  data = SweepData(_scored(splits["train"], 0), _scored(splits["valid"], 1))
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests)
  compiled = compile_sweep(trainer)
  hparams, rngs = stack_points(student_points(config))
  state0 = compiled.init(hparams, rngs)
  return config, data, trainer, compiled, hparams, state0


def _fresh(state):
  """A copy of the shared initial state: ``run_chunk`` donates (deletes) what it is given."""
  return jax.tree.map(lambda x: x.copy(), state)


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_index_batches_are_the_device_permutations(setup):
  config, data, trainer, _, _, state0 = setup
  b, r = config.student.batch_size, data.train.num_requests
  batches = list(streaming.index_batches(data.train, state0.rng, batch_size=b, num_epochs=2))
  assert len(batches) == 2 * trainer.steps_per_epoch
  assert batches[0].shape == (state0.rng.shape[0], b)
  # Epoch 0 of point 0, computed as epoch() in train/loop.py does.
  rng, perm_rng = jax.random.split(state0.rng[0])
  expected = np.asarray(jax.random.permutation(perm_rng, r))[:trainer.steps_per_epoch * b]
  got = np.concatenate([x[0] for x in batches[:trainer.steps_per_epoch]])
  np.testing.assert_array_equal(got, expected)
  _, perm_rng = jax.random.split(rng)                      # epoch 1 continues the chain
  expected = np.asarray(jax.random.permutation(perm_rng, r))[:trainer.steps_per_epoch * b]
  got = np.concatenate([x[0] for x in batches[trainer.steps_per_epoch:]])
  np.testing.assert_array_equal(got, expected)
  # The grid's points share a seed, hence an order; other seeds give other orders.
  assert all(np.array_equal(x[0], x[1]) for x in batches)
  other = next(streaming.index_batches(data.train, jax.random.split(jax.random.key(5), 2),
                                       batch_size=b, num_epochs=1))
  assert not np.array_equal(other[0], other[1])


@pytest.mark.parametrize("distinct_seeds", [False, True])
def test_streaming_equals_device_resident(setup, distinct_seeds):
  config, data, trainer, compiled, hparams, state0 = setup
  if distinct_seeds:  # per-point orders ([P, B] batches) instead of one broadcast order
    config = config.copy_and_resolve_references()
    config.streaming.steps_per_call = 3   # calls of 3 and 1 steps: 4 steps an epoch
    points = [p._replace(seed=i) for i, p in enumerate(student_points(config))]
    hparams, rngs = stack_points(points)
    state0 = compiled.init(hparams, rngs)
  device, device_stats = _fresh(state0), []
  for _ in range(2):
    device, stats = compiled.run_chunk(device, hparams, data)
    device_stats.append(stats)
  feed = GrainFeed(config, "student", trainer, data.train)
  feed.start(state0)
  assert feed.broadcast is not distinct_seeds
  streamed, streamed_stats = _fresh(state0), []
  for _ in range(2):
    streamed, stats = feed.run_chunk(streamed, hparams, data)
    streamed_stats.append(stats)
  assert _max_diff(device.params, streamed.params) < 1e-5
  assert _max_diff(device.opt_state, streamed.opt_state) < 1e-5
  np.testing.assert_array_equal(jax.random.key_data(device.rng),
                                jax.random.key_data(streamed.rng))
  np.testing.assert_array_equal(device.step, streamed.step)
  for a, b in zip(device_stats, streamed_stats):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-5, err_msg=k)


def test_resumed_iterator_continues_identically(setup):
  config, data, trainer, _, hparams, state0 = setup
  order = streaming.DeviceOrder(state0.rng, data.train.num_requests,
                                config.student.batch_size)
  source = streaming.BatchSource(data.train)
  make = lambda: streaming.StreamingInput(source, order, num_steps=3 * order.steps_per_epoch,
                                          num_threads=2, prefetch=3)
  first = make()
  for _ in range(5):
    next(first)
  saved = json.loads(json.dumps(first.get_state()))   # as stored in checkpoint metadata
  rest = [next(first) for _ in range(4)]
  resumed = make()
  resumed.set_state(saved)
  assert resumed.step == 5
  for a in rest:
    b = next(resumed)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])

  # A sweep phase resumed from a chunk boundary gives the uninterrupted parameters.
  feed = GrainFeed(config, "student", trainer, data.train)
  feed.start(state0)
  state, _ = feed.run_chunk(_fresh(state0), hparams, data)
  meta = json.loads(json.dumps(feed.get_state()))
  straight, _ = feed.run_chunk(state, hparams, data)
  feed2 = GrainFeed(config, "student", trainer, data.train)
  feed2.start(state0)                                  # a fresh init, as on restart
  feed2.resume(meta, step=config.student.epochs_per_chunk * trainer.steps_per_epoch)
  again, _ = feed2.run_chunk(state, hparams, data)
  assert _max_diff(straight.params, again.params) == 0.0
  # A wrong position is caught by the key check rather than training on another order.
  feed3 = GrainFeed(config, "student", trainer, data.train)
  feed3.start(state0)
  with pytest.raises(RuntimeError, match="does not match the state's keys"):
    feed3.run_chunk(state, hparams, data)


def test_shared_order_is_a_new_permutation_per_epoch(setup):
  config, data, trainer, _, hparams, state0 = setup
  config = config.copy_and_resolve_references()
  config.streaming.order = "shared"
  feed = GrainFeed(config, "student", trainer, data.train)
  feed.start(state0)
  b, steps = config.student.batch_size, trainer.steps_per_epoch
  epochs = [np.concatenate([feed.order.step_indices(e * steps + s) for s in range(steps)])
            for e in range(2)]
  for order in epochs:
    assert len(set(order.tolist())) == steps * b        # no repeats within an epoch
  assert not np.array_equal(epochs[0], epochs[1])       # reshuffled every epoch
  assert feed.broadcast                                  # one batch for every point
  assert feed.source.gather(feed.order.step_indices(0))["items"].shape[0] == b
  state, stats = feed.run_chunk(_fresh(state0), hparams, data)
  assert np.isfinite(np.asarray(stats["loss"])).all()


def test_record_source_matches_memory(tmp_path):
  from prerank_jax.data import simulator_tfds, tfds_base

  splits, builder = simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0,
                                        data_dir=str(tmp_path))
  reader = tfds_base.RecordReader(tfds_base.split_files(builder, "train"),
                                  tfds_base.builder_shapes(builder))
  scores = np.arange(np.prod(splits["train"].valid.shape), dtype=np.float32).reshape(
      *splits["train"].valid.shape, 1)
  records = streaming.RecordSource(reader, {"teacher_scores": scores})
  memory = streaming.BatchSource(splits["train"]._replace(teacher_scores=scores))
  idx = np.array([[3, 7, 3, 0], [63, 1, 2, 7]])
  a, b = records.gather(idx), memory.gather(idx)
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].shape[:2] == (2, 4)
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_runner_grain_pipeline_matches_device(smoke_config):
  from prerank_jax.host.runner import run

  smoke_config.sweep.temperature = (1.0, 2.0)
  smoke_config.sweep.alpha = (0.5,)
  device = run(smoke_config)
  smoke_config.name = "grain"
  smoke_config.input_pipeline = "grain"
  grain_run = run(smoke_config)
  assert [r["model"] for r in device.rows] == [r["model"] for r in grain_run.rows]
  for a, b in zip(device.rows, grain_run.rows):
    for k, v in a.items():
      if isinstance(v, float):
        assert b[k] == pytest.approx(v, abs=1e-4), (a["model"], k)


@pytest.mark.slow
def test_worker_processes_give_the_same_stream(setup):
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain workers need parsed absl flags
  config, data, _, _, _, state0 = setup
  order = streaming.DeviceOrder(state0.rng, data.train.num_requests,
                                config.student.batch_size)
  source = streaming.BatchSource(data.train)
  steps = 2 * order.steps_per_epoch
  inline = streaming.StreamingInput(source, order, num_steps=steps, steps_per_call=3)
  workers = streaming.StreamingInput(source, order, num_steps=steps, steps_per_call=3,
                                     worker_count=1)
  for _ in range(4):
    a, b = next(inline), next(workers)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_block_order_gives_per_point_batches_from_one_decoded_block(tmp_path):
  """order="block": every point sees each kept request once an epoch in batches of its
  own, the points share which requests fall in each block of steps_per_call steps, and a
  call decodes each of its block's k·B records once (not P·B a step)."""
  from prerank_jax.data import simulator_tfds, tfds_base

  splits, builder = simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0,
                                        data_dir=str(tmp_path))
  reader = tfds_base.RecordReader(tfds_base.split_files(builder, "train"),
                                  tfds_base.builder_shapes(builder))
  decoded = []
  read = reader.read
  reader.read = lambda rows: decoded.append(len(rows)) or read(rows)
  source = streaming.RecordSource(reader)
  num_points, b, k = 4, 8, 3
  keys = jax.random.split(jax.random.key(0), num_points)
  order = streaming.BlockOrder(keys, 7, len(source), b, k)
  steps = order.steps_per_epoch
  assert not order.shared and steps > k
  stream = streaming.StreamingInput(source, order, num_steps=2 * steps, steps_per_call=k)
  epochs = [[], []]
  for e in range(2):
    for c in range(stream.calls.calls_per_epoch):
      call = e * stream.calls.calls_per_epoch + c
      idx = np.stack([order.step_indices(t) for t in stream.calls.steps(call)])
      epochs[e].append(idx)                                     # [k, P, B]
  for e, calls in enumerate(epochs):
    seen = np.concatenate([c.transpose(1, 0, 2).reshape(num_points, -1) for c in calls], 1)
    for p in range(num_points):                                 # each request once an epoch
      assert len(set(seen[p].tolist())) == steps * b
    for c in calls:                                             # one block, P orders of it
      blocks = [np.sort(c[:, p].reshape(-1)) for p in range(num_points)]
      assert all(np.array_equal(blocks[0], x) for x in blocks[1:])
      assert not np.array_equal(c[:, 0], c[:, 1])               # batches of its own
  assert not np.array_equal(np.concatenate([c.reshape(-1) for c in epochs[0]]),
                            np.concatenate([c.reshape(-1) for c in epochs[1]]))
  first = next(stream)
  assert first["items"].shape[:3] == (k, num_points, b)
  # Each call (read ahead by grain's threads, in any order) decodes its own steps' records
  # once: k·B, or fewer for an epoch's shorter last call; never P times that.
  sizes = {len(stream.calls.steps(c)) * b for c in range(stream.calls.calls_per_epoch)}
  assert decoded and all(n in sizes for n in decoded), (decoded, sizes)
  assert sizes == {k * b, (steps % k or k) * b}
  again = streaming.BlockOrder(keys, 7, len(source), b, k)      # a pure function: resumable
  np.testing.assert_array_equal(again.step_indices(steps + 1), order.step_indices(steps + 1))
  same = jax.random.key_data(jax.random.key(0))[None].repeat(num_points, 0)
  shared = streaming.BlockOrder(same, 7, len(source), b, k)
  assert shared.shared and shared.step_indices(0).shape == (b,)


def test_block_order_trains_through_the_feed(setup):
  config, data, trainer, compiled, _, _ = setup
  config = config.copy_and_resolve_references()
  config.streaming.order = "block"
  config.streaming.steps_per_call = 2
  points = [p._replace(seed=i) for i, p in enumerate(student_points(config))]
  hparams, rngs = stack_points(points)
  state0 = compiled.init(hparams, rngs)
  feed = GrainFeed(config, "student", trainer, data.train)
  feed.start(state0)
  assert not feed.broadcast
  state, stats = feed.run_chunk(_fresh(state0), hparams, data)
  assert np.isfinite(np.asarray(stats["loss"])).all()
  assert _max_diff(state.params, state0.params) > 0


@pytest.mark.slow
def test_records_run_leaves_the_train_split_on_disk(smoke_config, tmp_path, monkeypatch):
  """``streaming.read_from="records"``: the loaders return the train split as a
  ``RecordSplit`` (its valid mask in memory, nothing else), no read takes more than one
  block of its records, scores.parquet holds valid and test only, and every result equals
  that of the same run with the train split in host memory."""
  import pyarrow.parquet as pq

  from prerank_jax.data import tfds_base
  from prerank_jax.host.runner import load_data, run

  smoke_config.dataset = "simulator_tfds"
  smoke_config.source.data_dir = str(tmp_path / "tfds")
  smoke_config.sweep.temperature = (1.0, 2.0)
  smoke_config.sweep.alpha = (0.5,)
  smoke_config.input_pipeline = "grain"
  results = {}
  for read_from in ("memory", "records"):
    smoke_config.name = read_from
    smoke_config.streaming.read_from = read_from
    results[read_from] = run(smoke_config)
  splits, _, _ = load_data(smoke_config)
  train = splits["train"]
  assert isinstance(train, tfds_base.RecordSplit)
  assert isinstance(splits["valid"], tfds_base.Batch)
  assert train.nbytes == train.valid.nbytes == train.num_requests * train.list_size
  # The same rows, the same numbers: the students read the same batches either way.
  memory, records = results["memory"].rows, results["records"].rows
  assert [r["model"] for r in memory] == [r["model"] for r in records]
  for a, b in zip(memory, records):
    for k, v in a.items():
      if isinstance(v, float) and k != "seconds" and not k.endswith("_s"):
        assert b[k] == pytest.approx(v, abs=1e-6, nan_ok=True), (a["model"], k)
  exported = {name: set(pq.read_table(result.run_dir / "scores.parquet",
                                      columns=["split"])["split"].to_pylist())
              for name, result in results.items()}
  assert exported == {"memory": {"train", "valid", "test"}, "records": {"valid", "test"}}

  # A run again, with blocks of 16 and a spy on the reader: apart from the valid mask,
  # no read of the train records takes more than a block or a training call's batches.
  from prerank_jax.host import teachers

  monkeypatch.setattr(tfds_base, "CHECK_BLOCK", 16)
  monkeypatch.setattr(teachers, "SCORE_BLOCK", 16)
  sizes = []
  read = tfds_base.RecordReader.read

  def spy(self, indices):
    indices = list(indices)
    if any("-train." in f for f in self.files) and set(self.shapes) != {"valid"}:
      sizes.append(len(indices))
    return read(self, indices)

  monkeypatch.setattr(tfds_base.RecordReader, "read", spy)
  smoke_config.name = "records-again"
  smoke_config.streaming.steps_per_call = 1  # a call reads one step: 2 points × 16
  rerun = run(smoke_config)
  assert smoke_config.student.batch_size == smoke_config.teacher.batch_size == 16
  assert sizes and max(sizes) <= 2 * 16 < train.num_requests, max(sizes)
  assert [r["ndcg@10"] for r in rerun.rows] == pytest.approx(
      [r["ndcg@10"] for r in records], abs=1e-6, nan_ok=True)
