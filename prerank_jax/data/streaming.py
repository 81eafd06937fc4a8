"""Streaming input with grain: batches from the host into the jitted vmapped step.

The device-resident pipeline (the default) keeps the whole train split on device and draws
each sweep point's per-epoch order inside ``lax.scan`` (``epoch()`` in ``train/loop.py``)::

    rng, perm_rng = split(state.rng);  state.rng = rng
    order = permutation(perm_rng, R)[:steps * B].reshape(steps, B)

Streaming keeps the data on the host (in memory or in a TFDS dataset's ArrayRecord files)
and feeds it through a grain pipeline (parallel reads with ``num_threads``, ``prefetch``
elements ahead, optional ``worker_count`` processes). :class:`GrainFeed` trains a sweep
phase from it with the runner's ``run_chunk`` contract (``config.input_pipeline="grain"``).
Two orders:

* ``order="device"``: :class:`DeviceOrder` replays the device-resident key chain on the
  host, so every sweep point gets *exactly* its device-resident order (tested: the same
  parameters to float tolerance). Points with different seeds (a teacher ensemble) read
  ``P × B`` requests a step (``[P, B, ...]``); points sharing a seed (a hyperparameter
  grid, the usual case) share the order, so a step reads ``B`` requests, broadcast.
* ``order="shared"``: one order for all points, a seeded permutation per epoch
  (:class:`SharedOrder`); each step reads ``B`` requests, broadcast to every point
  (``in_axes=None``). P times less input than per-point orders, but not the
  device-resident order.

Grain does the rest: ``MapDataset.range(calls).map(GatherCall)`` reads ``steps_per_call``
steps per element (one compiled call runs them as a ``lax.scan``), ``to_iter_dataset``
reads ahead with threads, and ``mp_prefetch`` adds worker processes.

The grain iterator's position (:meth:`StreamingInput.get_state`) is a small JSON dict
saved in the Orbax checkpoint metadata; :meth:`StreamingInput.set_state` resumes at the same
step, so a resumed sweep sees exactly the same data order.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.data.tfds_base import BATCH_FIELDS, RecordReader

ORDERS = ("device", "shared")


# --- sources ------------------------------------------------------------------------------

class BatchSource:
  """An in-memory split; ``gather(idx)`` returns ``{field: [*idx.shape, ...]}``."""

  def __init__(self, batch: Batch):
    self.arrays = {name: np.asarray(value) for name, value in batch._asdict().items()
                   if value is not None}
    self.num_requests = int(self.arrays["valid"].shape[0])

  def __len__(self) -> int:
    return self.num_requests

  def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {name: value[idx] for name, value in self.arrays.items()}


class RecordSource:
  """A prepared TFDS split read from its ArrayRecord files (plus in-memory ``extra`` fields,
  e.g. ``teacher_scores [R, N, M]`` from the teacher-score cache)."""

  def __init__(self, reader: RecordReader, extra: Mapping[str, np.ndarray] | None = None):
    self.reader = reader
    self.extra = {k: np.asarray(v) for k, v in (extra or {}).items() if v is not None}
    self.num_requests = len(reader)
    for name, value in self.extra.items():
      if value.shape[0] != self.num_requests:
        raise ValueError(f"streaming: extra field {name} has {value.shape[0]} requests, the "
                         f"records {self.num_requests}")

  def __len__(self) -> int:
    return self.num_requests

  def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    flat = idx.reshape(-1)
    unique, inverse = np.unique(flat, return_inverse=True)
    rows = self.reader.read(unique)
    out = {name: value[inverse].reshape(*idx.shape, *value.shape[1:])
           for name, value in rows.items()}
    out.update({name: value[idx] for name, value in self.extra.items()})
    return out


# --- orders -------------------------------------------------------------------------------

class DeviceOrder:
  """The device-resident per-point order, replayed on the host.

  Args:
    run_rngs: ``state.rng`` of every (padded) sweep point right after ``init``, typed keys
      ``[P]`` (or their raw key data).
    num_requests: R of the train split.
    batch_size: B.
  """

  def __init__(self, run_rngs: Any, num_requests: int, batch_size: int):
    from prerank_jax.train.sweep import to_host

    rngs = to_host(run_rngs)
    if jax.dtypes.issubdtype(rngs.dtype, jax.dtypes.prng_key):
      self.impl = str(jax.random.key_impl(rngs))
      rngs = jax.random.key_data(rngs)
    else:
      self.impl = "threefry2x32"
    self.key_data = np.asarray(rngs)
    self.num_points = int(self.key_data.shape[0])
    # Points with one seed (a grid over hyperparameters) share one order: each step then
    # reads B requests, broadcast to every point, instead of P × B.
    self.shared = bool((self.key_data == self.key_data[:1]).all())
    self.num_requests, self.batch_size = int(num_requests), int(batch_size)
    self.steps_per_epoch = self.num_requests // self.batch_size
    self._lock = threading.Lock()
    self._chain: list[np.ndarray] = []   # key data of state.rng at the start of epoch e
    self._cache: tuple[int, np.ndarray] | None = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state.update(_lock=None, _chain=[], _cache=None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _keys(self, epoch: int) -> np.ndarray:
    """Key data ``[P, 2, ...]`` of ``(rng, perm_rng)`` of ``epoch``."""
    wrap = lambda d: jax.random.wrap_key_data(d, impl=self.impl)
    if not self._chain:
      self._chain.append(self.key_data)
    while len(self._chain) <= epoch + 1:
      pair = jax.vmap(jax.random.split)(wrap(self._chain[-1]))
      self._chain.append(np.asarray(jax.random.key_data(pair[:, 0])))
    return self._chain[epoch], self._chain[epoch + 1]

  def perm_key_data(self, epoch: int) -> np.ndarray:
    """Key data ``[P, ...]`` of each point's ``perm_rng`` in ``epoch`` (for checks)."""
    with self._lock:
      start, _ = self._keys(epoch)
    pair = jax.vmap(jax.random.split)(jax.random.wrap_key_data(start, impl=self.impl))
    return np.asarray(jax.random.key_data(pair[:, 1]))

  def epoch_order(self, epoch: int) -> np.ndarray:
    """``[P, steps, B]`` request indices of ``epoch``."""
    with self._lock:
      if self._cache is not None and self._cache[0] == epoch:
        return self._cache[1]
      start, _ = self._keys(epoch)
      perm = jax.vmap(jax.random.split)(jax.random.wrap_key_data(start, impl=self.impl))[:, 1]
      order = jax.vmap(lambda k: jax.random.permutation(k, self.num_requests))(perm)
      order = np.asarray(order)[:, :self.steps_per_epoch * self.batch_size]
      order = order.reshape(self.num_points, self.steps_per_epoch, self.batch_size)
      self._cache = (epoch, order)
      return order

  def step_indices(self, step: int) -> np.ndarray:
    """``[P, B]`` request indices of a global step (``[B]`` when the points share them)."""
    epoch, s = divmod(int(step), self.steps_per_epoch)
    order = self.epoch_order(epoch)
    return order[0, s] if self.shared else order[:, s]


