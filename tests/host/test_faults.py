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


def _chunk(c: int) -> dict:
  return {"loss": np.full((2, 1), float(c), np.float32), "ndcg": np.full((2, 1), c / 10.0)}


def test_history_lives_beside_the_steps_and_is_restored_whole(tmp_path, capsys):
  """Issue 20 §5: each save writes only the chunks since the previous save (a segment
  under history/) and a step of bounded size; a restore returns chunks 1..step, also
  after a damaged latest step fell back to the one before, and a step whose history chain
  is broken counts as unreadable."""
  from prerank_jax.host.checkpoint import HISTORY
  ckpt = SweepCheckpointer(tmp_path / "c")
  history = []
  for c in range(1, 7):
    history.append(_chunk(c))
    if c % 2 == 0:
      ckpt.save(c, _state(c), {"points": ["a", "b"]}, history=history)
  ckpt.close()
  segments = sorted((tmp_path / "c" / HISTORY).iterdir(), key=lambda p: int(p.stem))
  assert [p.name for p in segments] == ["2.json", "4.json", "6.json"]
  assert [json.loads(p.read_text())["first"] for p in segments] == [1, 3, 5]
  want = [{k: v.tolist() for k, v in h.items()} for h in history]
  state, meta = SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))
  assert meta["chunk"] == 6 and meta["history"] == want and "history" not in json.loads(
      (tmp_path / "c" / "6" / "meta" / "metadata").read_text())
  # Damaged latest step: step 4 and chunks 1..4; then chunks 5..6 are retrained and
  # saved again as one segment onto it.
  _truncate(tmp_path / "c" / "6")
  ckpt = SweepCheckpointer(tmp_path / "c")
  state, meta = ckpt.restore_latest(_state(0))
  assert meta["chunk"] == 4 and meta["history"] == want[:4]
  ckpt.save(6, _state(6), {}, history=history)
  ckpt.close()
  assert SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))[1]["history"] == want
  # A missing segment breaks the chain of every later step: they count as unreadable,
  # and the restore falls back to the newest step before it.
  (tmp_path / "c" / HISTORY / "4.json").unlink()
  capsys.readouterr()
  state, meta = SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))
  assert meta["chunk"] == 2 and meta["history"] == want[:2] and _equal(state, _state(2))
  out = capsys.readouterr().out
  assert "c/6 is unreadable (history segment" in out and "c/4 is unreadable" in out


def test_a_step_with_its_history_inline_is_still_restored(tmp_path):
  """A checkpoint of the earlier format (history inside the step's metadata) restores,
  and the next saves chain their segments onto it."""
  ckpt = SweepCheckpointer(tmp_path / "c")
  history = [{k: v.tolist() for k, v in _chunk(c).items()} for c in (1, 2, 3)]
  ckpt.save(2, _state(2), {"history": history[:2]})
  ckpt.close()
  ckpt = SweepCheckpointer(tmp_path / "c")
  state, meta = ckpt.restore_latest(_state(0))
  assert meta["chunk"] == 2 and meta["history"] == history[:2]
  ckpt.save(3, _state(3), {}, history=history)
  ckpt.close()
  assert SweepCheckpointer(tmp_path / "c").restore_latest(_state(0))[1]["history"] == history


# --- run directories: lock, staging for --overwrite, atomic writes --------------------

import socket
import subprocess
import sys

from prerank_jax.host import runner, rundir
from prerank_jax.host.rundir import RunDirError, RunDirLocked


def _tree(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
          for p in sorted(root.rglob("*"))} if root.exists() else {}


def _old_run(config) -> Path:
  """A finished-looking run directory of ``config`` (its config.json and a result)."""
  run_dir = rundir.prepare_run_dir(config, create=True)
  (run_dir / "results.csv").write_text("model,ndcg@10\nold,0.5\n")
  return run_dir


class _Stop(Exception):
  """Stands for any failure in the middle of training."""


def _fail_training(monkeypatch):
  def fail(*args, **kwargs):
    raise _Stop("training failed")
  monkeypatch.setattr(runner, "train_phase", fail)


def test_a_failed_overwrite_keeps_the_previous_result(smoke_config, monkeypatch):
  old = _old_run(smoke_config)
  before = _tree(old.parent)
  smoke_config.overwrite = True
  _fail_training(monkeypatch)
  with pytest.raises(_Stop):
    runner.run(smoke_config)
  # The old directory is as it was; no staging directory, no lock left behind.
  assert _tree(old.parent) == before


def test_an_overwrite_trains_in_staging_until_it_finished(smoke_config, monkeypatch):
  old = _old_run(smoke_config)
  smoke_config.overwrite = True
  seen = {}

  def fail(config, role, points, data, *, run_dir, **kwargs):
    seen["run_dir"] = run_dir
    seen["old_results"] = (old / "results.csv").read_text()
    seen["lock"] = json.loads(rundir.lock_path(old).read_text())
    raise _Stop("stop here")

  monkeypatch.setattr(runner, "train_phase", fail)
  with pytest.raises(_Stop):
    runner.run(smoke_config)
  assert seen["run_dir"] == rundir.staging_path(old)
  assert seen["old_results"].startswith("model")  # the old result exists meanwhile
  assert seen["lock"]["pid"] == os.getpid()


