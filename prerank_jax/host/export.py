"""Per-candidate scores of every evaluated model, for checking any number from outside.

A finished run writes, next to its results tables (every column: ``docs/reference/outputs.md``):

* ``scores.parquet``: one row per (split, model, request, valid candidate) for EVERY split
  (``train``, ``valid``, ``test``, in that order, one split at a time) with the columns
  ``split``, ``model`` (the results table's name), ``point`` (its row in the results
  table), ``request`` (index in its split), ``candidate`` (index in the list), the user's
  request and candidate IDs under the user's own column names (:func:`id_columns`; absent
  when the dataset has no IDs, as the simulator), ``score`` (float32, as evaluated),
  ``rank`` (1-based, descending score, ties by the lower index), ``label`` (logged),
  ``truth`` (graded truth; NaN without one: a table without ``source.truth_column``, whose
  "truth" metrics are computed on the logged labels, has them in ``label``) and
  ``exposed``.
* ``trec/run.<model>.trec``: a TREC run file per model of the test split,
  ``qid Q0 docid rank score tag``, with the user's IDs (:func:`trec_ids`) or, without
  them, ``qid = q<request>`` and ``docid = d<candidate>``.
* ``trec/qrels.truth.txt``: the test split's truth as TREC qrels, ``qid 0 docid grade``,
  for every valid candidate (written when every grade is an integer, as trec_eval
  requires), with the same IDs as the run files. Without a truth (the truth metrics are
  computed on the logged labels) the same file holds the logged labels and is named
  ``trec/qrels.logged_labels.txt``.

**Ties.** trec_eval (and pytrec_eval) keep run scores as float32, sort by score and break
ties by docid in *descending* string order; prerank-jax breaks ties by the lower candidate
index. So that every outside tool sees our order, the run file's score column is the
evaluated float32 score, lowered inside a group of tied scores by 1, 2, … float32 units in
the last place in our rank order (and the scores right after such a group by as much as
needed to stay below it): :func:`tie_free_scores`. The order is then strict and exactly
ours; a score moves by at most N float32 ulps (about 1e-5 relative for N = 100) and only
where it ties or nearly ties. A list with a non-finite valid score (a diverged model)
writes ``-rank`` instead. ``scores.parquet`` keeps the exact evaluated scores.

Every file is written to a temporary sibling and renamed into place, like the results.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from prerank_jax.data.ids import SplitIds

SCORES_FILE = "scores.parquet"
TREC_DIR = "trec"
QRELS_FILE = "qrels.truth.txt"
LOGGED_QRELS_FILE = "qrels.logged_labels.txt"  # the qrels when the truth is the logs


def file_tag(model: str) -> str:
  """A file-name and TREC-tag safe form of a model name: ``"student temperature=1
  alpha=0.5"`` → ``"student_temperature=1_alpha=0.5"`` (model names are ASCII; any other
  run of characters becomes one ``_``)."""
  tag = re.sub(r"[^A-Za-z0-9.=+-]+", "_", model).strip("_")
  return tag or "model"


def rank_order(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """``[R, N]`` candidate indices by rank: valid by descending score (NaN last), ties by
  the lower index, then the masked ones. The same order as
  :func:`prerank_jax.metrics.ranks`."""
  scores = np.asarray(scores, np.float64)
  index = np.broadcast_to(np.arange(scores.shape[-1]), scores.shape)
  nan = np.isnan(scores) & valid
  key = np.where(nan | ~valid, np.inf, -scores)  # NaN after every number
  # lexsort: the last key is the primary one; masked slots last, by index.
  return np.lexsort((index, nan, key, ~valid), axis=-1)


def _ordered_int(x: np.ndarray) -> np.ndarray:
  """float32 → int64 keys with the float order; consecutive float32 values differ by 1
  (-0.0 and +0.0 share 0)."""
  bits = np.asarray(x, np.float32).view(np.int32).astype(np.int64)
  return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _from_ordered_int(key: np.ndarray) -> np.ndarray:
  bits = np.where(key >= 0, key, (-key) | 0x80000000).astype(np.uint32)
  return bits.view(np.float32)


def tie_free_scores(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """float32 scores ``[R, N]`` whose descending order, with no ties, is our rank order.

  Definition (per list, valid candidates in rank order j = 0, 1, …; κ maps float32 to an
  integer so that consecutive float32 values differ by 1):
    κ(e_j) = min(κ(s_j), κ(e_{j−1}) − 1) = min_{i ≤ j}(κ(s_i) + i) − j

  so ``e`` is strictly decreasing, ``e_j ≤ s_j``, and ``e_j = s_j`` except inside (or just
  after) a group of tied scores, where it is lowered by at most N float32 units in the
  last place. A list with a non-finite valid score writes ``e = −rank``. Masked slots hold
  NaN. See the module docstring for why this reproduces our tie rule in trec_eval, which
  keeps run scores as float32.
  """
  scores = np.asarray(scores, np.float32)
  valid = np.asarray(valid, bool)
  order = rank_order(scores, valid)
  s = np.take_along_axis(scores, order, axis=-1)
  v = np.take_along_axis(valid, order, axis=-1)
  position = np.broadcast_to(np.arange(s.shape[-1], dtype=np.int64), s.shape)
  finite = np.where(v, np.isfinite(s), True)
  key = np.where(finite, _ordered_int(np.where(finite, s, 0.0)), 0)
  lowered = np.minimum.accumulate(np.where(v, key + position, np.iinfo(np.int64).max),
                                  axis=-1) - position
  ok = (np.all(finite, axis=-1, keepdims=True)
        & np.all(~v | (lowered >= _ordered_int(np.float32(-3.4e38))), axis=-1, keepdims=True))
  exported = np.where(ok, _from_ordered_int(np.where(v, lowered, 0)).astype(np.float64),
                      -(position + 1.0))
  exported = np.where(v, exported, np.nan)
  out = np.empty_like(exported)
  np.put_along_axis(out, order, exported, axis=-1)
  return out.astype(np.float32)


def _ranks(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
  order = rank_order(scores, valid)
  out = np.empty(order.shape, np.int32)
  np.put_along_axis(out, order, np.broadcast_to(np.arange(1, order.shape[-1] + 1,
                                                          dtype=np.int32), order.shape),
                    axis=-1)
  return out


def _atomic(path: Path, write) -> None:
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def _write_text(path: Path, text: str) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  _atomic(path, write)


#: The columns of scores.parquet besides the user's IDs, in file order.
COLUMNS = ("split", "model", "point", "request", "candidate", "score", "rank", "label",
           "truth", "exposed")


class SplitScores(NamedTuple):
  """One split's evaluated scores and what they are checked against.

  Attributes:
    scores: ``[P, R, N]`` float32 scores of the P models (the results table's rows).
    valid, label, exposed: ``[R, N]`` of the split.
    truth: ``[R, N]`` graded truth, or ``None``.
    ids: the user's IDs of the split (:class:`~prerank_jax.data.ids.SplitIds`), or
      ``None`` (the simulator): internal indices only.
    truth_source: ``"truth"``, or ``"logged labels"`` when ``truth`` is the logged labels
      (a dataset without a truth): scores.parquet's ``truth`` is then NaN and the qrels
      file is :data:`LOGGED_QRELS_FILE`.
  """

  scores: np.ndarray
  valid: np.ndarray
  label: np.ndarray
  exposed: np.ndarray
  truth: np.ndarray | None
  ids: SplitIds | None = None
  truth_source: str = "truth"


def id_columns(ids: SplitIds) -> tuple[str, str]:
  """The scores.parquet column names of the user's request and candidate IDs.

  The user's own names (``ids.request_column``, ``ids.candidate_column``), except that a
  name taken by one of :data:`COLUMNS` (or the request ID's name, for the candidate's) is
  prefixed with ``user_`` until it is free: a table whose request column is ``request``
  gets ``user_request`` beside our index ``request``.
  """
  taken = set(COLUMNS)
  names = []
  for name in (str(ids.request_column), str(ids.candidate_column)):
    while name in taken:
      name = f"user_{name}"
    taken.add(name)
    names.append(name)
  return names[0], names[1]


def _trec_token(text: str) -> str:
  """An ID as one TREC token: every run of whitespace becomes ``_``."""
  return re.sub(r"\s+", "_", str(text).strip())


def trec_ids(ids: SplitIds | None, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(qid [R], docid [R, N])`` strings of the TREC files of one split.

  Definition: with the user's IDs, each ID with its whitespace runs replaced by ``_``
  (TREC files are whitespace-separated); an empty ID falls back to ``q<request>`` /
  ``d<candidate>``. IDs that are no longer unique (two requests with one qid, or two valid
  candidates of one list with one docid, after sanitising) get ``~<index>`` appended,
  every copy, so that trec_eval never merges two of our lists or candidates. Without IDs
  (``None``): ``q<request>`` and ``d<candidate>``.
  """
  valid = np.asarray(valid, bool)
  R, N = valid.shape
  if ids is None:
    return (np.array([f"q{r}" for r in range(R)], dtype=object),
            np.array([[f"d{i}" for i in range(N)] for _ in range(R)], dtype=object))
  qid = np.array([_trec_token(q) or f"q{r}" for r, q in enumerate(np.asarray(ids.request))],
                 dtype=object)
  values, counts = np.unique(qid.astype(str), return_counts=True)
  repeated = set(values[counts > 1])
  qid = np.array([f"{q}~{r}" if q in repeated else q for r, q in enumerate(qid)], dtype=object)
  candidate = np.asarray(ids.candidate)
  docid = np.empty((R, N), dtype=object)
  for r in range(R):
    row = [_trec_token(c) or f"d{i}" for i, c in enumerate(candidate[r])]
    seen: dict[str, int] = {}
    for i in np.flatnonzero(valid[r]):
      seen[row[i]] = seen.get(row[i], 0) + 1
    docid[r] = [f"{d}~{i}" if seen.get(d, 0) > 1 and valid[r, i] else d
                for i, d in enumerate(row)]
  return qid, docid


def run_file_text(scores: np.ndarray, valid: np.ndarray, tag: str, *,
                  qids: Sequence[str] | None = None,
                  docids: np.ndarray | None = None) -> str:
  """A TREC run file ``qid Q0 docid rank score tag`` of one model's ``[R, N]`` scores:
  valid candidates only, in rank order, scores from :func:`tie_free_scores`; ``qids``
  ``[R]`` and ``docids`` ``[R, N]`` from :func:`trec_ids` (default ``q<r>``/``d<i>``)."""
  exported = tie_free_scores(scores, valid)
  rank = _ranks(scores, valid)
  lines = []
  for r in range(scores.shape[0]):
    idx = np.flatnonzero(valid[r])
    idx = idx[np.argsort(rank[r, idx], kind="stable")]
    q = f"q{r}" if qids is None else qids[r]
    doc = (lambda i: f"d{i}") if docids is None else (lambda i, r=r: docids[r, i])
    # repr of the float32 widened to float64: parsed back to the same float32.
    lines += [f"{q} Q0 {doc(i)} {rank[r, i]} {float(exported[r, i])!r} {tag}" for i in idx]
  return "\n".join(lines) + "\n"


def qrels_text(truth: np.ndarray, valid: np.ndarray, *, qids: Sequence[str] | None = None,
               docids: np.ndarray | None = None) -> str | None:
  """TREC qrels ``qid 0 docid grade`` of every valid candidate, or ``None`` when a grade
  is not an integer (trec_eval reads integer relevance); IDs as :func:`run_file_text`."""
  grades = np.asarray(truth)[np.asarray(valid)]
  if not np.all(np.isfinite(grades)) or not np.all(grades == np.round(grades)):
    return None
  q = (lambda r: f"q{r}") if qids is None else (lambda r: qids[r])
  doc = (lambda r, i: f"d{i}") if docids is None else (lambda r, i: docids[r, i])
  return "\n".join(f"{q(r)} 0 {doc(r, i)} {int(truth[r, i])}"
                   for r in range(truth.shape[0]) for i in np.flatnonzero(valid[r])) + "\n"


def _split_tables(split: str, models: Sequence[str], data: SplitScores, names: tuple[str, str]
                  | None):
  """The Arrow tables of one split, one per model (one row group each)."""
  import pyarrow as pa

  scores = np.asarray(data.scores, np.float32)
  valid = np.asarray(data.valid, bool)
  P = scores.shape[0]
  if P != len(models):
    raise ValueError(f"write_scores: {split} has scores of {P} models, the table names "
                     f"{len(models)}")
  if scores.shape[1:] != valid.shape:
    raise ValueError(f"write_scores: {split} scores {scores.shape[1:]} do not match its "
                     f"lists {valid.shape}")
  req, cand = np.nonzero(valid)
  n = len(req)
  columns = {
      "request": pa.array(req.astype(np.int32)),
      "candidate": pa.array(cand.astype(np.int32)),
      "label": pa.array(np.asarray(data.label, np.float32)[req, cand]),
      "truth": pa.array(np.asarray(data.truth, np.float32)[req, cand]
                        if data.truth is not None and data.truth_source == "truth"
                        else np.full(n, np.nan, np.float32)),
      "exposed": pa.array(np.asarray(data.exposed, bool)[req, cand]),
  }
  if names is not None:
    from prerank_jax.data.ids import check_ids

    ids = check_ids(data.ids, num_requests=valid.shape[0], list_size=valid.shape[1],
                    name=f"scores.parquet {split}")
    columns[names[0]] = pa.array(np.asarray(ids.request).astype(str)[req], pa.string())
    columns[names[1]] = pa.array(np.asarray(ids.candidate).astype(str)[req, cand],
                                 pa.string())
  split_col = pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([split]))
  dictionary = pa.array(list(models))
  order = ["split", "model", "point", "request", "candidate",
           *(names or ()), "score", "rank", "label", "truth", "exposed"]
  for p in range(P):
    ranks = _ranks(scores[p], valid)
    table = {
        **columns,
        "split": split_col,
        "model": pa.DictionaryArray.from_arrays(np.full(n, p, np.int32), dictionary),
        "point": pa.array(np.full(n, p, np.int32)),
        "score": pa.array(scores[p][req, cand]),
        "rank": pa.array(ranks[req, cand]),
    }
    yield pa.table({c: table[c] for c in order})


