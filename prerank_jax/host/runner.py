"""The host-side pipeline: config → data → teacher → sweep → evaluation → report.

Only this floor does I/O: progress bars, Orbax checkpoints, W&B and files. Compiled work
runs in chunks of epochs; between chunks the host updates the progress bar, logs the
chunk's per-epoch metrics and saves checkpoints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from prerank_jax import checks
from prerank_jax.batch import Batch, feature_sizes, validate_batch
from prerank_jax.config import check_against_data, sweep_axes, validate_config
from prerank_jax.data.simulator import simulate
from prerank_jax.evaluate import describe_excluded, evaluate_stacked, metric_names
from prerank_jax.host import export, report
from prerank_jax.host.checkpoint import SweepCheckpointer
from prerank_jax.host.pareto import add_cost_columns
from prerank_jax.host.rundir import (acquire_lock, commit_run_dir, config_identity,
                                     discard_staging, fingerprint, holds_lock,
                                     prepare_run_dir, release_lock, run_id,
                                     write_text_atomic)
from prerank_jax.host.tracking import Tracker
from prerank_jax.losses.ensemble import ENSEMBLES
from prerank_jax.losses.registry import HPARAMS
from prerank_jax.models import feature_columns, feature_importance, param_count
from prerank_jax.models.cost import flops_per_candidate
from prerank_jax.train.loop import SweepData, Trainer, TrainState, make_train
from prerank_jax.train.programs import apply_overrides, parse_programs, program_label
from prerank_jax.train.sweep import (CompiledSweep, SweepPoint, compile_sweep, grid_points,
                                     group_layout, pad_points, replicate,
                                     replicate_points, shard_sweep,
                                     stack_points, sweep_mesh, to_host, batch_sharding)

_COLUMN = {"temperature": "T", "learning_rate": "lr"}


class RunResult(NamedTuple):
  rows: list[dict[str, Any]]
  columns: list[str]
  table: str
  run_dir: Path
  history: dict[str, Any]
  timings: dict[str, float]


class Phase(NamedTuple):
  """A trained sweep: its points, trainer, compiled functions, final state and history."""

  points: list[SweepPoint]
  trainer: Trainer
  compiled: CompiledSweep
  state: TrainState            # stacked over the real points (padding dropped)
  history: dict[str, np.ndarray]   # {metric: [P, epochs]}


def is_main() -> bool:
  """Only process 0 writes files, logs to W&B and shows progress."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits for every process (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def load_data(config: ml_collections.ConfigDict) -> tuple[dict[str, Batch], Any]:
  """Builds and validates the train/valid/test splits named by the config.

  Returns ``(splits, builder)``; ``builder`` is the prepared TFDS builder of a dataset on
  disk (it places the teacher-score cache) or ``None`` for the in-memory simulator.
  """
  from prerank_jax.data.registry import load_dataset  # simulator, TFDS datasets (issue 6)

  loaded = load_dataset(config)
  for name, batch in loaded.splits.items():
    validate_batch(batch, name=name)
  return loaded.splits, loaded.builder


def data_identity(config: ml_collections.ConfigDict) -> str:
  """Fingerprint of what determines the data: dataset, its knobs and the seed."""
  identity = {"dataset": config.dataset, "data": config.data.to_dict(), "seed": config.seed}
  if config.dataset != "simulator":  # a real dataset: its config.source fields too
    identity["source"] = config.source.to_dict()
  return fingerprint(identity)


