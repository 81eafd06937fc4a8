"""Sweep grids: hyperparameter points stacked along a leading axis and vmapped.

A sweep is ``vmap`` of the pure train functions over stacked hyperparameters and keys,
with the data broadcast. A single run is a sweep of one point.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax import programs
from prerank_jax.losses.registry import HPARAMS, check_hparam
from prerank_jax.train.loop import SCORE_BUDGET, Trainer


class SweepPoint(NamedTuple):
  """One grid point: a display name, traced hyperparameter values and a seed."""

  name: str
  hparams: dict[str, float]
  seed: int


def grid_points(axes: Mapping[str, Sequence[float]], *, seed: int, mode: str = "product",
                field: str = "sweep") -> list[SweepPoint]:
  """Sweep points from axes of traced hyperparameters, validated against the registry.

  Args:
    axes: ``{hparam_name: values}``; every name must be in ``HPARAMS``. Names left out
      (or given no values) take the registry default.
    seed: seed shared by every point, so points differ only in their hyperparameters.
    mode: ``"product"`` (Cartesian product, row-major in the order of ``axes``) or
      ``"zip"`` (the i-th point takes the i-th value of every axis; axes of length 1
      are broadcast).
    field: config path for error messages.

  Returns:
    Points carrying a value for *every* name in ``HPARAMS``.
  """
  axes = {name: tuple(values) for name, values in axes.items() if len(values)}
  for name, values in axes.items():
    if name not in HPARAMS:
      raise ValueError(f"{field}.{name}: not a traced hyperparameter; valid names are "
                       f"{sorted(HPARAMS)}")
    for value in values:
      check_hparam(name, value, f"{field}.{name}")
  names = list(axes)
  if mode == "product":
    combos = list(itertools.product(*(axes[n] for n in names)))
  elif mode == "zip":
    lengths = {len(v) for v in axes.values()} - {1}
    if len(lengths) > 1:
      raise ValueError(f"{field}.mode: 'zip' needs axes of equal length (or length 1), got "
                       + ", ".join(f"{n}={len(v)}" for n, v in axes.items()))
    size = max(lengths, default=1)
    combos = [tuple(axes[n][i if len(axes[n]) > 1 else 0] for n in names)
              for i in range(size)]
  else:
    raise ValueError(f"{field}.mode: must be 'product' or 'zip', got {mode!r}")
  defaults = {n: spec.default for n, spec in HPARAMS.items()}
  points = []
  for combo in combos:
    swept = {n: float(v) for n, v in zip(names, combo)}
    # The config's names, in ASCII: results.csv's columns and the row names are the same
    # (docs/reference/outputs.md, "Names").
    label = " ".join(f"{n}={v:g}" for n, v in swept.items()) or "default"
    points.append(SweepPoint(label, {**defaults, **swept}, seed))
  return points


def replicate_points(points: Sequence[SweepPoint], seeds: Sequence[int]) -> list[SweepPoint]:
  """Every point once per replicate seed: the replicate axis of a sweep.

  Definition: the product ``points × seeds``, point-major (point ``i``'s replicates are
  rows ``i·S … i·S + S − 1``). A replicate differs from its siblings only in its seed,
  which :func:`stack_points` turns into the point's key; the trainer splits that key into
  the student's initialisation and its data order (see ``Trainer.init``). All replicates
  are stacked with the other points, so they run in the same compiled program. The world
  (data, teacher) is not part of a point: it stays fixed by ``config.seed``.

  Args:
    points: grid points (any seed).
    seeds: replicate seeds; ``()`` returns ``points`` unchanged (one replicate, each
      point's own seed).

  Returns:
    ``len(points) · len(seeds)`` points named ``"<name> seed=<s>"``.
  """
  if not len(seeds):
    return list(points)
  return [p._replace(name=f"{p.name} seed={int(s)}", seed=int(s))
          for p in points for s in seeds]


def stack_points(points: Sequence[SweepPoint]) -> tuple[dict[str, jax.Array], jax.Array]:
  """Stacks points into ``(hparams {name: [P]}, rngs [P])`` for ``vmap``."""
  names = sorted(set().union(*(p.hparams for p in points)))
  missing = [(p.name, n) for p in points for n in names if n not in p.hparams]
  if missing:
    raise ValueError(f"sweep points disagree on hyperparameters: {missing[:3]}")
  hparams = {n: jnp.asarray(np.array([p.hparams[n] for p in points], np.float32))
             for n in names}
  rngs = jnp.stack([jax.random.key(p.seed) for p in points])
  return hparams, rngs


class CompiledSweep(NamedTuple):
  """``jit(vmap(...))`` of a trainer's functions: one program for all points."""

  init: Any        # (hparams [P], rngs [P]) -> state [P]
  run_chunk: Any   # (state [P] (donated), hparams [P], data) -> (state [P], metrics [P, E])
  train: Any       # (hparams [P], rngs [P], data) -> (state [P], metrics [P, epochs])
  apply: Any       # (params [P], batch) -> scores [P, R, N]


def compile_sweep(trainer: Trainer, *, group_size: int = 0, name: str = "") -> CompiledSweep:
  """Vmaps the trainer over the leading point axis, broadcasting the data.

  The point axis is named ``"sweep"`` for SPMD: a sharding constraint inside the trainer
  (the data-parallel batch split, see :func:`batch_sharding`) then keeps the points on the
  mesh's ``"sweep"`` axis.

  Args:
    trainer: from :func:`prerank_jax.train.make_train`.
    group_size: ``0`` vmaps all points at once. Otherwise ``run_chunk`` and ``train``
      vmap ``group_size`` points at a time and ``lax.scan`` over the groups, still one
      compiled program (see :func:`in_groups`): it bounds activation memory for large
      sweeps and keeps a CPU's caches warm. The point count must then be a multiple of
      ``group_size`` (the runner pads it, :func:`group_layout`).
    name: names the four programs for a store of traced programs
      (:mod:`prerank_jax.programs`); it must identify the trainer (the host passes the
      fingerprint of the config it was built from). ``""``: never stored.

  ``run_chunk`` donates its ``state`` argument: the new state is written into the old
  one's buffers, so a chunk holds one copy of the K points' parameters and optimizer
  states, not two. The state passed in is deleted by the call; rebind it
  (``state, stats = run_chunk(state, hparams, data)``) and save or fetch a state before
  passing it to the next chunk, never after.
  """
  vmap = functools.partial(jax.vmap, spmd_axis_name="sweep")
  # Initialised in the same groups as the training: vmapping all K points' inits at once
  # held K points' initialisation temporaries besides their state (K = 16 points of
  # 10^6-row tables: 9.8 GiB resident after init against 6.4 GiB while training).
  init = in_groups(lambda hparams, rngs, _: vmap(trainer.init)(hparams, rngs), group_size)
  named = lambda part: f"{name}/{part}/g{group_size}" if name else ""
  return CompiledSweep(
      init=programs.jit(lambda hparams, rngs: init(hparams, rngs, None), name=named("init")),
      run_chunk=programs.jit(in_groups(vmap(trainer.run_chunk, in_axes=(0, 0, None)),
                                       group_size),
                             donate_argnums=(0,), name=named("run_chunk")),
      train=programs.jit(in_groups(vmap(trainer.train, in_axes=(0, 0, None)), group_size),
                         name=named("train")),
      apply=programs.jit(vmap(trainer.model.apply, in_axes=(0, None)), name=named("apply")),
  )


def apply_in_chunks(apply: Callable, params: Any, batch: Any, *,
                    budget: int = SCORE_BUDGET) -> jax.Array:
  """``apply(params [P], batch)`` (scores ``[P, R, N]``) over chunks of requests.

  A split of R lists of N candidates is scored ``max(1, budget // (P · N))`` requests at a
  time and the chunks are concatenated along R, so the activations of one call stay
  bounded by ``budget`` point-candidates however large the split is (a teacher scoring 20M
  train candidates, or every test list of 5,000). A split within the budget is one call,
  exactly ``apply(params, batch)``; otherwise there are at most two compiled shapes (the
  chunk and the remainder).
  """
  num_points = int(jax.tree.leaves(params)[0].shape[0])
  num_requests, list_size = batch.valid.shape
  chunk = max(1, int(budget) // max(1, num_points * list_size))
  if num_requests <= chunk:
    return apply(params, batch)
  parts = [apply(params, jax.tree.map(lambda x: x[start:start + chunk], batch))
           for start in range(0, num_requests, chunk)]
  return jnp.concatenate(parts, axis=1)


def in_groups(vmapped: Callable, group_size: int) -> Callable:
  """Runs ``vmapped(a [P], b [P], shared)`` as a ``lax.scan`` over groups of points.

  Group ``j`` holds the points ``j, j + G, j + 2G, ...`` (``G = P / group_size`` groups):
  strided, so a device that holds a contiguous block of the sharded point axis keeps
  holding its own points in every group (no communication when ``group_size`` is a
  multiple of the mesh's ``"sweep"`` size). Each point's computation is the same as in
  one big vmap; only how many run side by side changes. ``group_size <= 0`` or
  ``>= P``: ``vmapped`` itself.
  """
  def run(a, b, shared):
    num = jax.tree.leaves(b)[0].shape[0]
    if group_size <= 0 or num <= group_size:
      return vmapped(a, b, shared)
    if num % group_size:
      raise ValueError(f"sweep.group_size: {num} points do not split into groups of "
                       f"{group_size}; pad them with pad_points(points, {group_size})")
    groups = num // group_size
    split = lambda x: jnp.swapaxes(x.reshape(group_size, groups, *x.shape[1:]), 0, 1)
    merge = lambda x: jnp.swapaxes(x, 0, 1).reshape(num, *x.shape[2:])
    _, out = jax.lax.scan(lambda carry, ab: (carry, vmapped(*ab, shared)), None,
                          jax.tree.map(split, (a, b)))
    return jax.tree.map(merge, out)
  return run


AUTO_GROUP_SIZE = -1  # sweep.group_size: choose by backend (resolve_group_size)
CPU_GROUP_SIZE = 1    # the fastest group on a 2-core CPU (benchmarks/sweep_throughput.py)


def resolve_group_size(group_size: int, *, backend: str | None = None,
                       input_pipeline: str = "device") -> int:
  """``sweep.group_size`` with ``-1`` ("auto") resolved for a backend.

  Auto is ``0`` (all points in one vmap) on GPU and TPU, where one wide program fills the
  chip, and :data:`CPU_GROUP_SIZE` on CPU, where one point at a time (a ``lax.scan`` over
  the points, still one program) keeps the activations in cache and the matmuls unbatched:
  on 2 cores 1.5× (16 quickstart points) and 1.26× (8 points of MLP 256-128 over lists of
  400) faster than one vmap, and faster than groups of 4
  (benchmarks/results/sweep_throughput_cpu.md). Groups need the
  device-resident pipeline, so auto is ``0`` with any other ``input_pipeline``. Any other
  value is the config's explicit choice and is returned unchanged.

  Args:
    group_size: ``-1`` (auto), ``0`` (one vmap) or a group size ``g > 0``.
    backend: ``"cpu"``, ``"gpu"``, ``"tpu"``, …; ``None``: ``jax.default_backend()``.
    input_pipeline: the config's ``input_pipeline``.
  """
  if group_size != AUTO_GROUP_SIZE:
    return group_size
  backend = jax.default_backend() if backend is None else backend
  return CPU_GROUP_SIZE if backend == "cpu" and input_pipeline == "device" else 0


def config_group_size(config: Any) -> int:
  """A run config's ``sweep.group_size`` for :func:`group_layout` on this backend.

  Auto (``-1``) becomes ``0`` where it means one vmap (GPU/TPU, or a streamed input) and
  stays ``-1`` where it means groups, so that :func:`group_layout` splits the points into
  even groups; an explicit value is returned as it is, and a config made before the field
  existed gives ``0``.
  """
  group_size = int(config.sweep.get("group_size", 0))
  if group_size == AUTO_GROUP_SIZE and not resolve_group_size(
      group_size, input_pipeline=config.get("input_pipeline", "device")):
    return 0
  return group_size


def group_layout(num_points: int, *, devices: int, group_size: int) -> tuple[int, int]:
  """``(multiple, group)``: pad the points to a multiple of ``multiple`` and run them in
  groups of ``group`` (``0``: all at once).

  Groups apply when ``0 < group_size < num_points``; the group is then rounded up to a
  multiple of the mesh's ``"sweep"`` size (``devices``), so every device holds the same
  number of points of each group, and the points are padded to a multiple of it.
  Otherwise the points are padded to a multiple of ``devices`` only.

  ``group_size=-1`` (auto) is resolved for the default backend (:func:`resolve_group_size`);
  where that gives groups of ``g``, the points are split into ``num_points // g`` equal
  groups instead (``g`` to ``2g − 1`` points each), which pads fewer points: 10 points run
  as 2 groups of 5, not 3 groups of 4 padded to 12.
  """
  auto = group_size == AUTO_GROUP_SIZE
  group_size = resolve_group_size(group_size)
  if auto and group_size > 0:
    group_size = -(-num_points // max(1, num_points // group_size))
  if 0 < group_size < num_points:
    group = -(-group_size // devices) * devices
    if group < num_points:
      return group, group
  return devices, 0


def sweep_mesh(num_points: int | None = None, *, batch_size: int | None = None,
               devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 2-D ``("sweep", "data")`` mesh over all (or the given) devices.

  Sweep points are sharded over ``"sweep"``. With fewer points than devices the spare
  factor becomes ``"data"``: each point's batch of requests is split over it (data
  parallelism, gradients summed across it) instead of the devices computing padded copies.
  ``"sweep"`` is the smallest divisor of the device count that holds ``num_points``, and
  ``"data"`` the rest, reduced to a divisor of ``batch_size`` so that every device gets
  the same number of requests. Without ``num_points`` the mesh is ``(devices, 1)``.
  """
  devices = list(jax.devices() if devices is None else devices)
  n, data = len(devices), 1
  if num_points is not None and num_points < n:
    sweep = min(d for d in range(1, n + 1) if n % d == 0 and d >= num_points)
    data = n // sweep
    if batch_size is not None:
      data = math.gcd(data, int(batch_size))
  return jax.sharding.Mesh(np.array(devices).reshape(n // data, data), ("sweep", "data"))


def batch_sharding(mesh: jax.sharding.Mesh | None) -> Callable[[Any], Any]:
  """The trainer's ``shard_batch``: splits a step's requests over the mesh's ``"data"``
  axis (a sharding constraint, so XLA partitions the step and sums the gradients), or the
  identity when the mesh has no data axis to speak of."""
  if mesh is None or mesh.shape.get("data", 1) == 1:
    return lambda batch: batch
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  return lambda batch: jax.tree.map(
      lambda x: jax.lax.with_sharding_constraint(x, sharding), batch)


def pad_points(points: Sequence[SweepPoint], multiple: int) -> list[SweepPoint]:
  """Repeats the last point so the count divides evenly over ``multiple`` devices.

  The copies are dropped from the results; they only keep the sharded axis even.
  """
  points = list(points)
  extra = (-len(points)) % multiple
  return points + [points[-1]._replace(name=f"{points[-1].name} (pad {i})")
                   for i in range(extra)]


def _put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """``device_put`` that also works when the sharding spans several processes.

  Every process holds the same host value (the config and seed determine it), so each
  one builds just its own shards of the global array.
  """
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(put, tree)


def shard_sweep(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a stacked pytree (leading sweep axis) sharded over the mesh's sweep axis."""
  return _put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("sweep")))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places a pytree (the shared data) whole on every device of the mesh."""
  return _put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def to_host(tree: Any) -> Any:
  """Fetches a pytree of (possibly multi-process, sharded) arrays as numpy on every host."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def get(x):
    if not isinstance(x, jax.Array):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(get(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(get, tree)
