"""A production ranker's logged scores as the teacher (``teacher.model.name="logged"``).

The scores come with the data: columns of a Parquet/CSV table
(``source.teacher_score_columns``) or score files aligned line by line with LibSVM files
(``source.teacher_score_file``, the format LightGBM's ``predict`` writes). The loaders
store them as they are read, ``NaN`` where a ranker gave no score, in a record field
``logged_scores [N, M]``; :func:`attach_logged_teacher` turns them into the batch's
``teacher_scores [R, N, M]`` (logits) and ``teacher_mask [R, N, M]`` when the data are
loaded, so a change of ``teacher.score_kind`` or ``teacher.missing`` needs no new
preparation.

Score kinds (``teacher.score_kind``), converted to the logits every distillation loss reads:

* ``"logit"`` (default): any finite real, used as it is;
* ``"probability"``: p in [0, 1], clipped to ``[PROBABILITY_CLIP, 1 − PROBABILITY_CLIP]``
  (1e-6: logits within ±13.8) and mapped to ``log p − log(1 − p)``; without the clip a
  logged 0 or 1 would be an infinite logit;
* ``"rank"``: the ranker's position, 1 = best (any real ≥ 1, ties allowed), mapped to
  ``−rank``: one logit unit per position, as the rank ensemble
  (:func:`prerank_jax.losses.ensemble.mean_rank`) scores; order-only losses see the
  ranker's order exactly, and a softmax at temperature T puts ``e^{−1/T}`` times less
  mass on each next position.

Missing scores (a null cell, ``NaN``, a ranker that scored only its own top-k) are never
read as 0: with ``teacher.missing="mask"`` (default) they are ``False`` in
``teacher_mask`` and their ``teacher_scores`` are a finite filler (0) that no term reads;
with ``"refuse"`` the first one is refused, naming the column (or file), the request and
the candidate. A column (file) without a single score is refused with its name.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from prerank_jax.batch import Batch

__all__ = ["MISSING", "PROBABILITY_CLIP", "SCORE_KINDS", "attach_logged_teacher",
           "check_raw_scores", "to_logits"]

SCORE_KINDS = ("logit", "probability", "rank")
MISSING = ("mask", "refuse")
PROBABILITY_CLIP = 1e-6
LOGGED = "logged"  # teacher.model.name of a logged teacher


def to_logits(raw: np.ndarray, *, kind: str) -> np.ndarray:
  """Logged scores of one kind → logits (see the module docstring); NaN stays NaN.

  Args:
    raw: any shape, float; finite where present, ``NaN`` where missing.
    kind: one of :data:`SCORE_KINDS`.

  Returns:
    float32 logits of the same shape:
    ``logit``: ``raw``; ``probability``: ``log p − log(1 − p)`` with
    ``p = clip(raw, 1e-6, 1 − 1e-6)``; ``rank``: ``−raw``.
  """
  raw = np.asarray(raw, np.float64)
  if kind == "logit":
    out = raw
  elif kind == "probability":
    p = np.clip(raw, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    out = np.log(p) - np.log1p(-p)
  elif kind == "rank":
    out = -raw
  else:
    raise ValueError(f"teacher.score_kind: must be one of {SCORE_KINDS}, got {kind!r}")
  return out.astype(np.float32)


def check_raw_scores(values: np.ndarray, *, name: str, kind: str | None = None,
                     where=lambda i: f"row {i + 1}", source: str = "") -> None:
  """Refuses one teacher's logged scores that cannot be a teacher, naming ``name``.

  Args:
    values: ``[rows]`` float64 scores, ``NaN`` where missing.
    name: the column or file the scores come from.
    kind: the ``teacher.score_kind`` to check the range of (``None``: only finiteness).
    where: maps a row index to where it is (``file:line``) for the message.
    source: the file, named when every score is missing.

  Raises:
    ValueError: every score missing (naming ``name``); an infinite score; with ``kind``, a
      probability outside [0, 1] or a rank below 1.
  """
  values = np.asarray(values, np.float64)
  if values.size and np.isnan(values).all():
    raise ValueError(f"{source + ': ' if source else ''}{name}: every teacher score is "
                     "missing (null/NaN); a logged teacher "
                     "needs at least one score (drop the column from "
                     "source.teacher_score_columns, or fill it)")
  rules = {None: (np.isinf, "must be finite (null/NaN marks a missing score)"),
           "logit": (np.isinf, "must be finite (null/NaN marks a missing score)"),
           "probability": (lambda v: np.isinf(v) | (v < 0) | (v > 1),
                           "must be a probability in [0, 1] (teacher.score_kind="
                           "'probability')"),
           "rank": (lambda v: np.isinf(v) | (v < 1),
                    "must be a rank >= 1, 1 = best (teacher.score_kind='rank')")}
  if kind not in rules:
    raise ValueError(f"teacher.score_kind: must be one of {SCORE_KINDS}, got {kind!r}")
  test, rule = rules[kind]
  with np.errstate(invalid="ignore"):
    bad = np.flatnonzero(~np.isnan(values) & test(values))
  if bad.size:
    raise ValueError(f"{where(int(bad[0]))}: {name} is {values[bad[0]]}; teacher scores "
                     f"{rule}")


def attach_logged_teacher(batch: Batch, raw: np.ndarray, *, names: Sequence[str],
                          kind: str, missing: str, split: str,
                          request_ids: Sequence[str] | None = None,
                          candidate_ids: np.ndarray | None = None) -> Batch:
  """``batch`` with the logged scores as its teacher.

  Args:
    batch: a split, ``[R, N]`` lists.
    raw: ``[R, N, M]`` logged scores as read (``NaN`` = missing; padding is ignored).
    names: the M columns (or files) the scores come from, for messages.
    kind: ``teacher.score_kind``; missing: ``teacher.missing``.
    split: the split's name, for messages.
    request_ids, candidate_ids: the user's IDs (``[R]``, ``[R, N]``), for messages.

  Returns:
    ``batch`` with ``teacher_scores [R, N, M]`` float32 logits (0 where missing or padding)
    and ``teacher_mask [R, N, M]`` bool (present and valid), or ``None`` when every valid
    candidate has every score.

  Raises:
    ValueError: naming the column: a score out of its kind's range, a column without any
      score on this split, and, with ``missing="refuse"``, the first missing score (its
      request and candidate).
  """
  raw = np.asarray(raw, np.float64)
  valid = np.asarray(batch.valid)
  if raw.shape != (*valid.shape, len(names)):
    raise ValueError(f"{split}: logged scores of shape {raw.shape} do not align with "
                     f"{len(names)} teacher(s) of the split's {valid.shape} lists")
  if missing not in MISSING:
    raise ValueError(f"teacher.missing: must be one of {MISSING}, got {missing!r}")
  present = ~np.isnan(raw) & valid[..., None]
  for m, name in enumerate(names):
    column = np.where(valid, raw[..., m], np.nan)[valid]
    check_raw_scores(column, name=name, kind=kind, where=lambda i: f"{split} split",
                     source=f"{split} split")
    gaps = valid & ~present[..., m]
    if missing == "refuse" and gaps.any():
      r, n = (int(i) for i in np.argwhere(gaps)[0])
      request = str(request_ids[r]) if request_ids is not None else f"#{r}"
      candidate = str(candidate_ids[r, n]) if candidate_ids is not None else f"slot {n}"
      raise ValueError(f"{name}: the teacher score of request {request!r}, candidate "
                       f"{candidate!r} ({split} split) is missing (null/NaN), and "
                       f"teacher.missing='refuse'; {int(gaps.sum())} of {int(valid.sum())} "
                       "scores are missing here (teacher.missing='mask' leaves them out of "
                       "distillation)")
  logits = np.where(present, to_logits(np.where(present, raw, 0.0), kind=kind), 0.0)
  mask = None if present[valid].all() else present
  return batch._replace(teacher_scores=logits.astype(np.float32), teacher_mask=mask)