def teacher_identity(config: ml_collections.ConfigDict) -> str:
  """Fingerprint of the teacher: the data plus every teacher field."""
  fields = {k: v for k, v in config.teacher.to_dict().items()
            if k not in ("restore_from", "ensemble_with")}
  return fingerprint({"data": data_identity(config), "teacher": fields})


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
  trainer = make_train(config, role=role, feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests,
                       shard_batch=batch_sharding(mesh))
  multiple, group = group_layout(len(points), devices=mesh.shape["sweep"],
                                 group_size=int(config.sweep.get("group_size", 0)))
  compiled = compile_sweep(trainer, group_size=group)
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
          {k: np.asarray(v) for k, v in h.items()} for h in meta["history"]]
  tracker = Tracker(config.wandb.mode if is_main() else "disabled", project=config.wandb.project, group=config.name,
                    job_type=role, run_dir=run_dir,
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
      stats = {k: np.asarray(v)[:len(points)] for k, v in to_host(stats).items()}
      history.append(stats)
      tracker.log_epochs(stats, first_epoch=chunk * role_cfg.epochs_per_chunk)
      bar.update(steps_per_chunk * len(points))
      bar.set_postfix(loss=f"{np.nanmean(stats['loss'][:, -1]):.4f}")
      done = chunk + 1
      if done == num_chunks or (config.checkpoint_every and done % config.checkpoint_every == 0):
        checkpointer.save(done, state, {
            "history": [{k: v.tolist() for k, v in h.items()} for h in history],
            "points": [p.name for p in points],
            **({"input": feed.get_state()} if feed is not None else {})})
  checkpointer.close()
  merged = {k: np.concatenate([h[k] for h in history], axis=1) for k in history[0]}
  final = jax.tree.map(lambda x: x[:len(points)], to_host(state))
  return Phase(points, trainer, compiled, final, merged), tracker


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

  def compute(todo):
    return {name: batch._replace(teacher_scores=jnp.concatenate(
        [jnp.moveaxis(m.compiled.apply(m.state.params, batch), 0, -1)  # [M_i, R, N] -> [R, N, M_i]
         for m in members], axis=-1))
            for name, batch in todo.items()}

  params = members[0].state.params if len(members) == 1 else [m.state.params for m in members]
  if builder is not None and not is_main():  # one process writes the cache
    barrier("teacher_cache")
  scored, how = score_splits_cached(builder, params, splits, compute)
  if builder is not None and is_main():
    barrier("teacher_cache")
  return {name: validate_batch(batch._replace(teacher_scores=jnp.asarray(batch.teacher_scores)),
                               name=name, require_teacher=True)
          for name, batch in scored.items()}, how


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
  (:data:`prerank_jax.losses.ensemble.ENSEMBLES`); ``[R, N]``, 0 at masked slots. The
  teacher row, the teacher-consistency metrics and the cascade's reranker all use it."""
  loss = config.student.loss
  weights = tuple(loss.get("ensemble_weights", ())) or None
  return ENSEMBLES[loss.ensemble](batch.teacher_scores, where=batch.valid, weights=weights)


def evaluate_rows(config: ml_collections.ConfigDict, students: Phase,
                  test: Batch, *, scores_out: list | None = None
                  ) -> tuple[list[dict[str, Any]], list[str], str]:
  """Rows of the results table (every sweep point, the teacher and the references), its
  columns, and a note on how many lists each metric left out of its mean. With
  ``scores_out`` (a list), the evaluated ``[rows, R, N]`` scores are appended to it."""
  teacher_test = combined_teacher(config, test)
  references = {
      "teacher": teacher_test,
      "oracle (truth)": test.true_relevance,
      "random": jax.random.normal(jax.random.key(config.seed), test.valid.shape),
  }
  student_scores = students.compiled.apply(students.state.params, test)  # [P, R, N]
  all_scores = jnp.concatenate([student_scores, jnp.stack(list(references.values()))])
  ek = dict(k=config.eval.k, relevant_grade=config.eval.relevant_grade,
            ndcg_empty=config.eval.ndcg_empty, gain=config.eval.get("gain", "exp2"))
  if scores_out is not None:
    scores_out.append(np.asarray(jax.device_get(all_scores)))
  values, excluded = jax.device_get(evaluate_stacked(
      all_scores, test, teacher_scores=teacher_test,
      keep_ratios=tuple(config.eval.keep_ratios), return_excluded=True, **ek))
  columns_m = metric_names(k=config.eval.k, keep_ratios=config.eval.keep_ratios)
  points = students.points
  diverged = np.asarray(students.state.diverged)
  swept = [n for n in HPARAMS if n in sweep_axes(config) or n in ("alpha", "learning_rate")]
  seeded = bool(config.sweep.get("seeds", ()))  # replicates: a "replicate_seed" column
  rows = []
  for i, name in enumerate([p.name for p in points] + list(references)):
    row = {"model": name if i >= len(points) else f"student {name}"}
    if i < len(points):
      row.update({_COLUMN.get(n, n): points[i].hparams[n] for n in swept})
      if seeded:
        row["replicate_seed"] = points[i].seed
      row["status"] = "diverged" if diverged[i] else "ok"
    else:
      row["status"] = "reference"
    row.update({c: float(values[c][i]) for c in columns_m})
    bad = [c for c in columns_m if not np.isfinite(row[c])]
    if bad and row["status"] != "diverged":
      raise FloatingPointError(f"evaluation of {row['model']!r} produced non-finite "
                               f"{bad}; no results were written")
    rows.append(row)
  note = describe_excluded(excluded, [r["model"] for r in rows], num_lists=test.num_requests,
                           **ek)
  return rows, ["model", *(_COLUMN.get(n, n) for n in swept),
                *(["replicate_seed"] if seeded else []), *columns_m, "status"], note


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
  if show and is_main():
    print(describe_plan(config, programs))
  timings = {}
  splits, builder = load_data(config)
  sources = ensemble_sources(config)
  check_against_data(config, shortest_list=int(min(b.valid.sum(-1).min()
                                                   for b in splits.values())),
                     num_train_requests=splits["train"].num_requests,
                     feature_sizes=feature_sizes(splits["train"]),
                     list_size=splits["train"].list_size)
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
  if config.teacher.restore_from:
    teachers = restore_teacher(config, data, Path(config.teacher.restore_from))
    t_tracker = None
  else:
    teachers, t_tracker = train_phase(config, "teacher", teacher_points(config), data,
                                      run_dir=run_dir, show=show)
    if is_main():
      write_text_atomic(run_dir / "checkpoints" / "teacher" / "identity.json", json.dumps(
          {"teacher": teacher_identity(config), "data": data_identity(config)}))
  if bool(np.any(teachers.state.diverged)):
    raise FloatingPointError("teacher: training diverged (non-finite loss); lower "
                             "teacher.learning_rate")
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
                      teacher_run_dir=teacher_run_dir, score_source=score_source)
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


