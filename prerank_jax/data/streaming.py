"""Streaming input with grain: batches from the host into the jitted vmapped step.

The device-resident pipeline (the default) keeps the whole train split on device and draws
each sweep point's per-epoch order inside ``lax.scan`` (``epoch()`` in ``train/loop.py``)::

    rng, perm_rng = split(state.rng);  state.rng = rng
    order = permutation(perm_rng, R)[:steps * B].reshape(steps, B)

Streaming keeps the data on the host (in memory or in a TFDS dataset's ArrayRecord files)
and feeds it through a grain pipeline (parallel reads with ``num_threads``, ``prefetch``
elements ahead, optional ``worker_count`` processes). This module offers the input: an
iterator of batches with a saveable state (:class:`StreamingInput`); the training floor
owns the epoch loop that consumes it (:class:`prerank_jax.train.host_fed.GrainFeed`, with
the runner's ``run_chunk`` contract, ``config.input_pipeline="grain"``). Two orders:

* ``order="device"``: :class:`DeviceOrder` replays the device-resident key chain on the
  host, so every sweep point gets *exactly* its device-resident order (tested: the same
  parameters to float tolerance). Points with different seeds (a teacher ensemble) read
  ``P × B`` requests a step (``[P, B, ...]``); points sharing a seed (a hyperparameter
  grid, the usual case) share the order, so a step reads ``B`` requests, broadcast.
* ``order="shared"``: one order for all points, a seeded permutation per epoch
  (:class:`SharedOrder`); each step reads ``B`` requests, broadcast to every point
  (``in_axes=None``). P times less input than per-point orders, but not the
  device-resident order.
* ``order="block"``: per-point orders drawn inside a shared block of ``steps_per_call``
  steps (:class:`BlockOrder`): every point gets batches of its own and sees each request
  once per epoch, but a call decodes only its block's ``steps_per_call × B`` records,
  not ``P × B`` a step (per-point orders streamed from ArrayRecord files at the shared
  order's input cost).

Grain does the rest: ``MapDataset.range(calls).map(GatherCall)`` reads ``steps_per_call``
steps per element (one compiled call runs them as a ``lax.scan``), ``to_iter_dataset``
reads ahead with threads, and ``mp_prefetch`` adds worker processes.

The grain iterator's position (:meth:`StreamingInput.get_state`) is a small JSON dict
saved in the Orbax checkpoint metadata; :meth:`StreamingInput.set_state` resumes at the same
step, so a resumed sweep sees exactly the same data order.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import jax
import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.data.tfds_base import RecordReader

ORDERS = ("device", "shared", "block")


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

def _key_data(run_rngs: Any) -> tuple[str, np.ndarray]:
  """``(impl, raw key data)`` on the host of typed keys ``[P]`` or of their raw key data
  (taken as ``threefry2x32``). A multi-process caller gathers them first (``to_host``)."""
  rngs = jax.device_get(run_rngs)
  if jax.dtypes.issubdtype(rngs.dtype, jax.dtypes.prng_key):
    return str(jax.random.key_impl(rngs)), np.asarray(jax.random.key_data(rngs))
  return "threefry2x32", np.asarray(rngs)


class _HostOrder:
  """An order pickles (to grain workers) without its lock and caches; they are rebuilt."""

  def _transient(self) -> dict:
    return {"_lock": None, "_cache": None}

  def __getstate__(self):
    return {**self.__dict__, **self._transient()}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class DeviceOrder(_HostOrder):
  """The device-resident per-point order, replayed on the host.

  Args:
    run_rngs: ``state.rng`` of every (padded) sweep point right after ``init``, typed keys
      ``[P]`` (or their raw key data), addressable by this process.
    num_requests: R of the train split.
    batch_size: B.
  """

  def __init__(self, run_rngs: Any, num_requests: int, batch_size: int):
    self.impl, self.key_data = _key_data(run_rngs)
    self.num_points = int(self.key_data.shape[0])
    # Points with one seed (a grid over hyperparameters) share one order: each step then
    # reads B requests, broadcast to every point, instead of P × B.
    self.shared = bool((self.key_data == self.key_data[:1]).all())
    self.num_requests, self.batch_size = int(num_requests), int(batch_size)
    self.steps_per_epoch = self.num_requests // self.batch_size
    self._lock = threading.Lock()
    self._chain: list[np.ndarray] = []   # key data of state.rng at the start of epoch e
    self._cache: tuple[int, np.ndarray] | None = None

  def _transient(self) -> dict:
    return {**super()._transient(), "_chain": []}

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


class SharedOrder(_HostOrder):
  """One order for every point: a seeded permutation per epoch (numpy Philox, keyed by
  ``(seed, epoch)``), cut into steps; the remainder is dropped per epoch, as on device."""

  def __init__(self, seed: int, num_requests: int, batch_size: int):
    self.seed = int(seed)
    self.num_requests, self.batch_size = int(num_requests), int(batch_size)
    self.steps_per_epoch = self.num_requests // self.batch_size
    self._lock = threading.Lock()
    self._cache: tuple[int, np.ndarray] | None = None

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


class BlockOrder(_HostOrder):
  """Per-point orders drawn inside a shared, decoded block (``order="block"``).

  Each epoch is cut into blocks of ``steps_per_call`` steps by one seeded permutation
  shared by every point (the :class:`SharedOrder` of ``seed``), so a call decodes its
  block's ``steps_per_call × B`` records once. Inside the block every point draws its own
  permutation (numpy Philox keyed by the point's key data, the epoch and the block) and
  cuts it into its ``steps_per_call`` batches. Each point still sees every kept request
  exactly once per epoch, in batches of its own; what the points share is which requests
  fall in each block of steps. A stream reads ``B`` records a step instead of ``P × B``
  (:meth:`RecordSource.gather` decodes each distinct record once).

  Points whose key data are equal (a hyperparameter grid with one seed) get the same
  batches, broadcast (``[B]`` a step), as with :class:`DeviceOrder`.

  Args:
    run_rngs: ``state.rng`` of every (padded) sweep point right after ``init`` (typed keys
      ``[P]`` or their raw key data): what makes the points' in-block orders differ.
    seed: the seed of the shared block order.
    num_requests, batch_size: R of the train split and B.
    steps_per_call: steps per block (the :class:`Calls` grouping of the stream).
  """

  def __init__(self, run_rngs: Any, seed: int, num_requests: int, batch_size: int,
               steps_per_call: int):
    _, data = _key_data(run_rngs)
    data = data.reshape(data.shape[0], -1)
    self.point_seeds = [[int(v) for v in row] for row in data.astype(np.uint64)]
    self.num_points = len(self.point_seeds)
    self.shared = bool((data == data[:1]).all())
    self.blocks = SharedOrder(seed, num_requests, batch_size)
    self.num_requests, self.batch_size = int(num_requests), int(batch_size)
    self.steps_per_epoch = self.blocks.steps_per_epoch
    self.calls = Calls(self.steps_per_epoch, steps_per_call)
    self._lock = threading.Lock()
    self._cache: tuple[tuple[int, int], np.ndarray] | None = None

  def block_order(self, epoch: int, block: int) -> np.ndarray:
    """``[P, k, B]`` request indices of one block of ``k`` steps (``[1, k, B]`` shared)."""
    with self._lock:
      if self._cache is not None and self._cache[0] == (epoch, block):
        return self._cache[1]
    first = block * self.calls.steps_per_call
    last = min(first + self.calls.steps_per_call, self.steps_per_epoch)
    members = self.blocks.epoch_order(epoch)[first:last].reshape(-1)
    seeds = self.point_seeds[:1] if self.shared else self.point_seeds
    order = np.stack([members[np.random.default_rng([*s, int(epoch), int(block)])
                              .permutation(members.size)] for s in seeds])
    order = order.reshape(len(seeds), last - first, self.batch_size)
    with self._lock:
      self._cache = ((epoch, block), order)
    return order

  def step_indices(self, step: int) -> np.ndarray:
    """``[P, B]`` request indices of a global step (``[B]`` when the points share them)."""
    epoch, s = divmod(int(step), self.steps_per_epoch)
    block, j = divmod(s, self.calls.steps_per_call)
    order = self.block_order(epoch, block)[:, j]
    return order[0] if self.shared else order


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


def make_source(config, train: Batch):
  """``BatchSource(train)`` or, with ``streaming.read_from="records"``, the prepared TFDS
  dataset's train records plus ``train.teacher_scores`` (and a logged teacher's
  ``teacher_mask``): those of a :class:`~prerank_jax.data.tfds_base.RecordSplit` (what
  the loaders return then), or of the dataset's builder for an in-memory ``train``."""
  from prerank_jax.data import registry, tfds_base

  if isinstance(train, tfds_base.RecordSplit):  # the loader left it on disk
    return RecordSource(train.reader, {"teacher_scores": train.teacher_scores,
                                       "teacher_mask": train.teacher_mask})
  if config.streaming.read_from == "memory":
    return BatchSource(train)

  builder, missing = registry.make_builder(config)
  if builder is None or not tfds_base.is_prepared(builder):
    raise tfds_base.DatasetMissingError(missing or f"{config.dataset}: not prepared")
  reader = RecordReader(tfds_base.split_files(builder, "train"),
                        tfds_base.builder_shapes(builder))
  return RecordSource(reader, {"teacher_scores": train.teacher_scores,
                               "teacher_mask": train.teacher_mask})  # None: left out
