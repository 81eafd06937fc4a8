"""``jax.jit`` with an optional store of traced programs, so a repeated run skips tracing.

JAX's persistent compilation cache saves the *compilation* of a program, but every process
still traces the Python function and lowers it to StableHLO before it can look the program
up: on a 2-core CPU that is about 3 s of a warm quickstart's 11 s. :func:`jit` is
``jax.jit`` unless the host has installed a store (:func:`install`; the command line does,
beside the compilation cache, ``prerank_jax/host/compile_cache.py``). With a store, the
first call of a program for given argument shapes exports it (``jax.export``: traced and
lowered once, as before) and keeps the serialized program in the store; a later process
whose key matches calls the stored program and traces nothing. The key is the store's
context (the host sets it: the package's source files, the versions of the libraries
whose code is traced, the data's identity), the program's name (which must say what the
function closes over, e.g. the config it was built from), the JAX settings that change a
trace (x64, PRNG, promotion, precision), the backend, its static arguments, and the
structure, shapes, dtypes and weak types of its arguments. Any other call (no store,
several devices, ``jax_disable_jit`` or NaN/Inf debugging on, an argument that is not an
array) is exactly ``jax.jit``'s.

This module does no I/O: the store (an object with ``context``, ``load(key)`` and
``save(key, blob)``) belongs to the host.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any, Callable, Protocol, Sequence

import jax
import numpy as np

__all__ = ["Store", "install", "installed", "jit"]

FORMAT = 1  # the layout of a stored blob; part of every key


class Store(Protocol):
  """Where stored programs live (the host's; see ``prerank_jax.host.compile_cache``)."""

  context: str  # what the programs depend on besides their arguments; "" = do not store

  def load(self, key: str) -> bytes | None: ...

  def save(self, key: str, blob: bytes) -> None: ...


_store: Store | None = None


def install(store: Store | None) -> Store | None:
  """Makes ``store`` the process's program store (``None``: none); returns the previous."""
  global _store
  previous, _store = _store, store
  return previous


def installed() -> Store | None:
  """The installed store, or ``None``."""
  return _store


def _aval(leaf: Any) -> tuple[tuple[int, ...], Any, bool] | None:
  """``(shape, dtype, weak_type)`` of an array on one device; ``None`` otherwise."""
  if isinstance(leaf, jax.Array):
    if len(leaf.sharding.device_set) != 1:
      return None
    return tuple(leaf.shape), leaf.dtype, bool(jax.typeof(leaf).weak_type)
  if isinstance(leaf, np.ndarray):
    return tuple(leaf.shape), leaf.dtype, False
  return None


# JAX settings that change what a function traces to (dtypes, PRNG, promotion, precision):
# part of every key, so a stored program is never used under other settings.
_TRACE_SETTINGS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl",
                   "jax_threefry_partitionable", "jax_numpy_dtype_promotion",
                   "jax_numpy_rank_promotion", "jax_softmax_custom_jvp",
                   "jax_enable_custom_prng", "jax_random_seed_offset",
                   "jax_use_shardy_partitioner")


def _trace_settings() -> tuple:
  return tuple((name, str(getattr(jax.config, name, None))) for name in _TRACE_SETTINGS)


def _storable() -> bool:
  """Whether calls may go through the store now: one device, and jit neither disabled nor
  re-running operations one by one to find a NaN."""
  return (jax.device_count() == 1 and not jax.config.jax_disable_jit
          and not jax.config.jax_debug_nans and not jax.config.jax_debug_infs)


class _Program:
  """A deserialized program: call it with the flat argument leaves."""

  def __init__(self, exported: Any, out_tree: Any, donate: Sequence[int]):
    self.out_tree = out_tree
    self.call = jax.jit(exported.call, donate_argnums=tuple(donate))


