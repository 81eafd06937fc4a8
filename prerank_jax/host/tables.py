"""Where the results tables are made: every sweep point, the teacher and the references
evaluated on the test split and on the validation split (``valid/`` columns), with cost
columns, the point chosen on validation, and the result files written
(``results.{csv,md}``, ``history.json``, per-candidate score exports of every split; see
``docs/reference/outputs.md``)."""

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
from prerank_jax.data.ids import SplitIds
from prerank_jax.data.tfds_base import RecordSplit
from prerank_jax.evaluate import describe_excluded, evaluate_stacked, metric_names, pad_lists
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


class RunResult(NamedTuple):
  rows: list[dict[str, Any]]
  columns: list[str]
  table: str
  run_dir: Path
  history: dict[str, Any]
  timings: dict[str, float]


#: ``jax.random.fold_in`` salt of the ``random`` reference per split (test: the seed's key
#: itself, as before validation metrics existed).
_RANDOM_SALT = {"test": None, "valid": 1, "train": 2}
VALID_PREFIX = report.VALID_PREFIX  # the validation split's metric columns: valid/<metric>
REFERENCES = ("teacher", "oracle (truth)", "random")
#: ``truth_source`` of a dataset without a truth: its "truth" metrics use the logged labels.
LOGGED_LABELS = "logged labels"


def truth_source(config: ml_collections.ConfigDict) -> str:
  """What the data's ``true_relevance`` is: ``"truth"`` (the simulator's, LETOR's judged
  grades, RecFlow's protocol labels, a table's ``source.truth_column``) or
  :data:`LOGGED_LABELS` (a Parquet/CSV table without ``source.truth_column`` and
  MovieLens: the logged labels, 0 where not exposed). With logged labels the truth
  metrics (``ndcg@k``, ``mrr``, ``recall@*``, ``precision@k``, ``sys_*``) and the oracle
  row are computed on the logged labels, and the outputs say so
  (:func:`references`, the ``truth_source`` column, :func:`truth_warning`)."""
  from prerank_jax.data.registry import DATASETS

  spec = DATASETS.get(config.dataset)
  kind = spec.kind if spec is not None else ""
  if (kind == "tabular" and not config.source.get("truth_column", "")) or kind == "movielens":
    return LOGGED_LABELS
  return "truth"


