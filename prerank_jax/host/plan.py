"""What a run will train: the sweep points of each phase, the structural programs of
``sweep.programs``, and the plan printed before any work starts."""

from __future__ import annotations

import math
import os
from typing import Mapping, NamedTuple

import jax
import ml_collections

from prerank_jax.config import is_logged_teacher, sweep_axes
from prerank_jax.batch import Batch, BatchError, IdVocab
from prerank_jax.data.tfds_base import validate_split
from prerank_jax.models import MODELS, build_model
from prerank_jax.train.programs import apply_overrides, parse_programs, program_label
from prerank_jax.train.sweep import (SweepPoint, config_group_size, grid_points,
                                     group_layout, replicate_points, sweep_mesh)


def student_points(config: ml_collections.ConfigDict) -> list[SweepPoint]:
  """The sweep grid, plus a ground-truth-only student (``alpha = 0``, named ``gt-only``) per
  learning rate, each once per replicate seed of ``sweep.seeds`` (:func:`replicate_points`).

  Point names use the config's names in ASCII: ``temperature=1 alpha=0.5
  learning_rate=0.003`` (only the swept axes), ``gt-only`` (``gt-only learning_rate=0.003``
  when several learning rates are swept)."""
  points = grid_points(sweep_axes(config), seed=config.seed, mode=config.sweep.mode)
  if config.sweep.gt_only_baseline:
    rates = sorted({p.hparams["learning_rate"] for p in points})
    for lr in rates:
      name = f"gt-only learning_rate={lr:g}" if len(rates) > 1 else "gt-only"
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


# --- memory -------------------------------------------------------------------------------

GIB = float(1 << 30)
# Bytes per parameter: float32 parameters (1), Adam's two moments (2): resident for every
# point; a gradient and an update (2 more) live while a vmapped group steps, except for the
# ID embedding tables under <role>.embedding_update = "sparse", whose gradient and update
# cover only the rows a step looks up (a few thousand, not counted).
_STATE_COPIES, _STEP_COPIES, _FLOAT_BYTES = 3, 2, 4


class PhaseMemory(NamedTuple):
  """Memory of one compiled phase: ``points`` (padded) sweep points of ``params`` each,
  ``group`` of them stepping at once (``group == points`` without groups). ``sparse``:
  the tables get the row-sparse update, so a stepping point holds no dense gradient or
  update of them."""

  label: str
  model: str
  points: int
  group: int
  params: int
  tables: int
  sparse: bool = False

  @property
  def step_params(self) -> int:
    """Parameters with a dense gradient and update while a point steps."""
    return self.params - self.tables if self.sparse else self.params

  @property
  def point_bytes(self) -> int:
    """Parameters + Adam moments of one point."""
    return _STATE_COPIES * _FLOAT_BYTES * self.params

  @property
  def total_bytes(self) -> int:
    """Every point's state, plus the gradients and updates of one group stepping."""
    return (self.points * _STATE_COPIES * self.params
            + self.group * _STEP_COPIES * self.step_params) * _FLOAT_BYTES