def test_commit_swaps_the_staging_directory_in(smoke_config):
  old = _old_run(smoke_config)
  smoke_config.overwrite = True
  working = rundir.prepare_run_dir(smoke_config, create=True)
  assert working == rundir.staging_path(old) and (old / "results.csv").exists()
  (working / "results.csv").write_text("new\n")
  assert rundir.commit_run_dir(smoke_config, working) == old
  assert (old / "results.csv").read_text() == "new\n"
  assert sorted(p.name for p in old.parent.iterdir()) == [old.name]


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _killed_mid_swap(config, *, new_complete: bool, both_renames: bool = False,
                     pid: int | None = None) -> tuple[Path, Path]:
  """The state a SIGKILL in commit_run_dir leaves: the old run renamed to
  ``.<name>.replaced-<pid>``, the staging directory (finished or not) not yet renamed in,
  or (``both_renames``) renamed in with the old one not yet deleted."""
  old = _old_run(config)
  config.overwrite = True
  staging = rundir.prepare_run_dir(config, create=True)
  if new_complete:
    (staging / "results.csv").write_text("model,ndcg@10\nnew,0.6\n")
  replaced = old.parent / f".{old.name}.replaced-{pid or _dead_pid()}"
  os.replace(old, replaced)
  if both_renames:
    os.replace(staging, old)
  config.overwrite = False
  return old, replaced


def test_a_swap_killed_between_its_renames_keeps_the_finished_new_run(smoke_config,
                                                                        monkeypatch, capsys):
  """Issue 20 §5: the next start (here a --resume, stopped once the directory is
  prepared) moves the complete new run into place, then removes the previous one."""
  run_dir, replaced = _killed_mid_swap(smoke_config, new_complete=True)
  assert not run_dir.exists()
  smoke_config.resume = True
  _fail_training(monkeypatch)
  with pytest.raises(_Stop):
    runner.run(smoke_config)
  out = capsys.readouterr().out
  assert "killed between its two renames" in out and "moved it into place" in out
  assert (run_dir / "results.csv").read_text().endswith("new,0.6\n")
  assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]


def test_a_swap_killed_before_the_new_run_was_complete_puts_the_old_one_back(smoke_config,
                                                                              capsys):
  run_dir, replaced = _killed_mid_swap(smoke_config, new_complete=False)
  before = _tree(replaced)
  smoke_config.resume = True
  assert rundir.prepare_run_dir(smoke_config, create=False) == run_dir
  assert "put the previous result back" in capsys.readouterr().out
  assert _tree(run_dir) == before and not replaced.exists()


def test_a_swap_killed_while_deleting_the_old_run_finishes_the_deletion(smoke_config,
                                                                         capsys):
  run_dir, replaced = _killed_mid_swap(smoke_config, new_complete=True, both_renames=True)
  assert rundir.recover_interrupted_swap(run_dir) and not replaced.exists()
  assert "killed after its swap" in capsys.readouterr().out
  assert (run_dir / "results.csv").read_text().endswith("new,0.6\n")
  assert rundir.recover_interrupted_swap(run_dir) == []  # nothing left to do


def test_a_swap_of_a_live_process_is_left_alone(smoke_config, live_pid):
  run_dir, replaced = _killed_mid_swap(smoke_config, new_complete=True, pid=live_pid)
  before = _tree(run_dir.parent)
  assert rundir.recover_interrupted_swap(run_dir) == []
  assert _tree(run_dir.parent) == before


@pytest.fixture
def live_pid():
  proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  yield proc.pid
  proc.kill()
  proc.wait()


@pytest.mark.parametrize("flag", ["resume", "overwrite"])
def test_a_run_directory_in_use_is_refused(smoke_config, live_pid, flag):
  old = _old_run(smoke_config)
  rundir.lock_path(old).write_text(json.dumps({"pid": live_pid,
                                               "host": socket.gethostname()}))
  before = _tree(old.parent)
  setattr(smoke_config, flag, True)
  with pytest.raises(RunDirLocked, match=rf"in use by process {live_pid}"):
    runner.run(smoke_config)
  assert _tree(old.parent) == before  # the other run's lock and files untouched


def test_a_stale_lock_is_taken_over_with_a_message(smoke_config, monkeypatch, capsys):
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()  # a pid that no longer runs
  lock = rundir.lock_path(Path(smoke_config.workdir) / smoke_config.name)
  lock.parent.mkdir(parents=True)
  lock.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname()}))
  _fail_training(monkeypatch)
  with pytest.raises(_Stop):
    runner.run(smoke_config)
  assert f"stale lock of {lock.parent / smoke_config.name} left by process {proc.pid}" \
      in capsys.readouterr().out
  assert not lock.exists()