def finish_run(config: ml_collections.ConfigDict, run_dir: Path, members: list[Phase],
               students: list[tuple[str, ml_collections.ConfigDict, Phase]],
               scored: dict[str, Batch], timings: dict[str, float], t_start: float, *,
               teacher_run_dir: Path, score_source: dict[str, str]) -> RunResult:
  """Evaluates the trained phases on the test split and writes the result files.

  ``members`` are the teacher phases whose points make up the M teachers (this run's
  first). ``score_source`` says per split whether the teacher scores were computed or read from
  the teacher-score cache; it is recorded in ``history.json``.

  ``students`` holds one ``(label, config, phase)`` per program of ``sweep.programs``; with
  more than one, student rows are prefixed by ``[label]``.
  """
  t0 = time.perf_counter()
  test = scored["test"]
  sample = scored["valid"].take(slice(0, min(64, scored["valid"].num_requests)))
  first = lambda tree: jax.tree.map(lambda x: x[0], tree)
  teachers = members[0]
  member_costs = [{"model": m.trainer.model.name, "count": len(m.points),
                   "params": param_count(first(m.state.params)),
                   "flops_per_candidate": flops_per_candidate(
                       m.trainer.model, first(m.state.params), sample)} for m in members]
  teacher_costs = {  # one of this run's own teachers
      "teacher_params": member_costs[0]["params"],
      "teacher_flops_per_candidate": member_costs[0]["flops_per_candidate"],
  }
  # The teacher row scores with every member: its cost is theirs summed.
  ensemble_costs = {"teacher_params": sum(c["params"] * c["count"] for c in member_costs),
                    "teacher_flops_per_candidate": sum(c["flops_per_candidate"] * c["count"]
                                                       for c in member_costs)}
  rows, history_students, student_costs, importance = [], {}, [], {}
  per_model = {}  # id(row) -> its evaluated test scores [R, N], for the exports
  for j, (label, program, phase) in enumerate(students):
    scores_j = []
    rows_j, columns, excluded_note = evaluate_rows(program, phase, test, scores_out=scores_j)
    costs = {**teacher_costs,
             "student_params": param_count(first(phase.state.params)),
             "student_flops_per_candidate": flops_per_candidate(
                 phase.trainer.model, first(phase.state.params), sample)}
    columns = add_cost_columns(rows_j, columns, {**costs, **ensemble_costs})
    prefix = f"[{label}] " if len(students) > 1 else ""
    for row in rows_j:
      if row["status"] != "reference":
        row["model"] = f"student {prefix}{row['model'].removeprefix('student ')}"
    per_model.update({id(r): s for r, s in zip(rows_j, scores_j[0])
                      if j == 0 or r["status"] != "reference"})
    rows += [r for r in rows_j if j == 0 or r["status"] != "reference"]
    history_students.update({f"{prefix}{p.name}": {k: v[i].tolist()
                                                   for k, v in phase.history.items()}
                             for i, p in enumerate(phase.points)})
    if program.student.model.get("se_gate", False):  # COLD's gate: which features matter
      gates = jax.device_get(jax.jit(jax.vmap(
          lambda p: feature_importance(phase.trainer.model, p, test)))(phase.state.params))
      labels = feature_columns(phase.trainer.model)
      importance.update({f"{prefix}{p.name}": dict(zip(labels, map(float, gates[i])))
                         for i, p in enumerate(phase.points)})
    student_costs.append(f"{program.student.model.name}{' ' + prefix.strip() if prefix else ''}"
                         f" ({costs['student_params']} params, "
                         f"{costs['student_flops_per_candidate']:.0f} FLOPs/candidate)")
  # Reference rows (teacher, oracle, random) go last, after every program's students.
  rows.sort(key=lambda r: r["status"] == "reference")
  timings["eval_s"] = time.perf_counter() - t0
  timings["total_s"] = time.perf_counter() - t_start
  header = (f"# {config.name}\n\nTest split: {test.num_requests} requests, lists of up to "
            f"{test.list_size} candidates. Teacher: {config.teacher.model.name} "
            f"({teacher_costs['teacher_params']} params, "
            f"{teacher_costs['teacher_flops_per_candidate']:.0f} FLOPs/candidate; "
            f"{teacher_run_dir / 'checkpoints' / 'teacher'}, identity "
            f"{teacher_identity(config)})"
            + "".join(f" + {c['count']}× {c['model']} ({c['params']} params, "
                      f"{c['flops_per_candidate']:.0f} FLOPs/candidate; {d})"
                      for c, d in zip(member_costs[1:], config.teacher.ensemble_with))
            + f", student: {'; '.join(student_costs)}. "
            f"Wall time {timings['total_s']:.1f} s on {jax.device_count()} "
            f"{jax.default_backend()} device(s).")
  history = {
      "teacher": {k: v.tolist() for k, v in teachers.history.items()},
      "students": history_students,
      "teacher_source": str(teacher_run_dir / "checkpoints" / "teacher"),
      "teacher_scores": score_source,
      "teacher_members": member_costs,
      **({"feature_importance": importance} if importance else {}),
      "costs": costs if len(students) == 1 else {**teacher_costs, "programs": student_costs},
      "timings": timings,
  }
  if importance:  # a table: features × points, to see which features a student could drop
    names = list(next(iter(importance.values())))
    excluded_note += ("\n\nSE-gate feature importance (mean gate over valid test candidates; "
                      "near 0 = a candidate for pruning):\n\n"
                      + report.markdown_table(
                          [{"model": m, **v} for m, v in importance.items()],
                          ["model", *names]))
  if is_main():  # per-candidate scores + TREC run files: any number checkable outside
    history["exports"] = export.write_scores(
        run_dir, [r["model"] for r in rows], np.stack([per_model[id(r)] for r in rows]),
        valid=np.asarray(test.valid), label=np.asarray(test.label),
        exposed=np.asarray(test.exposed),
        truth=None if test.true_relevance is None else np.asarray(test.true_relevance))
  for name, text in report.result_files(rows, columns, history=history,
                                        header=f"{header}\n\n{excluded_note}").items():
    if is_main():
      write_text_atomic(run_dir / name, text)
  barrier("results")
  shown = report.terminal_columns(columns, k=config.eval.k,
                                  keep_ratios=config.eval.keep_ratios,
                                  has_truth=test.true_relevance is not None)
  table = (f"{report.format_table(rows, shown)}\n\n"
           f"{report.full_table_note(run_dir, columns, shown)}\n\n{excluded_note}")
  return RunResult(rows, columns, table, run_dir, history, timings)


