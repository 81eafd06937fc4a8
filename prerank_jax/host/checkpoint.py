"""Orbax checkpoints of a whole sweep: stacked params, optimizer states, keys, position.

A checkpoint holds the :class:`~prerank_jax.train.loop.TrainState` of every sweep point
(typed PRNG keys are stored as raw key data) plus JSON metadata: the number of chunks done
and the per-epoch history so far. The data order needs no extra state: each epoch's
permutation is drawn from the key carried in the state, so restoring the state restores
the order, and a resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from prerank_jax.train.loop import TrainState

log = logging.getLogger(__name__)


def _to_disk(state: TrainState) -> TrainState:
  return state._replace(rng=jax.random.key_data(state.rng))


def _from_disk(state: TrainState, like: TrainState) -> TrainState:
  impl = jax.random.key_impl(like.rng)
  return state._replace(rng=jax.random.wrap_key_data(state.rng, impl=impl))


class SweepCheckpointer:
  """Saves and restores one training phase (``teacher`` or ``students``) of a run.

  Args:
    directory: where the phase's checkpoints live, e.g. ``runs/x/checkpoints/students``.
    max_to_keep: how many recent checkpoints to keep (≥ 2, so a damaged latest one can
      fall back to the previous).
  """

  def __init__(self, directory: Path, *, max_to_keep: int = 3):
    self.directory = Path(directory).resolve()
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max(2, max_to_keep), create=True))

  def save(self, chunk: int, state: TrainState, meta: dict[str, Any]) -> None:
    """Saves the state after ``chunk`` chunks; blocks until it is on disk."""
    self.manager.save(chunk, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_disk(state)),
        meta=ocp.args.JsonSave({**meta, "chunk": chunk})))
    self.manager.wait_until_finished()

  def restore_latest(self, like: TrainState) -> Optional[tuple[TrainState, dict[str, Any]]]:
    """The newest readable checkpoint, or ``None`` if there is none.

    A damaged checkpoint (truncated or corrupt files) is reported and skipped in favour of
    the one before it.

    Args:
      like: a state with the right structure, shapes, dtypes and shardings (e.g. fresh
        from ``init``); restored arrays take its shardings.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_disk(like))
    self.manager.reload()
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # orbax raises many types for damaged files
        log.warning("checkpoint %s/%d is unreadable (%s: %s); falling back to the previous",
                    self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        print(f"warning: checkpoint {self.directory}/{step} is unreadable "
              f"({type(e).__name__}); falling back to the previous one")
        continue
      return _from_disk(restored.state, like), dict(restored.meta)
    return None

  def close(self) -> None:
    self.manager.close()
