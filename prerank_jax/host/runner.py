"""The host-side pipeline: config → data → teacher → sweep → evaluation → report.

Only the host floor does I/O: progress bars, Orbax checkpoints, W&B and files. This module
orders the stages; each stage lives in its own module:

==========================  ===================================================
``host/plan.py``            the sweep points and programs, the printed plan
``host/sweep_driver.py``    a phase trained in chunks (checkpoints, W&B), or restored
``host/teachers.py``        the teacher ensemble and its scores on every split
``host/tables.py``          evaluation on the test split and the result files
``host/identity.py``        fingerprints of the data and the teacher
``host/processes.py``       which process writes (multi-process runs)
==========================  ===================================================
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from prerank_jax.batch import Batch, feature_sizes
from prerank_jax.config import check_against_data, is_logged_teacher, validate_config
from prerank_jax.data.ids import SplitIds
from prerank_jax.data.tfds_base import host_bytes, validate_split
from prerank_jax.host.compile_cache import program_context
from prerank_jax.host.identity import data_identity, teacher_identity
from prerank_jax.host.plan import (check_data_ids, describe_plan, memory_plan,
                                   student_points, student_programs, teacher_points)
from prerank_jax.host.processes import barrier, is_main
from prerank_jax.host.rundir import (acquire_lock, commit_run_dir, discard_staging,
                                     holds_lock, load_run_config, prepare_run_dir,
                                     release_lock, write_text_atomic)
from prerank_jax.host.sweep_driver import restore_phase, restore_teacher, train_phase
from prerank_jax.host.tables import RunResult, finish_run, truth_warning
from prerank_jax.host.teachers import (ensemble_members, ensemble_sources, logged_splits,
                                       score_splits)
from prerank_jax.train.loop import SweepData


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[dict[str, Batch], Any, dict[str, SplitIds] | None]:
  """Builds and validates the train/valid/test splits named by the config.

  Returns ``(splits, builder, ids)``; ``builder`` is the prepared TFDS builder of a dataset on
  disk (it places the teacher-score cache) or ``None`` for the in-memory simulator; ``ids``
  is ``{split: SplitIds}`` (the user's request/candidate IDs, keying scores.parquet and
  the TREC files) or ``None`` where the dataset has none (the simulator).
  """
  from prerank_jax.data.registry import load_dataset  # simulator, TFDS datasets (issue 6)

  loaded = load_dataset(config)
  for name, batch in loaded.splits.items():  # a train split on disk: a block at a time
    validate_split(batch, name=name)
  return loaded.splits, loaded.builder, loaded.ids


def run(config: ml_collections.ConfigDict, *, show_progress: bool | None = None) -> RunResult:
  """Runs the whole pipeline into ``<workdir>/<name>/``.

  The config is validated and the data checked before anything is written. Results are
  written only when every stage succeeded and every reported number is finite. The run
  directory is locked while the run uses it; an ``overwrite`` run trains into a staging
  directory that replaces the old one only when it finished (``prerank_jax/host/rundir.py``),
  and a failed one leaves the old directory as it was.
  """
  target = Path(config.workdir) / config.name
  try:
    with program_context(config):  # a store of traced programs keeps this run's
      return _run(config, show_progress=show_progress)
  except BaseException:
    if is_main() and holds_lock(target):  # not when refused: the lock is another run's
      discard_staging(config)
    raise
  finally:
    if is_main():
      release_lock(target)


def _run(config: ml_collections.ConfigDict, *, show_progress: bool | None) -> RunResult:
  t_start = time.perf_counter()
  validate_config(config)
  programs = student_programs(config)
  show = config.progress if show_progress is None else show_progress
  warning = truth_warning(config)
  if warning and is_main():  # one line: the "truth" metrics are the logged labels'
    print(warning, file=sys.stderr)
  if show and is_main():
    print(describe_plan(config, programs))
  timings = {}
  splits, builder, ids = load_data(config)
  logged = is_logged_teacher(config)
  sources = [] if logged else ensemble_sources(config)
  sizes = feature_sizes(splits["train"].take(slice(0, 1)))  # a train split on disk: 1 read
  check_against_data(config, shortest_list=int(min(np.asarray(b.valid).sum(-1).min()
                                                   for b in splits.values())),
                     num_train_requests=splits["train"].num_requests,
                     feature_sizes=sizes, list_size=splits["train"].list_size)
  # IDs inside every ID model's vocabulary; the sweep's parameter and optimizer memory
  # fits (refused with the numbers and remedies otherwise), before anything is written.
  check_data_ids(config, splits)
  memory = memory_plan(config, programs, sizes, data_bytes=sum(
      host_bytes(splits[name]) for name in ("train", "valid")))
  if show and is_main():
    print(memory.describe())
  memory.check()
  # Every process checks the directory as it was before the run, then only process 0
  # creates (or replaces) it.
  run_dir = prepare_run_dir(config, create=False)  # the working dir (staging to overwrite)
  barrier("checked_run_dir")
  if is_main():
    acquire_lock(Path(config.workdir) / config.name)
    prepare_run_dir(config, create=True)
  barrier("run_dir")
  timings["data_s"] = time.perf_counter() - t_start

  # Teacher(s): a sweep of seeds trained on exposed labels only (kd="none"), or reused
  # from an earlier run over the same data.
  t0 = time.perf_counter()
  data = SweepData(splits["train"], splits["valid"])
  teacher_run_dir = (Path(config.teacher.restore_from) if config.teacher.restore_from
                     else Path(config.workdir) / config.name)  # where it will be
  if logged:  # the ranker's logged scores are the teacher: nothing to train or score
    teachers, t_tracker = None, None
  elif config.teacher.restore_from:
    teachers = restore_teacher(config, data, Path(config.teacher.restore_from))
    t_tracker = None
  else:
    teachers, t_tracker = train_phase(config, "teacher", teacher_points(config), data,
                                      run_dir=run_dir, show=show)
    if is_main():
      write_text_atomic(run_dir / "checkpoints" / "teacher" / "identity.json", json.dumps(
          {"teacher": teacher_identity(config), "data": data_identity(config)}))
  if teachers is not None and bool(np.any(teachers.state.diverged)):
    raise FloatingPointError("teacher: training diverged (non-finite loss); lower "
                             "teacher.learning_rate")
  if logged:
    members = []
    scored, score_source = logged_splits(splits)
  else:
    members = ensemble_members(teachers, data, sources)
    scored, score_source = score_splits(members, splits, builder)
  timings["teacher_s"] = time.perf_counter() - t0

  # Students: the whole grid as one vmapped program, sharded over the devices.
  t0 = time.perf_counter()
  students, trackers = [], []
  for j, (label, program) in enumerate(programs):
    phase, tracker = train_phase(program, "student", student_points(program),
                                 SweepData(scored["train"], scored["valid"]),
                                 run_dir=run_dir, show=show,
                                 tag="" if len(programs) == 1 else f"-{j}")
    students.append((label, program, phase))
    trackers.append(tracker)
  timings["students_s"] = time.perf_counter() - t0

  result = finish_run(config, run_dir, members, students, scored, timings, t_start,
                      teacher_run_dir=teacher_run_dir, score_source=score_source, ids=ids)
  offset = 0
  for (_, _, phase), tracker in zip(students, trackers):
    tracker.finish(result.rows[offset:offset + len(phase.points)])
    offset += len(phase.points)
  if t_tracker is not None:
    t_tracker.finish()
  if is_main():  # an overwrite's staging directory replaces the old one only now
    commit_run_dir(config, run_dir)
  barrier("committed")
  return result._replace(run_dir=Path(config.workdir) / config.name)


def evaluate_run(run_dir: Path) -> RunResult:
  """Re-evaluates a finished run from its final checkpoints and rewrites its results.

  The data are rebuilt from the saved config (the simulator is deterministic by seed);
  the teacher and the students are restored, not retrained. The run directory is locked
  meanwhile, so a run still training in it is not disturbed.
  """
  run_dir = Path(run_dir)
  acquire_lock(run_dir)
  try:
    return _evaluate_run(run_dir)
  finally:
    release_lock(run_dir)


def _evaluate_run(run_dir: Path) -> RunResult:
  t_start = time.perf_counter()
  config = load_run_config(run_dir)
  splits, builder, ids = load_data(config)
  data = SweepData(splits["train"], splits["valid"])
  teacher_run_dir = Path(config.teacher.restore_from) if config.teacher.restore_from else run_dir
  if is_logged_teacher(config):  # read with the data again; nothing to restore
    members = []
    scored, score_source = logged_splits(splits)
  else:
    teachers = restore_teacher(config, data, teacher_run_dir)
    members = ensemble_members(teachers, data, ensemble_sources(config))
    scored, score_source = score_splits(members, splits, builder)
  programs = student_programs(config)
  students = [(label, program, restore_phase(
      program, "student", student_points(program), SweepData(scored["train"], scored["valid"]),
      run_dir, tag="" if len(programs) == 1 else f"-{j}"))
      for j, (label, program) in enumerate(programs)]
  timings = {"restore_s": time.perf_counter() - t_start}
  return finish_run(config, run_dir, members, students, scored, timings, t_start,
                    teacher_run_dir=teacher_run_dir, score_source=score_source, ids=ids)
