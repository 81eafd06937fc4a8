"""Where the results tables are made: every sweep point, the teacher and the references
evaluated on the test split, with cost columns, and the result files written
(``results.{csv,md}``, ``history.json``, per-candidate score exports)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.config import sweep_axes
from prerank_jax.evaluate import describe_excluded, evaluate_stacked, metric_names
from prerank_jax.host import export, report
from prerank_jax.host.identity import teacher_identity
from prerank_jax.host.pareto import add_cost_columns
from prerank_jax.host.processes import barrier, is_main
from prerank_jax.host.rundir import write_text_atomic
from prerank_jax.host.sweep_driver import Phase
from prerank_jax.host.teachers import combined_teacher
from prerank_jax.losses.registry import HPARAMS
from prerank_jax.models import feature_columns, feature_importance, param_count
from prerank_jax.models.cost import flops_per_candidate
from prerank_jax.train.sweep import apply_in_chunks

_COLUMN = {"temperature": "T", "learning_rate": "lr"}


class RunResult(NamedTuple):
  rows: list[dict[str, Any]]
  columns: list[str]
  table: str
  run_dir: Path
  history: dict[str, Any]
  timings: dict[str, float]


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
  student_scores = apply_in_chunks(students.compiled.apply, students.state.params,
                                   test)  # [P, R, N], bounded activations
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
