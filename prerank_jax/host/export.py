"""Per-candidate scores of every evaluated model, for checking any number from outside.

A finished run writes, next to its results tables:

* ``scores.parquet``: one row per (model, test request, valid candidate) with the columns
  ``model`` (the results table's name), ``point`` (its row in the results table),
  ``request`` (index in the test split), ``candidate`` (index in the list), ``score``
  (float32, as evaluated), ``rank`` (1-based, descending score, ties by the lower index),
  ``label`` (logged), ``truth`` (graded truth) and ``exposed``.
* ``trec/run.<model>.trec``: a TREC run file per model, ``qid Q0 docid rank score tag``
  with ``qid = q<request>`` and ``docid = d<candidate>``.
* ``trec/qrels.truth.txt``: the truth as TREC qrels, ``qid 0 docid grade``, for every
  valid candidate (written when every grade is an integer, as trec_eval requires).

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
from typing import Sequence

import numpy as np

SCORES_FILE = "scores.parquet"
TREC_DIR = "trec"
QRELS_FILE = "qrels.truth.txt"


def file_tag(model: str) -> str:
  """A file-name and TREC-tag safe form of a model name: ``"student T=1 α=0.5"`` →
  ``"student_T=1_alpha=0.5"``."""
  tag = model.replace("α", "alpha")
  tag = re.sub(r"[^A-Za-z0-9.=+-]+", "_", tag).strip("_")
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


def run_file_text(scores: np.ndarray, valid: np.ndarray, tag: str) -> str:
  """A TREC run file ``qid Q0 docid rank score tag`` of one model's ``[R, N]`` scores:
  valid candidates only, in rank order, scores from :func:`tie_free_scores`."""
  exported = tie_free_scores(scores, valid)
  rank = _ranks(scores, valid)
  lines = []
  for r in range(scores.shape[0]):
    idx = np.flatnonzero(valid[r])
    idx = idx[np.argsort(rank[r, idx], kind="stable")]
    # repr of the float32 widened to float64: parsed back to the same float32.
    lines += [f"q{r} Q0 d{i} {rank[r, i]} {float(exported[r, i])!r} {tag}" for i in idx]
  return "\n".join(lines) + "\n"


def qrels_text(truth: np.ndarray, valid: np.ndarray) -> str | None:
  """TREC qrels ``qid 0 docid grade`` of every valid candidate, or ``None`` when a grade
  is not an integer (trec_eval reads integer relevance)."""
  grades = np.asarray(truth)[np.asarray(valid)]
  if not np.all(np.isfinite(grades)) or not np.all(grades == np.round(grades)):
    return None
  return "\n".join(f"q{r} 0 d{i} {int(truth[r, i])}"
                   for r in range(truth.shape[0]) for i in np.flatnonzero(valid[r])) + "\n"


def write_scores(run_dir: Path, models: Sequence[str], scores: np.ndarray, *,
                 valid: np.ndarray, label: np.ndarray, exposed: np.ndarray,
                 truth: np.ndarray | None) -> dict[str, str]:
  """Writes ``scores.parquet``, ``trec/run.<model>.trec`` and ``trec/qrels.truth.txt``.

  Args:
    run_dir: the run directory.
    models: P model names, in the order of the results table (``point`` = position).
    scores: ``[P, R, N]`` scores of the test split as evaluated.
    valid, label, exposed: ``[R, N]`` of the test split.
    truth: ``[R, N]`` graded truth, or ``None``.

  Returns:
    ``{what: relative path or note}`` for ``history.json``.
  """
  import pyarrow as pa
  import pyarrow.parquet as pq

  run_dir = Path(run_dir)
  scores = np.asarray(scores, np.float32)
  valid = np.asarray(valid, bool)
  P, R, N = scores.shape
  req, cand = np.nonzero(valid)
  ranks = np.stack([_ranks(scores[p], valid) for p in range(P)])
  truth_col = (np.asarray(truth, np.float32)[req, cand] if truth is not None
               else np.full(req.shape, np.nan, np.float32))
  table = pa.table({
      "model": pa.DictionaryArray.from_arrays(
          np.repeat(np.arange(P, dtype=np.int32), len(req)), pa.array(list(models))),
      "point": np.repeat(np.arange(P, dtype=np.int32), len(req)),
      "request": np.tile(req.astype(np.int32), P),
      "candidate": np.tile(cand.astype(np.int32), P),
      "score": scores[:, req, cand].reshape(-1),
      "rank": ranks[:, req, cand].reshape(-1),
      "label": np.tile(np.asarray(label, np.float32)[req, cand], P),
      "truth": np.tile(truth_col, P),
      "exposed": np.tile(np.asarray(exposed, bool)[req, cand], P),
  })
  _atomic(run_dir / SCORES_FILE, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
  trec = run_dir / TREC_DIR
  trec.mkdir(exist_ok=True)
  written = {"scores": SCORES_FILE}
  tags: dict[str, int] = {}
  for p, model in enumerate(models):
    tag = file_tag(model)
    if tag in tags:  # two names that sanitise alike: keep both files
      tag = f"{tag}.{p}"
    tags[tag] = p
    _write_text(trec / f"run.{tag}.trec", run_file_text(scores[p], valid, tag))
    written[f"run {model}"] = f"{TREC_DIR}/run.{tag}.trec"
  qrels = qrels_text(np.asarray(truth), valid) if truth is not None else None
  if qrels is not None:
    _write_text(trec / QRELS_FILE, qrels)
    written["qrels"] = f"{TREC_DIR}/{QRELS_FILE}"
  else:
    written["qrels"] = "not written: " + ("no truth" if truth is None
                                          else "the truth has non-integer grades")
  return written