def test_a_lock_of_another_host_is_refused(tmp_path):
  run_dir = tmp_path / "x"
  rundir.lock_path(run_dir).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
  with pytest.raises(RunDirLocked, match="on host 'elsewhere'.*delete the lock"):
    rundir.acquire_lock(run_dir)


def test_an_unwritable_work_directory_is_a_clear_error(smoke_config):
  Path(smoke_config.workdir).parent.mkdir(parents=True, exist_ok=True)
  Path(smoke_config.workdir).write_text("a file, not a directory")
  with pytest.raises(RunDirError, match=r"cannot write .*Not a directory"):
    runner.run(smoke_config)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path,
                                                                         monkeypatch):
  target = tmp_path / "results.csv"
  target.write_text("old\n")

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(RunDirError, match=r"results.csv: No space left.*ENOSPC"):
    rundir.write_text_atomic(target, "new\n")
  monkeypatch.undo()
  assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
  assert target.read_text() == "old\n"


# --- a point whose parameters (not its loss or gradients) become non-finite -------------

def test_non_finite_parameters_mark_the_point_diverged_and_keep_the_last_finite(tiny_splits):
  """With learning rate inf, the first step's loss and gradients are finite but the
  updated parameters are not: the point must be marked diverged and keep its initial
  parameters, while a normal point in the same vmapped step is unaffected."""
  from prerank_jax.batch import feature_sizes
  from prerank_jax.train import make_train
  from prerank_jax.train.sweep import grid_points, stack_points
  from tests.conftest import load_config

  config = load_config()
  train = tiny_splits["train"]
  rng = np.random.default_rng(0)
  batch = train.take(slice(0, config.student.batch_size))
  batch = batch._replace(teacher_scores=rng.normal(size=batch.label.shape + (1,))
                         .astype(np.float32))
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  points = grid_points({"temperature": (2.0,), "alpha": (0.5,), "learning_rate": (3e-3,)},
                       seed=0)
  hparams, rngs = stack_points(points + points)
  init = jax.vmap(trainer.init)(hparams, rngs)
  lr = init.opt_state.hyperparams["learning_rate"].at[1].set(jnp.inf)
  init.opt_state.hyperparams["learning_rate"] = lr
  state, loss = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, 0)))(init, batch, hparams)
  # Both points start from the same parameters (same seed) on the same batch, so point 1's
  # loss and gradients equal point 0's, which are finite; only its update is not.
  for leaf in jax.tree.leaves(init.params):
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
  assert np.isfinite(float(loss[0])) and np.isnan(float(loss[1]))
  assert not bool(state.diverged[0]) and bool(state.diverged[1])
  for new, old in zip(jax.tree.leaves(state.params), jax.tree.leaves(init.params)):
    assert np.all(np.isfinite(np.asarray(new)))
    np.testing.assert_array_equal(np.asarray(new[1]), np.asarray(old[1]))  # frozen
    assert not np.array_equal(np.asarray(new[0]), np.asarray(old[0]))  # trained on


# --- the teacher-score cache's key file ------------------------------------------------

def test_two_savers_of_the_teacher_cache_do_not_drop_each_others_split(tmp_path,
                                                                        monkeypatch):
  """Saver B saves another split right after saver A first reads key.json. A
  read-modify-write from that first read (the code before issue 12) loses B's split; now A
  re-reads key.json under an exclusive lock before it writes, so both splits are kept."""
  import threading
  import time

  from prerank_jax.data import teacher_cache
  from prerank_jax.data.teacher_cache import TeacherScoreCache

  cache = lambda: TeacherScoreCache(tmp_path / "c", dataset="d/1.0.0", teacher="abc")
  scores = np.ones((2, 3, 1), np.float32)
  original = TeacherScoreCache._stored
  other: list[threading.Thread] = []

  def stored_then_let_b_in(self):
    value = original(self)
    if not other and threading.current_thread() is threading.main_thread():
      other.append(threading.Thread(target=lambda: cache().save("valid", scores * 2)))
      other[0].start()
      time.sleep(1.0)  # B runs now, unless it waits for A's lock
    return value

  monkeypatch.setattr(teacher_cache.TeacherScoreCache, "_stored", stored_then_let_b_in)
  cache().save("train", scores)
  other[0].join(timeout=60)
  monkeypatch.undo()
  saved = json.loads((tmp_path / "c" / "key.json").read_text())
  assert sorted(saved["splits"]) == ["train", "valid"]
  assert not [p.name for p in (tmp_path / "c").iterdir() if "tmp" in p.name]
  np.testing.assert_array_equal(cache().load("valid", num_requests=2, list_size=3),
                                scores * 2)
