"""Where a sweep is driven: a phase (the teacher seeds, or a student grid) trained as one
vmapped program in chunks of epochs, with progress, W&B logging and Orbax checkpoints
between chunks; and a finished phase restored from its checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from prerank_jax.batch import feature_sizes
from prerank_jax.host.checkpoint import SweepCheckpointer
from prerank_jax.host.compile_cache import program_name
from prerank_jax.host.identity import data_identity, teacher_identity
from prerank_jax.host.plan import teacher_points
from prerank_jax.host.processes import is_main
from prerank_jax.host.rundir import run_id
from prerank_jax.host.tracking import Tracker
from prerank_jax.train.loop import SweepData, Trainer, TrainState, make_train
from prerank_jax.train.sweep import (CompiledSweep, SweepPoint, batch_sharding,
                                     compile_sweep, config_group_size, group_layout,
                                     pad_points, replicate,
                                     shard_sweep, stack_points, sweep_mesh, to_host)


class Phase(NamedTuple):
  """A trained sweep: its points, trainer, compiled functions, final state and history."""

  points: list[SweepPoint]
  trainer: Trainer
  compiled: CompiledSweep
  state: TrainState            # stacked over the real points (padding dropped)
  history: dict[str, np.ndarray]   # {metric: [P, epochs]}


def train_phase(config: ml_collections.ConfigDict, role: str, points: list[SweepPoint],
                data: SweepData, *, run_dir: Path, show: bool,
                tag: str = "") -> tuple[Phase, Tracker]:
  """Trains ``points`` as one vmapped program, sharded over all devices, resumably.

  Checkpoints go to ``<run_dir>/checkpoints/<role><tag>`` every ``config.checkpoint_every``
  chunks and after the last one; with ``config.resume`` the newest readable one is
  continued, bit-identically to an uninterrupted run. Returns the phase and its open W&B
  tracker (finished by the caller once the evaluation is known).
  """
  # Points over the mesh's "sweep" axis; spare devices split each step's batch ("data").
  mesh = sweep_mesh(len(points), batch_size=config[role].batch_size)
  trainer = make_train(config, role=role, feature_sizes=feature_sizes(data.train.take(slice(0, 1))),
                       num_train_requests=data.train.num_requests,
                       shard_batch=batch_sharding(mesh))
  multiple, group = group_layout(len(points), devices=mesh.shape["sweep"],
                                 group_size=config_group_size(config))
  compiled = compile_sweep(trainer, group_size=group,
                           name=program_name(config, f"{role}{tag}"))
  padded = pad_points(points, multiple)
  hparams, rngs = shard_sweep(stack_points(padded), mesh)
  feed = None
  if config.get("input_pipeline", "device") == "grain":  # stream train steps (issue 6)
    from prerank_jax.train.host_fed import GrainFeed
    feed = GrainFeed(config, role, trainer, data.train, mesh)
    data = data._replace(train=data.train.take(slice(0, 1)))  # only valid goes on device
  data = replicate(data, mesh)
  state = compiled.init(hparams, rngs)
  if feed is not None:
    feed.start(state)
  role_cfg = config[role]
  num_chunks = role_cfg.num_epochs // role_cfg.epochs_per_chunk
  steps_per_chunk = trainer.steps_per_epoch * role_cfg.epochs_per_chunk

  checkpointer = SweepCheckpointer(run_dir / "checkpoints" / f"{role}{tag}")
  start, history = 0, []
  if config.resume:
    restored = checkpointer.restore_latest(state)
    if restored is not None:
      state, meta = restored
      if feed is not None:  # the grain iterator's position, saved with the state
        feed.resume(meta.get("input"), step=meta["chunk"] * steps_per_chunk)
      start, history = meta["chunk"], [
          {k: np.asarray(v) for k, v in _history_names(config, h).items()}
          for h in meta["history"]]
  tracker = Tracker(config.wandb.mode if is_main() else "disabled",
                    project=config.wandb.project, group=config.name, job_type=role,
                    run_dir=run_dir,
                    config=json.loads(config.to_json_best_effort()),
                    points=[(p.name, p.hparams) for p in points],
                    phase=f"{role}{tag}", run_id=run_id(run_dir))
  if history:  # resumed: W&B gets the restored epochs an earlier process did not log
    tracker.log_epochs({k: np.concatenate([h[k] for h in history], axis=1)
                        for k in history[0]}, first_epoch=0)
  with tqdm(total=num_chunks * steps_per_chunk * len(points), initial=start * steps_per_chunk
            * len(points), desc=f"{role}{tag} ({len(points)} pt)", unit="pt·step",
            disable=not (show and is_main()), dynamic_ncols=True) as bar:
    for chunk in range(start, num_chunks):
      state, stats = (compiled if feed is None else feed).run_chunk(state, hparams, data)
      # Copies, not views: on CPU the fetched arrays alias the device buffers, and a kept
      # slice would keep each chunk's whole buffer (~7 kB a chunk) alive (issue 20 §5).
      stats = {k: np.array(np.asarray(v)[:len(points)]) for k, v in to_host(stats).items()}
      history.append(stats)
      tracker.log_epochs(stats, first_epoch=chunk * role_cfg.epochs_per_chunk)
      bar.update(steps_per_chunk * len(points))
      bar.set_postfix(loss=f"{np.nanmean(stats['loss'][:, -1]):.4f}")
      done = chunk + 1
      if done == num_chunks or (config.checkpoint_every and done % config.checkpoint_every == 0):
        # The history goes to side segments, not into the step: a step's size must not
        # grow with the epoch count (issue 20 §5).
        checkpointer.save(done, state, {
            "points": [p.name for p in points],
            **({"input": feed.get_state()} if feed is not None else {})}, history=history)
  checkpointer.close()
  merged = {k: np.concatenate([h[k] for h in history], axis=1) for k in history[0]}
  final = jax.tree.map(lambda x: x[:len(points)], to_host(state))
  return Phase(points, trainer, compiled, final, merged), tracker


def _history_names(config: ml_collections.ConfigDict, metrics: dict) -> dict:
  """A checkpoint's history segment in the current metric names (a checkpoint written
  before the history used results names: ``valid_ndcg_true`` → ``valid/ndcg@10``, ...)."""
  from prerank_jax.analysis.load import normalize_history

  return normalize_history(metrics, k=config.eval.k, keep_ratio=config.eval.monitor_keep_ratio)


def restore_phase(config: ml_collections.ConfigDict, role: str, points: list[SweepPoint],
                  data: SweepData, source: Path, *, tag: str = "") -> Phase:
  """Restores a *finished* training phase from ``<source>/checkpoints/<role><tag>``."""
  trainer = make_train(config, role=role, feature_sizes=feature_sizes(data.train.take(slice(0, 1))),
                       num_train_requests=data.train.num_requests)
  compiled = compile_sweep(trainer)
  like = compiled.init(*stack_points(points))
  restored = SweepCheckpointer(source / "checkpoints" / f"{role}{tag}").restore_latest(like)
  num_chunks = config[role].num_epochs // config[role].epochs_per_chunk
  if restored is None or restored[1]["chunk"] != num_chunks:
    done = 0 if restored is None else restored[1]["chunk"]
    raise FileNotFoundError(f"{source}: the {role} phase is not finished ({done} of "
                            f"{num_chunks} chunks checkpointed); continue it with "
                            "--config.resume=True")
  state, meta = restored
  segments = [_history_names(config, h) for h in meta["history"]]
  history = {k: np.concatenate([np.asarray(h[k]) for h in segments], axis=1)
             for k in segments[0]}
  return Phase(points, trainer, compiled, to_host(state), history)


def restore_teacher(config: ml_collections.ConfigDict, data: SweepData,
                    source: Path) -> Phase:
  """Loads the teacher of an earlier run, refusing one trained on other data or config."""
  identity_file = source / "checkpoints" / "teacher" / "identity.json"
  if not identity_file.exists():
    raise FileNotFoundError(f"teacher.restore_from: {source} holds no finished teacher "
                            f"({identity_file} is missing)")
  saved = json.loads(identity_file.read_text())
  if saved != {"teacher": teacher_identity(config), "data": data_identity(config)}:
    raise ValueError(f"teacher.restore_from: the teacher in {source} was trained on other "
                     "data or with another teacher config (identity mismatch); refusing it")
  return restore_phase(config, "teacher", teacher_points(config), data, source)