class MemoryPlan(NamedTuple):
  """Parameter and optimizer memory of a run's phases (run one after another), the
  data's, and the memory available (:func:`available_memory`)."""

  phases: tuple[PhaseMemory, ...]
  data_bytes: int
  limit_bytes: int
  limit_source: str

  @property
  def peak_bytes(self) -> int:
    """The largest phase (phases run one after another) plus the data."""
    return max(p.total_bytes for p in self.phases) + self.data_bytes

  def describe(self) -> str:
    """The memory lines of the printed plan."""
    sparse = any(p.sparse and p.tables for p in self.phases)
    lines = [f"memory: parameters + Adam state (3 × 4 B per parameter per point; gradients "
             f"and updates 2 × 4 B per parameter per point of a stepping group"
             + (", none for ID tables under the sparse update)" if sparse else ")")]
    for p in self.phases:
      tables = (f", {p.tables / p.params:.0%} in ID embedding tables "
                f"({'sparse' if p.sparse else 'dense'} update)" if p.tables else "")
      lines.append(f"  {p.label} ({p.model}): {p.params:,} parameters{tables}; "
                   f"{p.point_bytes / GIB:.3f} GiB per point × {p.points} point(s) "
                   f"(groups of {p.group}) = {p.total_bytes / GIB:.3f} GiB")
    lines.append(f"  data on the device: {self.data_bytes / GIB:.3f} GiB; peak "
                 f"{self.peak_bytes / GIB:.3f} GiB of {self.limit_bytes / GIB:.1f} GiB "
                 f"available ({self.limit_source})")
    return "\n".join(lines)

  def check(self) -> None:
    """Raises :class:`MemoryError` with the numbers and the remedies if the peak does not
    fit the memory available."""
    if self.peak_bytes <= self.limit_bytes:
      return
    worst = max(self.phases, key=lambda p: p.total_bytes)
    step = min(worst.group, worst.points) * _STEP_COPIES * _FLOAT_BYTES * worst.step_params
    fit = int((self.limit_bytes - self.data_bytes - step) // max(1, worst.point_bytes))
    raise MemoryError(
        f"plan: the sweep does not fit: {worst.label} ({worst.model}) needs "
        f"{worst.total_bytes / GIB:.2f} GiB for {worst.points} point(s) × "
        f"{worst.point_bytes / GIB:.3f} GiB of parameters + Adam state ({worst.params:,} "
        f"parameters, {worst.tables:,} of them in ID embedding tables) plus gradients of "
        f"groups of {worst.group}, and the data {self.data_bytes / GIB:.2f} GiB: "
        f"{self.peak_bytes / GIB:.2f} GiB, but {self.limit_bytes / GIB:.2f} GiB are "
        f"available ({self.limit_source}). Remedies: fewer points (about {max(0, fit)} "
        "fit; sweep axes or split the grid across runs), smaller groups "
        "(sweep.group_size; saves only the gradients' share), "
        + ("" if worst.sparse or not worst.tables else
           "<role>.embedding_update='sparse' (no dense table gradients), ")
        + "fewer embedding rows "
        "(hash_buckets: smaller <role>.model.context_vocab / item_vocab) or a smaller "
        "<role>.model.id_embed_dim. Nothing was written.")


def available_memory() -> tuple[int, str]:
  """``(bytes, where from)``: the accelerator's ``bytes_limit`` when it reports one, else the
  host's available memory (``MemAvailable`` of ``/proc/meminfo``, else physical memory)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # backends without memory statistics (CPU) raise or return None
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{jax.devices()[0].device_kind} bytes_limit"
  try:
    for line in open("/proc/meminfo"):
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024, "host MemAvailable"
  except OSError:
    pass
  return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host physical memory")


def memory_plan(config: ml_collections.ConfigDict,
                programs: list[tuple[str, ml_collections.ConfigDict]],
                feature_sizes: Mapping[str, int], *, data_bytes: int = 0,
                limit_bytes: int | None = None) -> MemoryPlan:
  """The parameter and optimizer memory of every phase, from the models' parameter shapes
  (``jax.eval_shape``: nothing is allocated).

  Args:
    config: the run config.
    programs: :func:`student_programs`.
    feature_sizes: of the data (:func:`prerank_jax.batch.feature_sizes`).
    data_bytes: bytes of the splits kept on the device.
    limit_bytes: the memory available; ``None``: :func:`available_memory`.
  """
  devices = jax.device_count()
  group_size = config_group_size(config)

  def phase(label: str, cfg: ml_collections.ConfigDict, role: str, n: int) -> PhaseMemory:
    options = {k: v for k, v in cfg[role].model.items() if k != "name"}
    model = build_model(cfg[role].model.name, feature_sizes=dict(feature_sizes),
                        field=f"{role}.model", **options)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0)))  # no eager key
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    tables = sum(math.prod(x.shape) for path, x in jax.tree_util.tree_leaves_with_path(
        shapes) if any(getattr(k, "key", None) == "embeddings" for k in path))
    multiple, group = group_layout(n, devices=devices, group_size=group_size)
    padded = n + (-n) % multiple
    sparse = cfg[role].get("embedding_update", "dense") == "sparse"
    return PhaseMemory(label, cfg[role].model.name, padded, group or padded, params, tables,
                       sparse)

  phases = [] if is_logged_teacher(config) else [
      phase("teacher", config, "teacher", config.teacher.num_teachers)]
  for label, program in programs:
    phases.append(phase("students" + (f" [{label}]" if label else ""), program, "student",
                        len(student_points(program))))
  limit, source = (limit_bytes, "given") if limit_bytes is not None else available_memory()
  return MemoryPlan(tuple(phases), int(data_bytes), int(limit), source)


def check_data_ids(config: ml_collections.ConfigDict, splits: Mapping[str, Batch]) -> None:
  """Every ID of every split lies inside the vocabulary of each model that reads IDs
  (``<role>.model.context_vocab`` / ``item_vocab``), checked on the host before any
  compiled work (an ID past its table would otherwise read the reserved row silently).

  Raises:
    BatchError: naming the split, the field and column, the vocabulary and the config
      fields to change.
  """
  for role in ("teacher", "student"):
    model = config[role].model
    if "context_vocab" not in MODELS.get(model.name, MODELS["linear"]).options:
      continue
    vocab = IdVocab(tuple(model.context_vocab), tuple(model.item_vocab))
    for name, batch in splits.items():
      try:
        validate_split(batch, name=name, vocab=vocab)
      except BatchError as e:
        raise BatchError(f"{e} [the vocabulary of {role}.model.context_vocab / "
                         f"{role}.model.item_vocab]") from None