class SharedOrder:
  """One order for every point: a seeded permutation per epoch (numpy Philox, keyed by
  ``(seed, epoch)``), cut into steps; the remainder is dropped per epoch, as on device."""

  def __init__(self, seed: int, num_requests: int, batch_size: int):
    self.seed = int(seed)
    self.num_requests, self.batch_size = int(num_requests), int(batch_size)
    self.steps_per_epoch = self.num_requests // self.batch_size
    self._lock = threading.Lock()
    self._cache: tuple[int, np.ndarray] | None = None

  def __getstate__(self):
    return {**self.__dict__, "_lock": None, "_cache": None}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def epoch_order(self, epoch: int) -> np.ndarray:
    """``[steps, B]`` request indices of ``epoch``."""
    with self._lock:
      if self._cache is None or self._cache[0] != epoch:
        perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_requests)
        self._cache = (epoch, perm[:self.steps_per_epoch * self.batch_size].reshape(
            self.steps_per_epoch, self.batch_size))
      return self._cache[1]

  def step_indices(self, step: int) -> np.ndarray:
    epoch, s = divmod(int(step), self.steps_per_epoch)
    return self.epoch_order(epoch)[s]


# --- the grain pipeline -------------------------------------------------------------------

class Calls:
  """Groups each epoch's steps into calls of at most ``steps_per_call`` steps (one grain
  element and one dispatch of the compiled step loop per call; the last call of an epoch
  may be shorter, so calls never straddle epochs)."""

  def __init__(self, steps_per_epoch: int, steps_per_call: int):
    self.steps_per_epoch = int(steps_per_epoch)
    self.steps_per_call = max(1, min(int(steps_per_call), self.steps_per_epoch))
    self.calls_per_epoch = -(-self.steps_per_epoch // self.steps_per_call)

  def steps(self, call: int) -> range:
    """Global step indices of a call."""
    epoch, j = divmod(int(call), self.calls_per_epoch)
    first = epoch * self.steps_per_epoch + j * self.steps_per_call
    last = epoch * self.steps_per_epoch + min((j + 1) * self.steps_per_call,
                                              self.steps_per_epoch)
    return range(first, last)

  def call_at(self, step: int) -> int:
    """The call that starts at global ``step`` (an epoch or call boundary)."""
    epoch, s = divmod(int(step), self.steps_per_epoch)
    j, rest = divmod(s, self.steps_per_call)
    if rest:
      raise ValueError(f"step {step} is not at a call boundary")
    return epoch * self.calls_per_epoch + j


class GatherCall:
  """Grain map: call index → its steps' arrays, ``[k, P, B, ...]`` (or ``[k, B, ...]``)."""

  def __init__(self, source, order, calls: Calls):
    self.source, self.order, self.calls = source, order, calls

  def __call__(self, call: int) -> dict[str, np.ndarray]:
    idx = np.stack([self.order.step_indices(t) for t in self.calls.steps(call)])
    return self.source.gather(idx)


def _worker_init(worker_index: int, worker_count: int) -> None:
  """Grain workers compute orders with JAX on the CPU, never on an accelerator."""
  del worker_index, worker_count
  jax.config.update("jax_platforms", "cpu")


class StreamingInput:
  """An iterator over calls of per-step batches (numpy dicts ``[k, ...]``).

  Args:
    source: :class:`BatchSource` or :class:`RecordSource`.
    order: :class:`DeviceOrder` or :class:`SharedOrder`.
    num_steps: total steps of the phase (epochs × steps per epoch).
    steps_per_call: steps per element (amortises per-step host overhead); 1 = per step.
    num_threads, prefetch: grain read threads and elements read ahead.
    worker_count: grain worker processes (0: threads of this process only). Workers need
      absl flags parsed and a ``__main__`` guard (grain uses spawn).
  """

  def __init__(self, source, order, *, num_steps: int, steps_per_call: int = 1,
               num_threads: int = 2, prefetch: int = 4, worker_count: int = 0):
    import grain

    self.source, self.order = source, order
    self.calls = Calls(order.steps_per_epoch, steps_per_call)
    epochs, rest = divmod(int(num_steps), order.steps_per_epoch)
    if rest:
      raise ValueError(f"streaming: num_steps={num_steps} is not a whole number of epochs "
                       f"of {order.steps_per_epoch} steps")
    self.num_steps = int(num_steps)
    dataset = grain.MapDataset.range(epochs * self.calls.calls_per_epoch).map(
        GatherCall(source, order, self.calls))
    self.dataset = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=int(num_threads), prefetch_buffer_size=int(prefetch)))
    if worker_count > 0:
      self.dataset = self.dataset.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=int(worker_count)),
          worker_init_fn=_worker_init)
    self._iterator = None
    self.step = 0  # steps handed out so far

  @property
  def iterator(self):
    if self._iterator is None:
      self._iterator = iter(self.dataset)
    return self._iterator

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    """The next call's arrays; each has a leading axis of its ``k`` steps."""
    value = next(self.iterator)
    self.step += int(value["valid"].shape[0])
    return value

  def get_state(self) -> dict:
    """The position (JSON-able) for the checkpoint metadata: steps handed out and grain's
    own iterator state."""
    return {"step": self.step, "grain": _jsonable(self.iterator.get_state())}

  def set_state(self, state: Mapping) -> None:
    self.iterator.set_state(_unjsonable(state["grain"]))
    self.step = int(state["step"])

  def dataset_arrays(self, call: int) -> dict[str, np.ndarray]:
    """A call's arrays read directly (outside the iterator; for benchmarks and checks)."""
    return GatherCall(self.source, self.order, self.calls)(call)

  def state_at(self, step: int) -> dict:
    """The state of an iterator without worker processes standing at ``step`` (a call
    boundary), for checkpoints written without one."""
    return {"step": int(step), "grain": {"next_index": self.calls.call_at(step)}}