def student_programs(config: ml_collections.ConfigDict
                     ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """``(label, config)`` per structural program of ``sweep.programs`` (one if empty)."""
  return [(program_label(o), apply_overrides(config, o) if o else config)
          for o in parse_programs(config.sweep.programs)]


def describe_plan(config: ml_collections.ConfigDict,
                  programs: list[tuple[str, ml_collections.ConfigDict]]) -> str:
  """What will be compiled and run, printed before any work starts."""
  devices = jax.device_count()
  group_size = int(config.sweep.get("group_size", 0))

  def layout(n: int, batch_size: int) -> str:
    mesh = sweep_mesh(n, batch_size=batch_size)
    s, d = mesh.shape["sweep"], mesh.shape["data"]
    multiple, group = group_layout(n, devices=s, group_size=group_size)
    padded = n + (-n) % multiple
    return ((f" (padded to {padded})" if padded != n else "")
            + (f" (in {padded // group} groups of {group})" if group else "")
            + (f" (each batch split over {d} devices)" if d > 1 else ""))

  lines = [f"plan: {1 + len(programs)} compiled programs on {devices} "
           f"{jax.default_backend()} device(s), run one after another",
           f"  teacher: {config.teacher.num_teachers} point(s)"
           f"{layout(config.teacher.num_teachers, config.teacher.batch_size)} × "
           f"{config.teacher.num_epochs} epochs ({config.teacher.model.name})"
           + "".join(f" + the teacher of {d}" for d in config.teacher.get("ensemble_with", ()))]
  for label, program in programs:
    n = len(student_points(program))
    lines.append(f"  students{' [' + label + ']' if label else ''}: {n} point(s)"
                 f"{layout(n, program.student.batch_size)} × "
                 f"{program.student.num_epochs} epochs ({program.student.model.name}, "
                 f"kd={program.student.loss.kd})")
  return "\n".join(lines)


def load_run_config(run_dir: Path) -> ml_collections.ConfigDict:
  """The locked config a run directory was made with (its ``config.json``)."""
  path = Path(run_dir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
  tuples = lambda x: (tuple(tuples(v) for v in x) if isinstance(x, list) else
                      {k: tuples(v) for k, v in x.items()} if isinstance(x, dict) else x)
  config = ml_collections.ConfigDict(tuples(json.loads(path.read_text())))
  config.workdir, config.name = str(Path(run_dir).parent), Path(run_dir).name
  config.progress, config.wandb.mode = False, "disabled"
  config.lock()
  return validate_config(config)


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
  splits, builder = load_data(config)
  data = SweepData(splits["train"], splits["valid"])
  teacher_run_dir = Path(config.teacher.restore_from) if config.teacher.restore_from else run_dir
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
                    teacher_run_dir=teacher_run_dir, score_source=score_source)


def restore_phase(config: ml_collections.ConfigDict, role: str, points: list[SweepPoint],
                  data: SweepData, source: Path, *, tag: str = "") -> Phase:
  """Restores a *finished* training phase from ``<source>/checkpoints/<role><tag>``."""
  trainer = make_train(config, role=role, feature_sizes=feature_sizes(data.train),
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
  history = {k: np.concatenate([np.asarray(h[k]) for h in meta["history"]], axis=1)
             for k in meta["history"][0]}
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