def write_scores(run_dir: Path, models: Sequence[str],
                 splits: Iterable[tuple[str, SplitScores]], *,
                 trec_split: str = "test") -> dict[str, str]:
  """Writes ``scores.parquet`` (every split given) and the TREC files of ``trec_split``.

  The splits are consumed one at a time (``splits`` may be a generator that scores each
  split only when asked), each written as one Parquet row group per model (zstd), so
  only one split's scores are in memory at once. The file is written to a temporary
  sibling and renamed into place only when every split is written.

  Args:
    run_dir: the run directory.
    models: P model names, in the order of the results table (``point`` = position).
    splits: ``(name, SplitScores)`` pairs, e.g. train, valid, test. Either every split
      has IDs or none has (the columns of one file are fixed).
    trec_split: the split written as ``trec/run.<model>.trec`` and
      ``trec/qrels.truth.txt``.

  Returns:
    ``{what: relative path or note}`` for ``history.json``.

  Raises:
    ValueError: when a split's scores or IDs do not match its lists (naming the split),
      or when only some splits have IDs.
  """
  import pyarrow.parquet as pq

  run_dir = Path(run_dir)
  written = {"scores": SCORES_FILE}
  done: list[str] = []

  def write(tmp):
    writer, names = None, None
    try:
      for split, data in splits:
        split_names = id_columns(data.ids) if data.ids is not None else None
        if done and split_names != names:
          raise ValueError(f"write_scores: split {split!r} has ID columns {split_names}, "
                           f"{done[0]!r} has {names}; every split needs the same")
        names = split_names
        for table in _split_tables(split, models, data, names):
          if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
          writer.write_table(table)
        if split == trec_split:
          written.update(_write_trec(run_dir, split, models, data))
        done.append(split)
    finally:
      if writer is not None:
        writer.close()
    if writer is None:
      raise ValueError("write_scores: no split to write")

  _atomic(run_dir / SCORES_FILE, write)
  written["scores_splits"] = ", ".join(done)
  written.setdefault("trec", f"not written: no {trec_split!r} split")
  return written


