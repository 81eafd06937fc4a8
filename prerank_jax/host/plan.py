"""What a run will train: the sweep points of each phase, the structural programs of
``sweep.programs``, and the plan printed before any work starts."""

from __future__ import annotations

import jax
import ml_collections

from prerank_jax.config import sweep_axes
from prerank_jax.train.programs import apply_overrides, parse_programs, program_label
from prerank_jax.train.sweep import (SweepPoint, config_group_size, grid_points,
                                     group_layout, replicate_points, sweep_mesh)


def student_points(config: ml_collections.ConfigDict) -> list[SweepPoint]:
  """The sweep grid, plus a ground-truth-only student (α = 0) per learning rate, each
  once per replicate seed of ``sweep.seeds`` (:func:`replicate_points`)."""
  points = grid_points(sweep_axes(config), seed=config.seed, mode=config.sweep.mode)
  if config.sweep.gt_only_baseline:
    rates = sorted({p.hparams["learning_rate"] for p in points})
    for lr in rates:
      name = f"gt-only lr={lr:g}" if len(rates) > 1 else "gt-only"
      points.append(SweepPoint(name, {**points[0].hparams, "alpha": 0.0,
                                      "learning_rate": lr}, config.seed))
  return replicate_points(points, config.sweep.get("seeds", ()))


def teacher_points(config: ml_collections.ConfigDict) -> list[SweepPoint]:
  """One point per ensemble member: same hyperparameters, different seeds."""
  hparams = grid_points({"alpha": (0.0,), "learning_rate": (config.teacher.learning_rate,)},
                        seed=0)[0].hparams
  return [SweepPoint(f"teacher {i}", hparams, config.seed + 1000 + i)
          for i in range(config.teacher.num_teachers)]


def student_programs(config: ml_collections.ConfigDict
                     ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """``(label, config)`` per structural program of ``sweep.programs`` (one if empty)."""
  return [(program_label(o), apply_overrides(config, o) if o else config)
          for o in parse_programs(config.sweep.programs)]


def describe_plan(config: ml_collections.ConfigDict,
                  programs: list[tuple[str, ml_collections.ConfigDict]]) -> str:
  """What will be compiled and run, printed before any work starts."""
  devices = jax.device_count()
  group_size = config_group_size(config)  # -1 (auto) resolved for this backend

  def layout(n: int, batch_size: int) -> str:
    mesh = sweep_mesh(n, batch_size=batch_size)
    s, d = mesh.shape["sweep"], mesh.shape["data"]
    multiple, group = group_layout(n, devices=s, group_size=group_size)
    padded = n + (-n) % multiple
    return ((f" (padded to {padded})" if padded != n else "")
            + (f" (in {padded // group} groups of {group})" if group else "")
            + (f" (each batch split over {d} devices)" if d > 1 else ""))

  if config.teacher.model.name == "logged":  # read with the data, nothing compiled
    lines = [f"plan: {len(programs)} compiled programs on {devices} "
             f"{jax.default_backend()} device(s), run one after another",
             "  teacher: the ranker's logged scores (teacher.model.name=logged; not trained)"]
  else:
    lines = [f"plan: {1 + len(programs)} compiled programs on {devices} "
             f"{jax.default_backend()} device(s), run one after another",
             f"  teacher: {config.teacher.num_teachers} point(s)"
             f"{layout(config.teacher.num_teachers, config.teacher.batch_size)} × "
             f"{config.teacher.num_epochs} epochs ({config.teacher.model.name})"
             + "".join(f" + the teacher of {d}"
                       for d in config.teacher.get("ensemble_with", ()))]
  for label, program in programs:
    n = len(student_points(program))
    lines.append(f"  students{' [' + label + ']' if label else ''}: {n} point(s)"
                 f"{layout(n, program.student.batch_size)} × "
                 f"{program.student.num_epochs} epochs ({program.student.model.name}, "
                 f"kd={program.student.loss.kd})")
  return "\n".join(lines)