class StoredJit:
  """``jax.jit(fn, ...)`` whose programs can be kept in the installed store (module doc)."""

  def __init__(self, fn: Callable, *, name: str, static_argnames: Sequence[str] = (),
               donate_argnums: Sequence[int] = ()):
    self.name = name
    self.static_argnames = tuple(static_argnames)
    self.donate_argnums = tuple(donate_argnums)
    self.jitted = jax.jit(fn, static_argnames=self.static_argnames or None,
                          donate_argnums=self.donate_argnums)
    self._programs: dict[str, _Program] = {}
    self.__wrapped__ = fn
    self.__doc__ = getattr(fn, "__doc__", None)

  def __getattr__(self, attr: str) -> Any:
    # jax.jit's other methods (lower, trace, eval_shape, _cache_size, ...): the plain jit's.
    jitted = self.__dict__.get("jitted")
    if jitted is None:
      raise AttributeError(attr)
    return getattr(jitted, attr)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    store = _store
    if not self.name or store is None or not store.context or not _storable():
      return self.jitted(*args, **kwargs)
    static = {k: kwargs.pop(k) for k in self.static_argnames if k in kwargs}
    leaves, in_tree = jax.tree.flatten((args, kwargs))
    avals = [_aval(leaf) for leaf in leaves]
    if any(a is None for a in avals):  # a Python scalar, a sharded array: jit as usual
      return self.jitted(*args, **kwargs, **static)
    # The leaves of the donated positional arguments, in flat order.
    donate, start = [], 0
    for i, arg in enumerate(args):
      count = len(jax.tree.leaves(arg))
      if i in self.donate_argnums:
        donate.extend(range(start, start + count))
      start += count
    key = hashlib.sha256(repr((FORMAT, store.context, jax.__version__, _trace_settings(),
                               jax.default_backend(), self.name, sorted(static.items()),
                               str(in_tree), [(shape, str(dtype), weak)
                                              for shape, dtype, weak in avals],
                               donate)).encode()).hexdigest()
    program = self._programs.get(key)
    if program is None:
      program = self._load(store, key, donate)
    if program is None:
      program = self._export(store, key, leaves, in_tree, avals, static, donate)
    self._programs[key] = program
    return jax.tree.unflatten(program.out_tree, program.call(*leaves))

  def _load(self, store: Store, key: str, donate: Sequence[int]) -> _Program | None:
    blob = store.load(key)
    if blob is None:
      return None
    try:
      stored = pickle.loads(blob)
      if stored.get("format") != FORMAT:
        return None
      return _Program(jax.export.deserialize(stored["exported"]), stored["out_tree"],
                      donate)
    except Exception:  # a damaged or foreign entry: traced again and replaced
      return None

  def _export(self, store: Store, key: str, leaves: list, in_tree: Any, avals: list,
              static: dict, donate: Sequence[int]) -> _Program:
    out_tree = []

    def flat(*flat_leaves):
      args, kwargs = jax.tree.unflatten(in_tree, flat_leaves)
      out_leaves, tree = jax.tree.flatten(self.jitted(*args, **kwargs, **static))
      out_tree.append(tree)
      return out_leaves

    specs = [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak)
             for shape, dtype, weak in avals]
    serialized = jax.export.export(jax.jit(flat))(*specs).serialize()
    store.save(key, pickle.dumps({"format": FORMAT, "exported": serialized,
                                  "out_tree": out_tree[0]}))
    # Called through its serialized form, as a later process will: both lower to the same
    # module, so this run's compilation is the one the compilation cache keeps for them.
    return _Program(jax.export.deserialize(serialized), out_tree[0], donate)


def jit(fn: Callable | None = None, *, name: str, static_argnames: Sequence[str] = (),
        donate_argnums: Sequence[int] = ()) -> Any:
  """``jax.jit`` whose programs a host-installed store keeps across processes.

  ``name`` identifies the program in the store's keys: it must say everything the function
  closes over (e.g. the config it was built from); ``""`` never stores. Usable as
  ``jit(fn, name=...)`` or as a decorator ``@functools.partial(jit, name=...)``.
  """
  if fn is None:
    return lambda f: StoredJit(f, name=name, static_argnames=static_argnames,
                               donate_argnums=donate_argnums)
  return StoredJit(fn, name=name, static_argnames=static_argnames,
                   donate_argnums=donate_argnums)
