"""Sweep grids: hyperparameter points stacked along a leading axis and vmapped.

A sweep is ``vmap`` of the pure train functions over stacked hyperparameters and keys,
with the data broadcast. A single run is a sweep of one point.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.losses.registry import HPARAMS, check_hparam
from prerank_jax.train.loop import Trainer


class SweepPoint(NamedTuple):
  """One grid point: a display name, traced hyperparameter values and a seed."""

  name: str
  hparams: dict[str, float]
  seed: int


def grid_points(axes: Mapping[str, Sequence[float]], *, seed: int,
                field: str = "sweep") -> list[SweepPoint]:
  """The Cartesian product of the sweep axes, validated against the loss registry.

  Args:
    axes: ``{hparam_name: values}``; every name must be in ``HPARAMS``.
    seed: seed shared by every point, so points differ only in their hyperparameters.
    field: config path for error messages.

  Returns:
    Points in row-major order of ``axes``.
  """
  for name, values in axes.items():
    if name not in HPARAMS:
      raise ValueError(f"{field}.{name}: not a traced hyperparameter; valid names are "
                       f"{sorted(HPARAMS)}")
    if len(values) == 0:
      raise ValueError(f"{field}.{name}: needs at least one value")
    for value in values:
      check_hparam(name, value, f"{field}.{name}")
  names = list(axes)
  points = []
  for combo in itertools.product(*(axes[n] for n in names)):
    hp = {n: float(v) for n, v in zip(names, combo)}
    label = " ".join(f"{_SHORT.get(n, n)}={v:g}" for n, v in hp.items())
    points.append(SweepPoint(label, hp, seed))
  return points


_SHORT = {"temperature": "T", "alpha": "α", "learning_rate": "lr"}


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
  run_chunk: Any   # (state [P], hparams [P], data) -> (state [P], metrics [P, E])
  train: Any       # (hparams [P], rngs [P], data) -> (state [P], metrics [P, epochs])
  apply: Any       # (params [P], batch) -> scores [P, R, N]


def compile_sweep(trainer: Trainer) -> CompiledSweep:
  """Vmaps the trainer over the leading point axis, broadcasting the data."""
  return CompiledSweep(
      init=jax.jit(jax.vmap(trainer.init)),
      run_chunk=jax.jit(jax.vmap(trainer.run_chunk, in_axes=(0, 0, None))),
      train=jax.jit(jax.vmap(trainer.train, in_axes=(0, 0, None))),
      apply=jax.jit(jax.vmap(trainer.model.apply, in_axes=(0, None))),
  )