def _write_trec(run_dir: Path, split: str, models: Sequence[str],
                data: SplitScores) -> dict[str, str]:
  scores = np.asarray(data.scores, np.float32)
  valid = np.asarray(data.valid, bool)
  qids, docids = trec_ids(data.ids, valid)
  trec = run_dir / TREC_DIR
  trec.mkdir(exist_ok=True)
  written = {"trec": f"{TREC_DIR}/ ({split} split; IDs: "
                     + ("the user's, sanitised" if data.ids is not None
                        else "q<request>, d<candidate>") + ")"}
  tags: dict[str, int] = {}
  for p, model in enumerate(models):
    tag = file_tag(model)
    if tag in tags:  # two names that sanitise alike: keep both files
      tag = f"{tag}.{p}"
    tags[tag] = p
    _write_text(trec / f"run.{tag}.trec",
                run_file_text(scores[p], valid, tag, qids=qids, docids=docids))
    written[f"run {model}"] = f"{TREC_DIR}/run.{tag}.trec"
  truth = data.truth
  qrels = (qrels_text(np.asarray(truth), valid, qids=qids, docids=docids)
           if truth is not None else None)
  if qrels is not None:
    name = QRELS_FILE if data.truth_source == "truth" else LOGGED_QRELS_FILE
    _write_text(trec / name, qrels)
    written["qrels"] = f"{TREC_DIR}/{name}"
  else:
    written["qrels"] = "not written: " + ("no truth" if truth is None
                                          else "the truth has non-integer grades")
  return written