def references(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The reference rows' names: :data:`REFERENCES`, with the oracle named
  ``oracle (logged labels)`` when :func:`truth_source` is the logged labels."""
  if truth_source(config) == LOGGED_LABELS:
    return tuple(f"oracle ({LOGGED_LABELS})" if r == "oracle (truth)" else r
                 for r in REFERENCES)
  return REFERENCES


def truth_warning(config: ml_collections.ConfigDict) -> str | None:
  """The one line printed at the start of a run whose data has no truth, else ``None``."""
  if truth_source(config) != LOGGED_LABELS:
    return None
  where = ("MovieLens has no truth apart from its ratings"
           if config.dataset.startswith("movielens") else "no source.truth_column")
  return (f"warning: {config.dataset}: {where}, so the truth metrics (ndcg@k, mrr, "
          "recall@*, precision@k, sys_*) and the oracle row are computed on the logged "
          "labels (results.csv: truth_source = 'logged labels', 'oracle (logged labels)')")


def split_scores(config: ml_collections.ConfigDict, students: Phase, batch: Batch, *,
                 split: str = "test") -> tuple[jax.Array, jax.Array]:
  """Scores of every sweep point and the references on one split.

  Returns:
    ``(scores [P + 3, R, N], teacher [R, N])``: the P students' scores (chunked over
    requests, :func:`~prerank_jax.train.sweep.apply_in_chunks`), then the references
    :func:`references`: the combined teacher, the truth (``true_relevance``) and standard
    normal noise keyed by ``config.seed`` (folded with the split's salt, so that each
    split draws its own); and the combined teacher alone.
  """
  teacher = combined_teacher(config, batch)
  key = jax.random.key(config.seed)
  if _RANDOM_SALT.get(split) is not None:
    key = jax.random.fold_in(key, _RANDOM_SALT[split])
  references = [teacher, batch.true_relevance, jax.random.normal(key, batch.valid.shape)]
  student_scores = apply_in_chunks(students.compiled.apply, students.state.params,
                                   batch)  # [P, R, N], bounded activations
  return jnp.concatenate([student_scores, jnp.stack(references)]), teacher


def evaluate_rows(config: ml_collections.ConfigDict, students: Phase,
                  test: Batch, *, valid: Batch | None = None,
                  scores_out: dict | None = None
                  ) -> tuple[list[dict[str, Any]], list[str], str]:
  """Rows of the results table (every sweep point, the teacher and the references), its
  columns, and a note on how many lists each metric left out of its mean (test split).

  Every metric of :func:`~prerank_jax.evaluate.metric_names` is computed on ``test``
  (the plain column names) and, when ``valid`` is given, on the validation split as well
  (the same names prefixed ``valid/``, computed the same way by the same compiled
  program: XLA reuses it when the two splits have the same shape, as the simulator's
  do, and splits of different sizes are padded to one shape with empty lists left out of
  every mean, :func:`~prerank_jax.evaluate.pad_lists`). A sweep point is chosen on the
  ``valid/`` columns and reported by the plain ones.
  With ``scores_out`` (a dict), the evaluated ``[rows, R, N]`` scores of each split are
  stored under ``"test"`` (and ``"valid"``).

  Raises:
    FloatingPointError: when a metric of a row that did not diverge is not finite, on
      either split (nothing is written).
  """
  ek = dict(k=config.eval.k, relevant_grade=config.eval.relevant_grade,
            ndcg_empty=config.eval.ndcg_empty, gain=config.eval.get("gain", "exp2"),
            protocol=config.eval.get("protocol", ""))
  columns_m = metric_names(k=config.eval.k, keep_ratios=config.eval.keep_ratios,
                           protocol=ek["protocol"])
  evaluated = {}
  # Splits of different numbers of lists are padded with empty lists to the larger one
  # and evaluated with a mask of their real lists (the same values, to float32 rounding):
  # one compiled evaluation serves both. Same shapes (the simulator) need no padding.
  pad_to = None
  if (valid is not None and valid.valid.shape != test.valid.shape
      and valid.list_size == test.list_size and not ek["protocol"]):
    pad_to = max(test.num_requests, valid.num_requests)
  for split, batch in (("test", test), ("valid", valid)):
    if batch is None:
      continue
    all_scores, teacher = split_scores(config, students, batch, split=split)
    if scores_out is not None:
      scores_out[split] = np.asarray(jax.device_get(all_scores))
    lists = None
    if pad_to is not None:
      batch, all_scores, teacher, lists = pad_lists(batch, all_scores, teacher, pad_to)
    evaluated[split] = jax.device_get(evaluate_stacked(
        all_scores, batch, teacher_scores=teacher, lists=lists,
        keep_ratios=tuple(config.eval.keep_ratios), return_excluded=True, **ek))
  values, excluded = evaluated["test"]
  points = students.points
  diverged = np.asarray(students.state.diverged)
  swept = [n for n in HPARAMS if n in sweep_axes(config) or n in ("alpha", "learning_rate")]
  seeded = bool(config.sweep.get("seeds", ()))  # replicates: a "replicate_seed" column
  columns_v = [f"{VALID_PREFIX}{c}" for c in columns_m] if "valid" in evaluated else []
  rows = []
  logged = truth_source(config) == LOGGED_LABELS
  for i, name in enumerate([p.name for p in points] + list(references(config))):
    row = {"model": name if i >= len(points) else f"student {name}"}
    if i < len(points):
      row.update({n: points[i].hparams[n] for n in swept})
      if seeded:
        row["replicate_seed"] = points[i].seed
      row["status"] = "diverged" if diverged[i] else "ok"
    else:
      row["status"] = "reference"
    if logged:  # the truth metrics of this row are computed on the logged labels
      row["truth_source"] = LOGGED_LABELS
    row.update({c: float(values[c][i]) for c in columns_m})
    if columns_v:
      row.update({v: float(evaluated["valid"][0][c][i]) for c, v in zip(columns_m, columns_v)})
    bad = [c for c in (*columns_m, *columns_v) if not np.isfinite(row[c])]
    if bad and row["status"] != "diverged":
      raise FloatingPointError(f"evaluation of {row['model']!r} produced non-finite "
                               f"{bad}; no results were written")
    rows.append(row)
  note = describe_excluded(excluded, [r["model"] for r in rows], num_lists=test.num_requests,
                           **ek)
  return rows, ["model", *swept,
                *(["replicate_seed"] if seeded else []), *columns_m, *columns_v,
                "status", *(["truth_source"] if logged else [])], note


def finish_run(config: ml_collections.ConfigDict, run_dir: Path, members: list[Phase],
               students: list[tuple[str, ml_collections.ConfigDict, Phase]],
               scored: dict[str, Batch], timings: dict[str, float], t_start: float, *,
               teacher_run_dir: Path, score_source: dict[str, str],
               ids: dict[str, SplitIds] | None = None) -> RunResult:
  """Evaluates the trained phases on the test and validation splits and writes the
  result files.

  The results tables hold both splits' metrics (validation as ``valid/<metric>``), and
  ``results.md`` and the terminal say which student point validation selects
  (:func:`~prerank_jax.host.report.select_on_valid`). ``scores.parquet`` holds every
  split's per-candidate scores, keyed by ``ids`` (``{split: SplitIds}``, the dataset's
  ``Loaded.ids``) when given, else by internal indices only
  (:func:`~prerank_jax.host.export.write_scores`).

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
  # No members: a logged teacher (teacher.model.name="logged"), the ranker's scores read
  # with the data; it has no model here, so its cost columns are 0.
  teachers = members[0] if members else None
  member_costs = [{"model": m.trainer.model.name, "count": len(m.points),
                   "params": param_count(first(m.state.params)),
                   "flops_per_candidate": flops_per_candidate(
                       m.trainer.model, first(m.state.params), sample)} for m in members
                  ] or [{"model": "logged", "count": int(test.teacher_scores.shape[-1]),
                         "params": 0, "flops_per_candidate": 0.0}]
  teacher_costs = {  # one of this run's own teachers
      "teacher_params": member_costs[0]["params"],
      "teacher_flops_per_candidate": member_costs[0]["flops_per_candidate"],
  }
  # The teacher row scores with every member: its cost is theirs summed.
  ensemble_costs = {"teacher_params": sum(c["params"] * c["count"] for c in member_costs),
                    "teacher_flops_per_candidate": sum(c["flops_per_candidate"] * c["count"]
                                                       for c in member_costs)}
  rows, history_students, student_costs, importance = [], {}, [], {}
  per_model = {}  # id(row) -> {split: its evaluated scores [R, N]}, for the exports
  kept = []  # (program j, index in its rows, row): where each table row's scores come from
  for j, (label, program, phase) in enumerate(students):
    scores_j = {}
    rows_j, columns, excluded_note = evaluate_rows(program, phase, test,
                                                   valid=scored["valid"], scores_out=scores_j)
    costs = {**teacher_costs,
             "student_params": param_count(first(phase.state.params)),
             "student_flops_per_candidate": flops_per_candidate(
                 phase.trainer.model, first(phase.state.params), sample)}
    columns = add_cost_columns(rows_j, columns, {**costs, **ensemble_costs})
    prefix = f"[{label}] " if len(students) > 1 else ""
    for row in rows_j:
      if row["status"] != "reference":
        row["model"] = f"student {prefix}{row['model'].removeprefix('student ')}"
    per_model.update({id(r): {split: s[i] for split, s in scores_j.items()}
                      for i, r in enumerate(rows_j) if j == 0 or r["status"] != "reference"})
    kept += [(j, i, r) for i, r in enumerate(rows_j) if j == 0 or r["status"] != "reference"]
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
            f"{test.list_size} candidates (the plain metric columns); validation split: "
            f"{scored['valid'].num_requests} requests (the valid/ columns). "
            f"Teacher: {config.teacher.model.name} "
            f"({teacher_costs['teacher_params']} params, "
            f"{teacher_costs['teacher_flops_per_candidate']:.0f} FLOPs/candidate; "
            f"{teacher_run_dir / 'checkpoints' / 'teacher' if members else 'logged scores'}"
            f", identity "
            f"{teacher_identity(config)})"
            + "".join(f" + {c['count']}× {c['model']} ({c['params']} params, "
                      f"{c['flops_per_candidate']:.0f} FLOPs/candidate; {d})"
                      for c, d in zip(member_costs[1:], config.teacher.ensemble_with))
            + f", student: {'; '.join(student_costs)}. "
            f"Wall time {timings['total_s']:.1f} s on {jax.device_count()} "
            f"{jax.default_backend()} device(s).")
  if truth_source(config) == LOGGED_LABELS:
    header += ("\n\nNo truth in these data: the truth metrics (ndcg@k, mrr, recall@*, "
               "precision@k, sys_*) and the oracle row are computed on the **logged "
               "labels** (column truth_source).")
  history = {
      "teacher": ({} if teachers is None
                  else {k: v.tolist() for k, v in teachers.history.items()}),
      "students": history_students,
      "teacher_source": (str(teacher_run_dir / "checkpoints" / "teacher") if members
                         else "logged"),
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
  selected = report.select_on_valid(rows, report.headline_metric(
      columns, k=config.eval.k, keep_ratios=config.eval.keep_ratios,
      has_truth=test.true_relevance is not None))
  # The train split's scores for scores.parquet, on every process (scoring is a collective
  # computation in a multi-process run); only process 0 writes.
  per_model = _score_train(rows, kept, per_model, students, scored["train"])
  if is_main():  # per-candidate scores + TREC run files: any number checkable outside
    history["exports"] = export.write_scores(
        run_dir, [r["model"] for r in rows],
        _export_splits(rows, per_model, scored, ids, truth_source(config)))
  header += f"\n\n{report.selection_text(selected)}"
  for name, text in report.result_files(rows, columns, history=history,
                                        header=f"{header}\n\n{excluded_note}").items():
    if is_main():
      write_text_atomic(run_dir / name, text)
  barrier("results")
  shown = report.terminal_columns(columns, k=config.eval.k,
                                  keep_ratios=config.eval.keep_ratios,
                                  has_truth=test.true_relevance is not None)
  logged_note = ("Truth metrics and the oracle row: computed on the logged labels (no "
                 "truth in these data).\n\n" if truth_source(config) == LOGGED_LABELS else "")
  table = (f"{report.format_table(rows, shown)}\n\n{logged_note}"
           f"{report.full_table_note(run_dir, columns, shown)}\n\n"
           f"{report.selection_text(selected)}\n\n{excluded_note}")
  return RunResult(rows, columns, table, run_dir, history, timings)


def _score_train(rows: list[dict[str, Any]], kept: list[tuple[int, int, dict[str, Any]]],
                 per_model: dict[int, dict[str, np.ndarray]],
                 students: list[tuple[str, ml_collections.ConfigDict, Phase]],
                 train: Batch) -> dict[int, dict[str, np.ndarray]]:
  """``per_model`` with each row's ``"train"`` scores ``[R, N]`` added: every program's
  points and references scored on the train split (:func:`split_scores`), one program
  at a time, each row taking its own program's scores."""
  if isinstance(train, RecordSplit):  # left on disk: scores.parquet holds valid and test
    return per_model
  where = {id(r): (j, i) for j, i, r in kept}
  for j, (_, program, phase) in enumerate(students):
    scores = np.asarray(jax.device_get(split_scores(program, phase, train, split="train")[0]))
    for r in rows:
      if where[id(r)][0] == j:
        per_model[id(r)]["train"] = scores[where[id(r)][1]]
  return per_model


def _export_splits(rows: list[dict[str, Any]], per_model: dict[int, dict[str, np.ndarray]],
                   scored: dict[str, Batch], ids: dict[str, SplitIds] | None,
                   source: str = "truth"):
  """Yields ``(split, SplitScores)`` for train (unless left on disk), valid and test, in the
  rows' order; each split's ``[rows, R, N]`` stack is made only when the writer asks."""
  for split in ("train", "valid", "test"):
    batch = scored[split]
    if isinstance(batch, RecordSplit):  # a train split left on disk is not exported
      continue
    scores = np.stack([per_model[id(r)][split] for r in rows])
    yield split, export.SplitScores(
        scores, valid=np.asarray(batch.valid), label=np.asarray(batch.label),
        exposed=np.asarray(batch.exposed),
        truth=None if batch.true_relevance is None else np.asarray(batch.true_relevance),
        ids=None if ids is None else ids.get(split), truth_source=source)
