"""The host-side pipeline: config → data → teacher → sweep → evaluation → report.

Only this floor does I/O (progress bars, files). Compiled work runs in chunks of epochs;
between chunks the host updates the progress bar.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from prerank_jax.batch import Batch, feature_sizes, validate_batch
from prerank_jax.config import check_against_data, sweep_axes, validate_config
from prerank_jax.data.simulator import simulate
from prerank_jax.evaluate import evaluate_stacked, metric_names
from prerank_jax.host import report
from prerank_jax.losses.registry import HPARAMS
from prerank_jax.models import param_count
from prerank_jax.models.cost import flops_per_candidate
from prerank_jax.train.loop import SweepData, make_train
from prerank_jax.train.sweep import SweepPoint, compile_sweep, grid_points, stack_points


_COLUMN = {"temperature": "T", "learning_rate": "lr"}


class RunResult(NamedTuple):
  rows: list[dict[str, Any]]
  columns: list[str]
  table: str
  run_dir: Path
  history: dict[str, Any]
  timings: dict[str, float]


def load_data(config: ml_collections.ConfigDict) -> dict[str, Batch]:
  """Builds and validates the train/valid/test splits named by the config."""
  if config.dataset != "simulator":
    raise ValueError(f"dataset: unknown dataset {config.dataset!r}; valid names are "
                     "['simulator']")
  splits = simulate(config.data, seed=config.seed)
  for name, batch in splits.items():
    validate_batch(batch, name=name)
  return splits


def _run_chunks(compiled, state, hparams, data: SweepData, *, num_chunks: int,
                steps_per_chunk: int, desc: str, show: bool):
  """Runs the compiled chunks with a host progress bar; returns state and history."""
  num_points = int(next(iter(hparams.values())).shape[0])
  history = []
  with tqdm(total=num_chunks * steps_per_chunk * num_points, desc=desc, unit="pt·step",
            disable=not show, leave=True, dynamic_ncols=True) as bar:
    for _ in range(num_chunks):
      state, stats = compiled.run_chunk(state, hparams, data)
      stats = jax.device_get(stats)  # [P, epochs_per_chunk] each
      history.append(stats)
      bar.update(steps_per_chunk * num_points)
      bar.set_postfix(loss=f"{np.nanmean(stats['loss'][:, -1]):.4f}")
  merged = {k: np.concatenate([h[k] for h in history], axis=1) for k in history[0]}
  return state, merged


def _train_role(config, role: str, points: list[SweepPoint], data: SweepData, show: bool):
  trainer = make_train(config, role=role, feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests)
  compiled = compile_sweep(trainer)
  hparams, rngs = stack_points(points)
  state = compiled.init(hparams, rngs)
  num_chunks = config[role].num_epochs // config[role].epochs_per_chunk
  state, history = _run_chunks(
      compiled, state, hparams, data, num_chunks=num_chunks,
      steps_per_chunk=trainer.steps_per_epoch * config[role].epochs_per_chunk,
      desc=f"{role} ({len(points)} pt)", show=show)
  return trainer, compiled, state, history


def student_points(config: ml_collections.ConfigDict) -> list[SweepPoint]:
  """The sweep grid, plus a ground-truth-only student (α = 0) per learning rate."""
  points = grid_points(sweep_axes(config), seed=config.seed, mode=config.sweep.mode)
  if config.sweep.gt_only_baseline:
    rates = sorted({p.hparams["learning_rate"] for p in points})
    for lr in rates:
      name = f"gt-only lr={lr:g}" if len(rates) > 1 else "gt-only"
      points.append(SweepPoint(name, {**points[0].hparams, "alpha": 0.0,
                                      "learning_rate": lr}, config.seed))
  return points


def run(config: ml_collections.ConfigDict, *, show_progress: bool | None = None) -> RunResult:
  """Runs the whole pipeline and writes ``<workdir>/<name>/``.

  Nothing is written unless every stage succeeded and every reported number is finite.
  """
  t_start = time.perf_counter()
  validate_config(config)
  run_dir = Path(config.workdir) / config.name
  if run_dir.exists() and not config.overwrite:
    raise FileExistsError(f"{run_dir} exists; choose another --config.name or pass "
                          "--config.overwrite=True")
  show = config.progress if show_progress is None else show_progress
  timings = {}

  splits = load_data(config)
  check_against_data(config, shortest_list=int(min(b.valid.sum(-1).min()
                                                   for b in splits.values())),
                     num_train_requests=splits["train"].num_requests)
  timings["data_s"] = time.perf_counter() - t_start

  # Teacher(s): a sweep of seeds, trained on exposed labels only (α ≡ 0, kd="none").
  t0 = time.perf_counter()
  teacher_hparams = grid_points({"alpha": (0.0,),
                                 "learning_rate": (config.teacher.learning_rate,)},
                                seed=0)[0].hparams
  teacher_points = [SweepPoint(f"teacher seed={config.seed + i}", teacher_hparams,
                               config.seed + 1000 + i)
                    for i in range(config.teacher.num_teachers)]
  data = SweepData(splits["train"], splits["valid"])
  t_trainer, t_compiled, t_state, t_history = _train_role(config, "teacher", teacher_points,
                                                          data, show)
  if bool(np.any(jax.device_get(t_state.diverged))):
    raise FloatingPointError("teacher: training diverged (non-finite loss); lower "
                             "teacher.learning_rate")
  # Teacher scores are computed once per split and shared by every sweep point.
  scored = {}
  for name, batch in splits.items():
    scores = t_compiled.apply(t_state.params, batch)  # [M, R, N]
    scored[name] = validate_batch(
        batch._replace(teacher_scores=jnp.moveaxis(scores, 0, -1)), name=f"{name}",
        require_teacher=True)
  timings["teacher_s"] = time.perf_counter() - t0

  # Students: the whole grid as one vmapped program.
  t0 = time.perf_counter()
  points = student_points(config)
  data = SweepData(scored["train"], scored["valid"])
  s_trainer, s_compiled, s_state, s_history = _train_role(config, "student", points, data,
                                                          show)
  timings["students_s"] = time.perf_counter() - t0

  # Evaluation on held-out requests over full lists.
  t0 = time.perf_counter()
  test = scored["test"]
  teacher_test = jnp.mean(test.teacher_scores, axis=-1)
  references = {
      "teacher": teacher_test,
      "oracle (truth)": test.true_relevance,
      "random": jax.random.normal(jax.random.key(config.seed), test.valid.shape),
  }
  student_scores = s_compiled.apply(s_state.params, test)  # [P, R, N]
  all_scores = jnp.concatenate([student_scores, jnp.stack(list(references.values()))])
  ek = dict(k=config.eval.k, keep_ratios=tuple(config.eval.keep_ratios),
            relevant_grade=config.eval.relevant_grade)
  values = jax.device_get(evaluate_stacked(all_scores, test, teacher_scores=teacher_test,
                                           **ek))
  timings["eval_s"] = time.perf_counter() - t0

  columns_m = metric_names(k=config.eval.k, keep_ratios=config.eval.keep_ratios)
  diverged = np.asarray(jax.device_get(s_state.diverged))
  rows = []
  names = [p.name for p in points] + list(references)
  swept = [n for n in HPARAMS if n in sweep_axes(config) or n in ("alpha", "learning_rate")]
  for i, name in enumerate(names):
    row = {"model": name if i >= len(points) else f"student {name}"}
    if i < len(points):
      row.update({_COLUMN.get(n, n): points[i].hparams[n] for n in swept})
      row["status"] = "diverged" if diverged[i] else "ok"
    else:
      row["status"] = "reference"
    row.update({c: float(values[c][i]) for c in columns_m})
    bad = [c for c in columns_m if not np.isfinite(row[c])]
    if bad and row["status"] != "diverged":
      raise FloatingPointError(f"evaluation of {row['model']!r} produced non-finite "
                               f"{bad}; nothing was written")
    rows.append(row)
  columns = ["model", *(_COLUMN.get(n, n) for n in swept), *columns_m, "status"]

  sample = scored["valid"].take(slice(0, min(64, scored["valid"].num_requests)))
  first = lambda tree: jax.tree.map(lambda x: x[0], tree)
  costs = {
      "teacher_params": param_count(first(t_state.params)),
      "student_params": param_count(first(s_state.params)),
      "teacher_flops_per_candidate": flops_per_candidate(t_trainer.model,
                                                         first(t_state.params), sample),
      "student_flops_per_candidate": flops_per_candidate(s_trainer.model,
                                                         first(s_state.params), sample),
  }
  timings["total_s"] = time.perf_counter() - t_start
  header = (f"# {config.name}\n\nTest split: {test.num_requests} requests, lists of up to "
            f"{test.list_size} candidates. Teacher: {config.teacher.model.name} "
            f"({costs['teacher_params']} params, "
            f"{costs['teacher_flops_per_candidate']:.0f} FLOPs/candidate), student: "
            f"{config.student.model.name} ({costs['student_params']} params, "
            f"{costs['student_flops_per_candidate']:.0f} FLOPs/candidate). "
            f"Wall time {timings['total_s']:.1f} s.")
  history = {
      "teacher": {k: v.tolist() for k, v in t_history.items()},
      "students": {p.name: {k: v[i].tolist() for k, v in s_history.items()}
                   for i, p in enumerate(points)},
      "costs": costs,
      "timings": timings,
  }
  table = report.format_table(rows, columns)
  report.write_run_dir(run_dir, report.run_files(
      rows, columns, config_json=config.to_json_best_effort(indent=1, sort_keys=True),
      history=history, header=header), overwrite=config.overwrite)
  return RunResult(rows, columns, table, run_dir, history, timings)
