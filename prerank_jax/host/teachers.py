"""The teacher ensemble on the host: the runs whose teachers join (``teacher.ensemble_with``),
their scores added to every split once (through the teacher-score cache), and the combined
teacher the students were distilled from."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prerank_jax import checks, programs
from prerank_jax.batch import Batch
from prerank_jax.data.tfds_base import RecordSplit, validate_split
from prerank_jax.host.identity import data_identity
from prerank_jax.host.processes import barrier, is_main
from prerank_jax.host.rundir import load_run_config
from prerank_jax.host.sweep_driver import Phase, restore_teacher
from prerank_jax.losses.ensemble import ENSEMBLES, teacher_present
from prerank_jax.train.loop import SweepData
from prerank_jax.train.sweep import apply_in_chunks

#: Requests a train split left on disk is read and scored at a time.
SCORE_BLOCK = 4096


def score_splits(members: list[Phase], splits: dict[str, Batch], builder: Any = None
                 ) -> tuple[dict[str, Batch], dict[str, str]]:
  """Adds the teachers' scores ``[R, N, M]`` to every split, computed once.

  ``members`` are trained teacher phases (this run's, then those of
  ``teacher.ensemble_with``); their points are stacked along M in that order. For a
  dataset on disk (``builder`` given) the scores go through the teacher-score cache next
  to the dataset, keyed by its name and version and a hash of every teacher's parameters:
  a later sweep with the same teachers reads them instead of scoring again.
  Returns ``(scored splits, {split: "computed" | "cache"})``.
  """
  from prerank_jax.data.teacher_cache import score_splits_cached

  def scores(batch):  # [R, N, M]
    return jnp.concatenate(
        [jnp.moveaxis(apply_in_chunks(m.compiled.apply, m.state.params, batch), 0, -1)
         for m in members], axis=-1)

  def compute(todo):
    # A train split left on disk is scored a block at a time into host memory.
    return {name: batch._replace(teacher_scores=np.concatenate(
        [np.asarray(scores(block)) for _, block in batch.blocks(SCORE_BLOCK)])
        if isinstance(batch, RecordSplit) else scores(batch)) for name, batch in todo.items()}

  params = members[0].state.params if len(members) == 1 else [m.state.params for m in members]
  if builder is not None and not is_main():  # one process writes the cache
    barrier("teacher_cache")
  scored, how = score_splits_cached(builder, params, splits, compute)
  if builder is not None and is_main():
    barrier("teacher_cache")
  return {name: validate_split(batch if isinstance(batch, RecordSplit) else batch._replace(
      teacher_scores=jnp.asarray(batch.teacher_scores)), name=name, require_teacher=True)
          for name, batch in scored.items()}, how


def logged_splits(splits: dict[str, Batch]) -> tuple[dict[str, Batch], dict[str, str]]:
  """A logged teacher's splits (``teacher.model.name="logged"``): the loader already put the
  ranker's scores in ``teacher_scores`` (and ``teacher_mask``); nothing is trained, scored
  or cached. Returns ``(splits, {split: "logged"})`` as :func:`score_splits` does."""
  return ({name: validate_split(batch, name=name, require_teacher=True)
           for name, batch in splits.items()}, {name: "logged" for name in splits})


def ensemble_sources(config: ml_collections.ConfigDict
                     ) -> list[tuple[Path, ml_collections.ConfigDict]]:
  """``(teacher checkpoint run dir, its config)`` per run of ``teacher.ensemble_with``.

  Checked before anything is written: each must be a run over the same data with a
  finished teacher, and ``student.loss.ensemble_weights`` (if set) must have one weight
  per teacher of the whole ensemble.
  """
  sources = []
  for d in config.teacher.get("ensemble_with", ()):
    try:
      other = load_run_config(Path(d))
    except FileNotFoundError as e:
      raise FileNotFoundError(f"teacher.ensemble_with: {e}") from None
    if data_identity(other) != data_identity(config):
      raise ValueError(f"teacher.ensemble_with: {d} trained its teacher on other data "
                       "(dataset, data fields or seed differ); refusing it")
    home = Path(other.teacher.restore_from) if other.teacher.restore_from else Path(d)
    if not (home / "checkpoints" / "teacher" / "identity.json").exists():
      raise FileNotFoundError(f"teacher.ensemble_with: {home} holds no finished teacher")
    sources.append((home, other))
  total = config.teacher.num_teachers + sum(o.teacher.num_teachers for _, o in sources)
  checks.ensemble_weights(config.student.loss.get("ensemble_weights", ()),
                          "student.loss.ensemble_weights", num_teachers=total,
                          teachers=f"{total} with teacher.ensemble_with")
  return sources


def ensemble_members(teachers: Phase, data: SweepData,
                     sources: list[tuple[Path, ml_collections.ConfigDict]]) -> list[Phase]:
  """This run's teacher phase followed by the restored teachers of ``ensemble_with``."""
  return [teachers] + [restore_teacher(other, data, home) for home, other in sources]


def combined_teacher(config: ml_collections.ConfigDict, batch: Batch) -> jax.Array:
  """The teacher the students were distilled from: ``batch.teacher_scores [R, N, M]``
  combined by ``student.loss.ensemble`` with ``student.loss.ensemble_weights``
  (:data:`prerank_jax.losses.ensemble.ENSEMBLES`); ``[R, N]``, 0 at padding. The
  teacher row, the teacher-consistency metrics and the cascade's reranker all use it.

  A logged teacher's missing scores (``batch.teacher_mask``; a ranker that scored only its
  own top-k) rank after every scored candidate of their list: they get the list's lowest
  combined score minus 1 (ties among them by lower index, as every ranking here), so the
  teacher row ranks exactly as the ranker did and puts what it did not score last."""
  loss = config.student.loss
  weights = tuple(float(w) for w in loss.get("ensemble_weights", ())) or None
  return _combine(batch.teacher_scores, batch.valid, batch.teacher_mask,
                  ensemble=loss.ensemble, weights=weights)


@functools.partial(programs.jit, name="teachers._combine",
                   static_argnames=("ensemble", "weights"))
def _combine(teacher_scores, valid, teacher_mask, *, ensemble, weights):
  # One compiled program (not a dozen eager operations, each looked up on its own).
  present = teacher_present(valid, teacher_mask)
  combined = ENSEMBLES[ensemble](teacher_scores, where=present, weights=weights)
  if teacher_mask is None:
    return combined
  low = jnp.min(jnp.where(present, combined, jnp.inf), axis=-1, keepdims=True)
  low = jnp.where(jnp.isfinite(low), low, 0.0)
  return jnp.where(present, combined, jnp.where(valid, low - 1.0, 0.0))