def _jsonable(value):
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, bytes):
    return value.decode("latin-1")
  return value


def _unjsonable(value):
  if isinstance(value, Mapping):
    return {k: _unjsonable(v) for k, v in value.items()}
  if isinstance(value, list):
    return [_unjsonable(v) for v in value]
  return value


def index_batches(train: Batch, run_rngs: Any, *, batch_size: int, num_epochs: int):
  """Yields ``[P, B]`` request indices of every step, in the device-resident order.

  Args:
    train: the train split (or any source with ``len``).
    run_rngs: ``state.rng`` of every sweep point right after ``init``.
  """
  num_requests = train.num_requests if isinstance(train, Batch) else len(train)
  order = DeviceOrder(run_rngs, num_requests, batch_size)
  for step in range(num_epochs * order.steps_per_epoch):
    epoch, s = divmod(step, order.steps_per_epoch)
    yield order.epoch_order(epoch)[:, s]


# --- training from the stream -------------------------------------------------------------

class GrainFeed:
  """Trains a sweep phase from a :class:`StreamingInput` instead of device-resident data.

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
    shared = self.order_kind == "shared"
    model = trainer.model
    k, keep_ratio = int(config.eval.k), float(config.eval.monitor_keep_ratio)
    from prerank_jax.train.loop import _monitor

    def begin_epoch(state):
      pair = jax.random.split(state.rng)
      return state._replace(rng=pair[0]), jax.random.key_data(pair[1])

    def end_epoch(params, losses, valid):
      stats = {"loss": jnp.mean(losses)}
      stats.update(_monitor(model.apply(params, valid), valid, k=k, keep_ratio=keep_ratio))
      return stats

    def steps(broadcast):
      step = jax.vmap(trainer.step, in_axes=(0, None if broadcast else 0, 0),
                      spmd_axis_name="sweep")  # as compile_sweep: points on "sweep"
      # k steps in one program: a scan over the call's leading axis, as epoch() does.
      return jax.jit(lambda state, batches, hparams: jax.lax.scan(
          lambda s, b: step(s, b, hparams), state, batches))

    self._begin = jax.jit(jax.vmap(begin_epoch))
    self._steps = {broadcast: steps(broadcast) for broadcast in (False, True)}
    self._end = jax.jit(jax.vmap(end_epoch, in_axes=(0, 1, None)))
    self.broadcast = shared

  def start(self, state) -> None:
    """Builds the pipeline from a fresh ``init`` state (its keys start the device order)."""
    num_requests = len(self.source)
    if self.order_kind == "device":
      self.order = DeviceOrder(state.rng, num_requests, self.batch_size)
      self.broadcast = self.order.shared
    else:
      self.order = SharedOrder(self.config.seed + (1000 if self.role == "teacher" else 0),
                               num_requests, self.batch_size)
    st = self.config.streaming
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
    batch = Batch(**{name: arrays.get(name) for name in (*BATCH_FIELDS, "teacher_scores")})
    if self.mesh is None:
      return jax.device_put(batch)
    from prerank_jax.train.sweep import _put

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


def make_source(config, train: Batch):
  """``BatchSource(train)`` or, with ``streaming.read_from="records"``, the prepared TFDS
  dataset's train records plus ``train.teacher_scores``."""
  if config.streaming.read_from == "memory":
    return BatchSource(train)
  from prerank_jax.data import registry, tfds_base

  builder, missing = registry.make_builder(config)
  if builder is None or not tfds_base.is_prepared(builder):
    raise tfds_base.DatasetMissingError(missing or f"{config.dataset}: not prepared")
  reader = RecordReader(tfds_base.split_files(builder, "train"),
                        tfds_base.builder_shapes(builder))
  return RecordSource(reader, {"teacher_scores": train.teacher_scores})
