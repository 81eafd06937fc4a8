"""Faults a long sweep meets: damaged checkpoints, a full disk, an unwritable directory,
a locked run directory, a killed ``--overwrite``. Each test fails on the code before
issue 12 (see the README's "Reliability" section)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from prerank_jax.host.checkpoint import MANIFEST, CheckpointError, SweepCheckpointer
from prerank_jax.train.loop import TrainState


def _state(seed: int, size: int = 6) -> TrainState:
  w = jnp.arange(size, dtype=jnp.float32) * (seed + 1)
  return TrainState(params={"w": w}, opt_state={"m": w * 0.5}, rng=jax.random.key(seed),
                    step=jnp.asarray(seed, jnp.int32), diverged=jnp.asarray(False))


def _truncate(step_dir: Path) -> None:
  for f in (step_dir / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def _equal(a: TrainState, b: TrainState) -> bool:
  same = jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))),
                      a._replace(rng=jax.random.key_data(a.rng)),
                      b._replace(rng=jax.random.key_data(b.rng)))
  return all(jax.tree.leaves(same))


def _saved(directory: Path, steps) -> SweepCheckpointer:
  ckpt = SweepCheckpointer(directory)
  for s in steps:
    ckpt.save(s, _state(s), {"history": []})
  return ckpt


def test_a_damaged_latest_step_is_moved_aside_and_saved_again(tmp_path, capsys):
  ckpt = _saved(tmp_path / "c", (1, 2))
  _truncate(tmp_path / "c" / "2")
  state, meta = ckpt.restore_latest(_state(0))
  assert meta["chunk"] == 1 and _equal(state, _state(1))
  out = capsys.readouterr().out
  assert "unreadable" in out and "moved the damaged" in out
  assert (tmp_path / "c" / "damaged-2").is_dir()
  # Retraining chunk 2 must be able to save it again (Orbax skips steps <= the latest).
  ckpt.save(2, _state(7), {"history": []})
  ckpt.close()
  state, meta = SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))
  assert meta["chunk"] == 2 and _equal(state, _state(7))


def test_a_restore_error_that_is_not_damage_propagates(tmp_path):
  ckpt = _saved(tmp_path / "c", (1,))
  other = _state(0)._replace(params={"w": jnp.zeros(6), "extra": jnp.zeros(2)})
  with pytest.raises(ValueError, match="tree structures do not match"):
    ckpt.restore_latest(other)
  assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["1"]


def test_every_checkpoint_unreadable_is_an_error_not_a_restart(tmp_path):
  ckpt = _saved(tmp_path / "c", (1, 2))
  for s in (1, 2):
    _truncate(tmp_path / "c" / str(s))
  with pytest.raises(CheckpointError, match=r"every checkpoint .* is unreadable"):
    ckpt.restore_latest(_state(0))
  assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["1", "2"]  # nothing moved


def test_a_step_without_manifest_counts_as_damaged_only_if_unreadable(tmp_path):
  ckpt = _saved(tmp_path / "c", (1, 2))
  (tmp_path / "c" / "2" / MANIFEST).unlink()  # killed between Orbax's commit and ours
  _, meta = ckpt.restore_latest(_state(0))
  assert meta["chunk"] == 2
  _truncate(tmp_path / "c" / "2")
  _, meta = ckpt.restore_latest(_state(0))
  assert meta["chunk"] == 1


def test_disk_full_during_a_save_keeps_the_previous_step_and_leaves_no_temporary(
    tmp_path, monkeypatch):
  ckpt = _saved(tmp_path / "c", (1,))
  before = {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()}

  async def full(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full)
  with pytest.raises(CheckpointError, match=r"could not write .*No space left.*ENOSPC.*"
                                            r"previous checkpoint \(1\) is intact"):
    ckpt.save(2, _state(2), {"history": []})
  monkeypatch.undo()
  assert {p: p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file()} == before
  state, meta = SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))
  assert meta["chunk"] == 1 and _equal(state, _state(1))


def test_an_unwritable_checkpoint_directory_is_a_clear_error(tmp_path):
  (tmp_path / "run").write_text("a file where the run directory should be")
  with pytest.raises(CheckpointError, match="cannot create .*run/checkpoints.*writable"):
    SweepCheckpointer(tmp_path / "run" / "checkpoints" / "student")
