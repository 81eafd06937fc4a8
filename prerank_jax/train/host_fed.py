"""The host-fed epoch loop: a sweep phase trained from a streaming input.

The default pipeline keeps the train split on device and runs each epoch as a
``lax.scan`` (:func:`prerank_jax.train.loop.make_train`). With
``config.input_pipeline="grain"`` the batches come from the host instead, through
:class:`prerank_jax.data.streaming.StreamingInput` (an iterator of batches with a
saveable state). :class:`GrainFeed` runs that epoch loop from the same pieces as the
device-resident one: the trainer's ``step``, ``begin_epoch`` and ``epoch_stats``, so the
order keys, the updates and the per-epoch monitor are the device-resident run's.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.data.streaming import (BlockOrder, DeviceOrder, SharedOrder, StreamingInput,
                                        make_source)
from prerank_jax.data.tfds_base import BATCH_FIELDS
from prerank_jax.train.sweep import _put, to_host


class GrainFeed:
  """Trains a sweep phase from a :class:`~prerank_jax.data.streaming.StreamingInput`
  instead of device-resident data.

  ``run_chunk(state, hparams, data)`` has the signature and results of
  ``CompiledSweep.run_chunk`` (``data.valid`` is used for the per-epoch metrics;
  ``data.train`` is ignored), so the runner's loop, logging and checkpoints stay the same.

  Args:
    config: the run config (``input_pipeline``, ``streaming``, ``config[role]``).
    role: ``"teacher"`` or ``"student"``.
    trainer: from ``make_train``.
    train: the host train split; with ``streaming.read_from="records"`` only its
      ``teacher_scores`` are used and the rest is read from the dataset's ArrayRecord files.
    mesh: the sweep mesh (points sharded over ``"sweep"``).
    source: optional explicit source (overrides ``train`` and ``read_from``).
  """

  def __init__(self, config, role: str, trainer, train: Batch, mesh=None, *, source=None):
    self.config, self.role, self.trainer, self.mesh = config, role, trainer, mesh
    st = config.streaming
    self.order_kind = st.order
    self.source = source if source is not None else make_source(config, train)
    self.batch_size = int(config[role].batch_size)
    self.num_epochs = int(config[role].num_epochs)
    self.epochs_per_chunk = int(config[role].epochs_per_chunk)
    self.steps_per_epoch = trainer.steps_per_epoch
    if len(self.source) // self.batch_size != self.steps_per_epoch:
      raise ValueError(f"streaming: the source has {len(self.source)} requests, the trainer "
                       f"expects {self.steps_per_epoch} steps of {self.batch_size}")
    self.input: StreamingInput | None = None
    self.order = None
    self.broadcast = True  # set from the order by start()

    def begin_epoch(state):  # the device-resident loop's key split; the order's key data
      state, perm_rng = trainer.begin_epoch(state)
      return state, jax.random.key_data(perm_rng)

    def steps(broadcast):
      step = jax.vmap(trainer.step, in_axes=(0, None if broadcast else 0, 0),
                      spmd_axis_name="sweep")  # as compile_sweep: points on "sweep"
      # k steps in one program: a scan over the call's leading axis, as epoch() does.
      return jax.jit(lambda state, batches, hparams: jax.lax.scan(
          lambda s, b: step(s, b, hparams), state, batches))

    self._begin = jax.jit(jax.vmap(begin_epoch))
    self._steps = {broadcast: steps(broadcast) for broadcast in (False, True)}
    self._end = jax.jit(jax.vmap(trainer.epoch_stats, in_axes=(0, 1, None)))

  def start(self, state) -> None:
    """Builds the pipeline from a fresh ``init`` state (its keys start the device order)."""
    num_requests = len(self.source)
    st = self.config.streaming
    seed = self.config.seed + (1000 if self.role == "teacher" else 0)
    if self.order_kind == "device":
      self.order = DeviceOrder(to_host(state.rng), num_requests, self.batch_size)
    elif self.order_kind == "block":
      self.order = BlockOrder(to_host(state.rng), seed, num_requests, self.batch_size,
                              st.steps_per_call)
    else:
      self.order = SharedOrder(seed, num_requests, self.batch_size)
    self.broadcast = getattr(self.order, "shared", True)  # SharedOrder: always broadcast
    self.input = StreamingInput(self.source, self.order,
                                num_steps=self.num_epochs * self.steps_per_epoch,
                                steps_per_call=st.steps_per_call,
                                num_threads=st.num_threads, prefetch=st.prefetch,
                                worker_count=st.worker_count)

  def get_state(self) -> dict:
    return self.input.get_state()

  def set_state(self, state: Mapping) -> None:
    self.input.set_state(state)

  def resume(self, state: Mapping | None, *, step: int) -> None:
    """Restores the iterator from a checkpoint's ``state``; without one (a checkpoint of a
    device-resident run), starts at ``step``, a chunk boundary."""
    self.set_state(self.input.state_at(step) if state is None else state)
    if self.input.step != step:
      raise RuntimeError(f"streaming: the checkpoint's iterator stands at step "
                         f"{self.input.step}, its state at step {step}")

  def _put(self, arrays: Mapping[str, np.ndarray]) -> Batch:
    batch = Batch(**{name: arrays.get(name)
                     for name in (*BATCH_FIELDS, "teacher_scores", "teacher_mask")})
    if self.mesh is None:
      return jax.device_put(batch)
    # [k, P, B, ...]: points sharded over the mesh like the state; [k, B, ...]: replicated.
    spec = jax.sharding.PartitionSpec() if self.broadcast else jax.sharding.PartitionSpec(
        None, "sweep")
    return _put(batch, jax.sharding.NamedSharding(self.mesh, spec))

  def run_epoch(self, state, hparams, valid: Batch, epoch: int):
    state, perm = self._begin(state)
    if self.order_kind == "device":
      expected = self.order.perm_key_data(epoch)
      if not np.array_equal(np.asarray(jax.device_get(perm)), expected):
        raise RuntimeError(f"streaming: epoch {epoch}'s order does not match the state's "
                           "keys (was the iterator state restored with the checkpoint?)")
    losses, done = [], 0
    while done < self.steps_per_epoch:
      arrays = next(self.input)
      state, loss = self._steps[self.broadcast](state, self._put(arrays), hparams)  # [k, P]
      losses.append(loss)
      done += int(arrays["valid"].shape[0])
    return state, self._end(state.params, jnp.concatenate(losses), valid)

  def run_chunk(self, state, hparams, data):
    """``epochs_per_chunk`` epochs from the stream: ``(state, {metric: [P, epochs]})``."""
    if self.input is None:
      raise RuntimeError("GrainFeed.start(state) must be called before run_chunk")
    epoch, partial = divmod(self.input.step, self.steps_per_epoch)
    if partial:
      raise RuntimeError(f"streaming: the iterator stands {partial} steps into epoch {epoch}; "
                         "chunks start at epoch boundaries")
    stats = []
    for e in range(self.epochs_per_chunk):
      state, s = self.run_epoch(state, hparams, data.valid, epoch + e)
      stats.append(s)
    return state, {k: jnp.stack([s[k] for s in stats], axis=1) for k in stats[0]}
