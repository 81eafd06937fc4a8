"""RecFlow (Kuaishou's multi-stage recommendation dataset, ICLR 2025) as a TFDS dataset
(``prerank_recflow``), in the two published pre-ranking protocols.

Input: RecFlow's folders under the manual directory (RecFlow-ICLR/RecFlow, README
"Dataset Organization"): ``all_stage/<day>.feather``, ``realshow/<day>.feather``,
``seq_effective_50_dict/<day>.pkl``, ``request_id_dict/<day>.pkl`` and ``others/``
(``id_cnt.pkl`` and the coarse-ranking test file, whose name ``source.recflow_test_file``
sets: RecFlow's code reads ``prerank_test.feather``, its README lists
``coarse_rank_test.feather``). ``experiments/recflow_world.py`` writes a simulated world in
exactly this layout.

``source.recflow_protocol`` picks the protocol:

* ``"coarse"`` (RecFlow's coarse-ranking benchmark): train and valid requests are the
  ``all_stage`` rows of the days in ``source.recflow_train_days``; ``exposed`` is
  ``realshow``, ``label`` the feedback ``source.recflow_label`` (``effective_view`` by
  default; ``long_view``, ``like``, ``follow``, ``forward``, ``comment``) on exposed rows,
  so the ground-truth loss (``bce``) is RecFlow's pointwise BCE on ``realshow`` rows and
  the unexposed candidates are there for distillation. Test: the coarse test file's rows
  grouped by ``request_id`` in file order and padded to ``list_size`` (470 in RecFlow's
  scripts).
* ``"lcron"`` (kwai/LCRON's two-stage protocol, ``deep_components/dataset2.py``): every
  request of a day gets ``recflow_per_stage`` (10) candidates from each of ``rank_pos``,
  ``rank_neg``, ``coarse_neg``, ``prerank_neg`` of ``request_id_dict`` (the first ones,
  as LCRON's ``[:10]``), padded per stage: ``N = 4 · per_stage``. ``label`` is the
  membership of the ``rank_pos`` items (the ground truth of the joint recall), every
  candidate ``exposed``. Train days ``recflow_train_days``, test ``recflow_test_day``.

Both protocols carry, for every candidate:

* ``true_relevance``, the graded label of the protocol's ranking metrics: in ``coarse``
  the **stage label** with FS-LTR's priority (RecFlow ``coarse/dataset.py``): click
  (``realshow`` and ``effective_view``) 6 > ``realshow`` 5 > ``rank_pos``/``rerank_pos`` 4
  > ``rank_neg``/``rerank_neg`` 3 > ``coarse_neg`` 2 > ``prerank_neg`` 1; in ``lcron``
  LCRON's ``max_rank_index − rank_index`` with its defaults (``rank_pos``: 30 − its
  ``rank_index`` from ``all_stage``; ``rank_neg`` 7, ``coarse_neg`` 6, ``prerank_neg`` 5).
  LCRON's missing ``rank_index`` (500, a label of −470) is clamped to 0 here (labels are
  >= 0), which keeps it below every other real candidate, as LCRON's;
* the categorical IDs (``batch.context_ids`` ``[5]``: user, device, age, gender,
  province; ``batch.item_ids`` ``[N, 5]``: video, author, category_level_two,
  category_level_one, upload_type; ``batch.sequence_ids`` ``[50, 5]`` and
  ``sequence_mask`` from ``seq_effective_50_dict``, columns 0–4 with column 7 > 0 as the
  mask, as RecFlow's datasets): every ID is shifted by +1 (row 0 is padding) and an ID
  ``>= id_cnt[field] + 1`` maps to 0; the table sizes are ``id_cnt[field] + 2``
  (RecFlow's embedding tables) and are kept in the dataset's metadata (:func:`id_vocab`);
* float features derived from the IDs, for the float models: ``context`` = the user's
  behaviour histogram over ``category_level_one`` (modulo 32 buckets) and the sequence
  length / 50; ``items`` = one-hot ``category_level_one`` (same buckets), one-hot
  ``upload_type`` (modulo 8) (not the duration: RecFlow's coarse test dataset reads no
  duration column, so a test file may lack it); ``cross`` (teacher only) = the
  share of the user's behaviour in the candidate's category, and whether the candidate's
  author / second-level category occurs in it.

Valid requests: a seeded ``valid_fraction`` of the train days' requests (by a hash of the
``request_id``). Preparation streams day by day: one day's files are in memory at a time,
and TFDS's writer spools the records to disk in order instead of holding a split
(:func:`spooled_tfds_writer`). :func:`load` then reads the prepared splits into memory, except that with
``streaming.read_from="records"`` (the full configs) the train split stays in its ArrayRecord
files (a :class:`~prerank_jax.data.tfds_base.RecordSplit`): training, the data checks and
the teacher's scoring read it a block or a step at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import pickle
import struct
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from prerank_jax.batch import Batch, IdVocab
from prerank_jax.data import tfds_base
from prerank_jax.fingerprint import fingerprint

VERSION = "1.0.0"
SPLITS = ("train", "valid", "test")
PROTOCOLS = ("coarse", "lcron")

# RecFlow's README, "Descriptions of the feature fields": every field an integer.
COLUMNS = (
    "request_id", "request_timestamp", "user_id", "device_id", "age", "gender", "province",
    "video_id", "author_id", "category_level_one", "category_level_two", "upload_type",
    "upload_timestamp", "duration", "realshow", "rerank_pos", "rerank_neg", "rank_pos",
    "rank_neg", "coarse_neg", "prerank_neg", "rank_index", "rerank_index", "playing_time",
    "effective_view", "long_view", "like", "follow", "forward", "comment")
FOLDERS = ("all_stage", "realshow", "seq_effective_50_dict", "request_id_dict", "others")
STAGES = ("realshow", "rerank_pos", "rerank_neg", "rank_pos", "rank_neg", "coarse_neg",
          "prerank_neg")
FEEDBACK = ("effective_view", "long_view", "like", "follow", "forward", "comment")
# seq_effective_50_dict[day][request_id]: int [50, 10], left-padded (coarse/dataset.py).
SEQ_LEN = 50
SEQ_COLUMNS = ("video_id", "author_id", "cate_two", "cate_one", "upload_type", "upload_time",
               "duration_ms", "time_ms", "playing_time", "request_id")
# request_id_dict[day][request_id][stage]: int [n, 8] (coarse/dataset.py's comments).
REQUEST_DICT_COLUMNS = ("video_id", "author_id", "duration_ms", "cate_two", "upload_type",
                        "upload_time", "cate_one", "effective_view")
ID_CNT_FIELDS = ("user_id", "device_id", "age", "gender", "province", "video_id",
                 "author_id", "category_level_one", "category_level_two", "upload_type")
CONTEXT_ID_FIELDS = ("user_id", "device_id", "age", "gender", "province")
# Item ID columns in the order of the behaviour sequence's columns 0-4, so behaviour column
# j shares item table j (batch.py).
ITEM_ID_FIELDS = ("video_id", "author_id", "category_level_two", "category_level_one",
                  "upload_type")
STAGE_PRIORITY = {"click": 6, "realshow": 5, "rerank_pos": 4, "rank_pos": 4,
                  "rerank_neg": 3, "rank_neg": 3, "coarse_neg": 2, "prerank_neg": 1}
# LCRON deep_components/dataset2.py: the stages drawn, the rank_index defaults per stage and
# max_rank_index; a rank_pos item without a rank_index gets 500.
LCRON_STAGES = ("rank_pos", "rank_neg", "coarse_neg", "prerank_neg")
LCRON_DEFAULT_RANK_INDEX = {"rank_neg": 23, "coarse_neg": 24, "prerank_neg": 25}
LCRON_MISSING_RANK_INDEX = 500
LCRON_MAX_RANK_INDEX = 30
CATEGORY_BUCKETS, UPLOAD_BUCKETS = 32, 8

LICENCE = ("CC BY-SA 4.0 according to the licence badge of RecFlow's GitHub repository "
           "(RecFlow-ICLR/RecFlow); the paper's page says CC BY-NC-SA 4.0 (non-commercial). "
           "Both are stated by the authors: read both, and follow the stricter one unless "
           "they tell you otherwise.")
WHAT = ("RecFlow (Liu et al., ICLR 2025): download it manually from the USTC Drive link in "
        "the README of https://github.com/RecFlow-ICLR/RecFlow (folders all_stage/, "
        "realshow/, seq_effective_50_dict/, request_id_dict/, others/)")


# --- days and files -----------------------------------------------------------------------

def parse_days(spec: str, field: str) -> list[str]:
  """``"2024-01-13:2024-02-17"`` (inclusive) or ``"2024-02-18"`` → ISO day names.

  Raises:
    ValueError: naming ``field`` when the spec is not a date or an ordered range.
  """
  parts = str(spec).split(":")
  try:
    dates = [datetime.date.fromisoformat(p.strip()) for p in parts]
  except ValueError:
    raise ValueError(f"{field}: {spec!r} is not a day YYYY-MM-DD or a range "
                     "YYYY-MM-DD:YYYY-MM-DD") from None
  if len(dates) > 2 or (len(dates) == 2 and dates[1] < dates[0]):
    raise ValueError(f"{field}: {spec!r} must be one day or an ordered range first:last")
  first, last = dates[0], dates[-1]
  return [(first + datetime.timedelta(days=i)).isoformat()
          for i in range((last - first).days + 1)]


def required_files(manual: Path, params: Mapping[str, Any]) -> list[Path]:
  """Every file the protocol reads, in reading order."""
  train = parse_days(params["train_days"], "source.recflow_train_days")
  files = [manual / "others" / "id_cnt.pkl"]
  days = train if params["protocol"] == "coarse" else [*train, *parse_days(
      params["test_day"], "source.recflow_test_day")]
  for day in days:
    files += [manual / "all_stage" / f"{day}.feather",
              manual / "seq_effective_50_dict" / f"{day}.pkl"]
    if params["protocol"] == "lcron":
      files.append(manual / "request_id_dict" / f"{day}.pkl")
  if params["protocol"] == "coarse":
    files.append(manual / "others" / params["test_file"])
    files += [manual / "seq_effective_50_dict" / f"{day}.pkl"
              for day in parse_days(params["test_day"], "source.recflow_test_day")]
  return list(dict.fromkeys(files))


def load_pickle(path: Path) -> Any:
  """One of RecFlow's pickles (``id_cnt.pkl``, a day's sequence or request dict)."""
  with open(path, "rb") as f:
    return pickle.load(f)


def feather_columns(path: Path) -> list[str]:
  """The column names of a feather (Arrow IPC) file, from its schema alone."""
  import pyarrow.ipc as ipc

  with ipc.open_file(path) as reader:
    return list(reader.schema.names)


def read_feather(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
  """``{column: int64 array}`` of a RecFlow feather file; refuses missing columns by name.

  Raises:
    ValueError: ``<file>: missing column(s) [...]`` with the columns the file has.
  """
  import pyarrow.feather as feather

  present = feather_columns(path)
  missing = [c for c in columns if c not in present]
  if missing:
    raise ValueError(f"{path}: missing column(s) {missing}; RecFlow's README lists "
                     f"{list(COLUMNS)} and the file has {present}")
  # Only the columns needed are read (and decompressed): a day of RecFlow is ~50 M rows.
  table = feather.read_table(path, columns=list(columns), memory_map=True)
  out = {}
  for c in columns:
    values = table.column(c).to_numpy(zero_copy_only=False)
    if not np.issubdtype(values.dtype, np.integer):
      if np.issubdtype(values.dtype, np.floating) and np.isfinite(values).all():
        values = values.astype(np.int64)
      else:
        raise ValueError(f"{path}: column {c!r} must hold integers (RecFlow's README), got "
                         f"{table.column(c).type}")
    out[c] = values.astype(np.int64, copy=False)
  return out


# --- features -----------------------------------------------------------------------------

def id_vocab(id_cnt: Mapping[str, int]) -> IdVocab:
  """Embedding table sizes ``id_cnt[field] + 2`` (RecFlow's DSSM/DIN tables: padding row 0,
  IDs shifted by +1)."""
  missing = [f for f in ID_CNT_FIELDS if f not in id_cnt]
  if missing:
    raise ValueError(f"others/id_cnt.pkl: no count for {missing}; it has {sorted(id_cnt)}")
  return IdVocab(context=tuple(int(id_cnt[f]) + 2 for f in CONTEXT_ID_FIELDS),
                 items=tuple(int(id_cnt[f]) + 2 for f in ITEM_ID_FIELDS))


def shift_ids(values: np.ndarray, size: int) -> np.ndarray:
  """IDs + 1 as int32, with IDs outside ``[0, size − 2]`` mapped to the reserved row 0."""
  values = np.asarray(values, np.int64) + 1
  return np.where((values >= 1) & (values < size), values, 0).astype(np.int32)


@dataclasses.dataclass
class Candidates:
  """Candidate columns of one request (any order), as RecFlow names them."""

  video_id: np.ndarray
  author_id: np.ndarray
  category_level_two: np.ndarray
  category_level_one: np.ndarray
  upload_type: np.ndarray

  def take(self, index) -> "Candidates":
    return Candidates(**{k: v[index] for k, v in dataclasses.asdict(self).items()})


def sequence_features(seq: np.ndarray | None, vocab: IdVocab
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
  """``(sequence_ids [50, 5], sequence_mask [50], context floats, behaviour sets)``."""
  if seq is None:
    seq = np.zeros((SEQ_LEN, len(SEQ_COLUMNS)), np.int64)
  seq = np.asarray(seq, np.int64)
  if seq.ndim != 2 or seq.shape[1] < 8:
    raise ValueError(f"seq_effective_50_dict: a behaviour sequence must be [L, >= 8], got "
                     f"{seq.shape}")
  seq = seq[-SEQ_LEN:]
  if len(seq) < SEQ_LEN:
    seq = np.concatenate([np.zeros((SEQ_LEN - len(seq), seq.shape[1]), np.int64), seq])
  mask = seq[:, 7] > 0
  ids = np.stack([shift_ids(seq[:, j], vocab.items[j]) for j in range(5)], axis=1)
  ids[~mask] = 0
  cate = seq[mask, 3] % CATEGORY_BUCKETS
  hist = np.bincount(cate, minlength=CATEGORY_BUCKETS).astype(np.float32)
  hist = hist / max(1.0, hist.sum())
  context = np.concatenate([hist, [mask.sum() / SEQ_LEN]]).astype(np.float32)
  seen = {"author": set(seq[mask, 1].tolist()), "cate_two": set(seq[mask, 2].tolist()),
          "hist": hist}
  return ids, mask, context, seen


def item_features(c: Candidates, seen: dict) -> tuple[np.ndarray, np.ndarray]:
  """``(items [n, Fi], cross [n, 3])`` float features of candidates."""
  n = len(c.video_id)
  onehot = lambda v, k: np.eye(k, dtype=np.float32)[np.asarray(v) % k]
  items = np.concatenate([onehot(c.category_level_one, CATEGORY_BUCKETS),
                          onehot(c.upload_type, UPLOAD_BUCKETS)],
                         axis=1).astype(np.float32) if n else np.zeros(
                             (0, CATEGORY_BUCKETS + UPLOAD_BUCKETS), np.float32)
  cross = np.stack([seen["hist"][np.asarray(c.category_level_one) % CATEGORY_BUCKETS],
                    np.isin(c.author_id, list(seen["author"])).astype(np.float32),
                    np.isin(c.category_level_two, list(seen["cate_two"])).astype(np.float32)],
                   axis=1).astype(np.float32) if n else np.zeros((0, 3), np.float32)
  return items, cross


def item_ids(c: Candidates, vocab: IdVocab) -> np.ndarray:
  """``[n, 5]`` int32 item IDs (:data:`ITEM_ID_FIELDS`), shifted by :func:`shift_ids`."""
  return np.stack([shift_ids(getattr(c, f), vocab.items[j])
                   for j, f in enumerate(ITEM_ID_FIELDS)], axis=1).reshape(-1, 5)


def stage_label(day: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
  """FS-LTR's stage priority of each row (0 where no flag is set)."""
  out = np.zeros(len(rows), np.float32)
  for stage in STAGES:
    out = np.maximum(out, np.where(day[stage][rows] > 0, STAGE_PRIORITY[stage], 0))
  click = (day["realshow"][rows] > 0) & (day["effective_view"][rows] > 0)
  return np.where(click, STAGE_PRIORITY["click"], out).astype(np.float32)


def make_record(*, request_id: int, request_row: Mapping[str, int], cands: Candidates,
                label: np.ndarray, exposed: np.ndarray, truth: np.ndarray,
                seq: np.ndarray | None, vocab: IdVocab, list_size: int,
                valid: np.ndarray | None = None) -> dict[str, Any]:
  """One request in the batch schema (padded to ``list_size``)."""
  n = len(cands.video_id)
  pad = functools.partial(tfds_base.pad_rows, length=list_size)
  seq_ids, seq_mask, context, seen = sequence_features(seq, vocab)
  items, cross = item_features(cands, seen)
  ids = item_ids(cands, vocab)
  valid = np.ones(n, bool) if valid is None else valid
  ids[~valid] = 0
  items[~valid], cross[~valid] = 0.0, 0.0
  return {
      "context": context, "items": pad(items), "cross": pad(cross),
      "label": pad(np.where(exposed & valid, label, 0.0).astype(np.float32)),
      "exposed": pad(exposed & valid), "valid": pad(valid),
      "true_relevance": pad(np.where(valid, truth, 0.0).astype(np.float32)),
      "context_ids": np.asarray([shift_ids(request_row[f], vocab.context[j])
                                 for j, f in enumerate(CONTEXT_ID_FIELDS)], np.int32),
      "item_ids": pad(ids), "sequence_ids": seq_ids, "sequence_mask": seq_mask,
      "request_id": str(request_id),
      # RecFlow's own video IDs (scores.parquet and TREC files are keyed by them).
      tfds_base.CANDIDATE_IDS: [str(int(v)) if ok else "" for v, ok in
                                zip(cands.video_id, valid)] + [""] * (list_size - n),
  }


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
  """SplitMix64's finaliser (Steele, Lea, Flood 2014): a stable 64-bit mix of ``x``."""
  x = (x + 0x9E3779B97F4A7C15) & _MASK64
  x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
  x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
  return x ^ (x >> 31)


def in_valid(request_id: int, *, fraction: float, seed: int) -> bool:
  """Whether a train-day request goes to the valid split: a seeded SplitMix64 hash of its
  id, uniform in [0, 1), below ``fraction`` (the same on every host and run)."""
  h = _splitmix64((int(request_id) & _MASK64) ^ _splitmix64(int(seed) & _MASK64))
  return h / 2.0**64 < fraction


def _groups(request: np.ndarray) -> list[np.ndarray]:
  """Row indices of each request, requests in order of their first row."""
  _, first, inverse = np.unique(request, return_index=True, return_inverse=True)
  order = np.argsort(inverse, kind="stable")
  groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
  return [groups[i] for i in np.argsort(first)]


REQUEST_COLUMNS = ("request_id", "request_timestamp", *CONTEXT_ID_FIELDS)
CANDIDATE_COLUMNS = ("video_id", "author_id", "category_level_two", "category_level_one",
                     "upload_type")


def _candidates(day, rows) -> Candidates:
  return Candidates(**{k: day[k][rows] for k in CANDIDATE_COLUMNS})


def coarse_rows(day: Mapping[str, np.ndarray], rows: np.ndarray, *, list_size: int,
                rng: np.random.Generator) -> np.ndarray:
  """A request's rows cut to ``list_size``: exposed rows first (file order, at most N),
  then a seeded uniform subset of the rest, in file order (the tabular loader's rule)."""
  if len(rows) <= list_size:
    return rows
  shown = day["realshow"][rows] > 0
  keep_shown = np.flatnonzero(shown)[:list_size]
  hidden = np.flatnonzero(~shown)
  fill = rng.choice(hidden, size=list_size - len(keep_shown), replace=False) \
      if list_size > len(keep_shown) else np.zeros(0, np.int64)
  return rows[np.sort(np.concatenate([keep_shown, fill]))]


def coarse_requests(day: Mapping[str, np.ndarray], seqs: Mapping, params: Mapping[str, Any],
                    vocab: IdVocab, *, split: str, day_index: int) -> Iterator[dict]:
  """Records of one train day (``split`` train or valid) or of the test file (test)."""
  signal = params["label"]
  for q, rows in enumerate(_groups(day["request_id"])):
    rid = int(day["request_id"][rows[0]])
    if split != "test" and in_valid(rid, fraction=params["valid_fraction"],
                                    seed=params["seed"]) != (split == "valid"):
      continue
    if split == "test":
      if len(rows) > params["list_size"]:  # check_inputs refuses this before preparing
        raise ValueError(f"recflow test request {rid}: {len(rows)} candidates > "
                         f"source.list_size={params['list_size']}")
    else:
      rows = coarse_rows(day, rows, list_size=params["list_size"],
                         rng=np.random.default_rng([params["seed"], day_index, q]))
    exposed = (day["realshow"][rows] > 0) if "realshow" in day else np.ones(len(rows), bool)
    truth = stage_label(day, rows) if all(s in day for s in STAGES) else \
        day[signal][rows].astype(np.float32)
    yield make_record(request_id=rid, request_row={k: day[k][rows[0]] for k in REQUEST_COLUMNS},
                      cands=_candidates(day, rows),
                      label=(day[signal][rows] > 0).astype(np.float32), exposed=exposed,
                      truth=truth, seq=seqs.get(rid), vocab=vocab,
                      list_size=params["list_size"])


def lcron_requests(day: Mapping[str, np.ndarray], seqs: Mapping, request_dict: Mapping,
                   params: Mapping[str, Any], vocab: IdVocab, *, split: str
                   ) -> Iterator[dict]:
  """LCRON's 40 candidates per request of one day (dataset2.py's Rank_Train_All_BY_RANK)."""
  k = params["per_stage"]
  pos = day["rank_pos"] > 0
  rank_index = {(int(r), int(v)): int(i) for r, v, i in zip(
      day["request_id"][pos], day["video_id"][pos], day["rank_index"][pos])}
  d = {name: j for j, name in enumerate(REQUEST_DICT_COLUMNS)}
  for rows in _groups(day["request_id"]):
    rid = int(day["request_id"][rows[0]])
    if split != "test" and in_valid(rid, fraction=params["valid_fraction"],
                                    seed=params["seed"]) != (split == "valid"):
      continue
    stages = request_dict.get(rid, {})
    parts, valid, member, truth = [], [], [], []
    for stage in LCRON_STAGES:
      block = np.zeros((k, len(REQUEST_DICT_COLUMNS)), np.int64)
      got = np.asarray(stages.get(stage, np.zeros((0, 8))), np.int64).reshape(-1, 8)[:k]
      block[:len(got)] = got
      parts.append(block)
      valid.append(np.arange(k) < len(got))
      member.append(np.full(k, stage == "rank_pos"))
      if stage == "rank_pos":
        index = np.asarray([rank_index.get((rid, int(v)), LCRON_MISSING_RANK_INDEX)
                            for v in block[:, d["video_id"]]])
      else:
        index = np.full(k, LCRON_DEFAULT_RANK_INDEX[stage])
      truth.append(np.maximum(LCRON_MAX_RANK_INDEX - index, 0).astype(np.float32))
    block = np.concatenate(parts)
    cands = Candidates(video_id=block[:, d["video_id"]], author_id=block[:, d["author_id"]],
                       category_level_two=block[:, d["cate_two"]],
                       category_level_one=block[:, d["cate_one"]],
                       upload_type=block[:, d["upload_type"]])
    valid = np.concatenate(valid)
    yield make_record(request_id=rid, request_row={c: day[c][rows[0]] for c in REQUEST_COLUMNS},
                      cands=cands, label=np.concatenate(member).astype(np.float32),
                      exposed=valid.copy(), truth=np.concatenate(truth), seq=seqs.get(rid),
                      vocab=vocab, list_size=4 * k, valid=valid)


def protocol_columns(params: Mapping[str, Any]) -> list[str]:
  """The all_stage columns each protocol reads: coarse the candidates' IDs, the stage flags
  and the feedback; lcron the request's IDs and the rank_index of its rank_pos rows."""
  if params["protocol"] == "coarse":
    columns = [*REQUEST_COLUMNS, *CANDIDATE_COLUMNS, *STAGES, params["label"]]
  else:
    columns = [*REQUEST_COLUMNS, "video_id", "rank_pos", "rank_index"]
  return list(dict.fromkeys(columns))


def check_inputs(manual: Path, params: Mapping[str, Any]) -> None:
  """Checks the raw files before anything is written: ``id_cnt.pkl``'s fields, every
  feather file's columns (from its schema), in the coarse protocol that no request of the
  test file has more candidates than ``list_size`` (RecFlow pads to its longest list), and
  that every split gets a request (reading the ``request_id`` column only).

  Raises:
    ValueError: naming the file and what is wrong.
  """
  id_vocab(load_pickle(manual / "others" / "id_cnt.pkl"))
  needed = protocol_columns(params)
  for path in required_files(manual, params):
    if path.suffix != ".feather":
      continue
    if path.name == params["test_file"] and path.parent.name == "others":
      test_needed = [*REQUEST_COLUMNS, *CANDIDATE_COLUMNS, params["label"]]
      present = feather_columns(path)
      missing = [c for c in test_needed if c not in present]
      if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; the file has {present}")
      request = read_feather(path, ["request_id"])["request_id"]
      _, counts = np.unique(request, return_counts=True)
      if counts.max(initial=0) > params["list_size"]:
        worst = int(np.unique(request)[np.argmax(counts)])
        raise ValueError(f"{path}: request {worst} has {int(counts.max())} candidates, more "
                         f"than source.list_size={params['list_size']}; raise "
                         f"source.list_size to at least {int(counts.max())} (RecFlow pads "
                         "every test request to its longest list, 470 in its scripts)")
      continue
    present = feather_columns(path)
    missing = [c for c in needed if c not in present]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; RecFlow's README lists "
                       f"{list(COLUMNS)} and the file has {present}")
  # Every split needs a request (TFDS cannot write an empty split).
  counts = dict.fromkeys(SPLITS, 0)
  for day in parse_days(params["train_days"], "source.recflow_train_days"):
    ids = np.unique(read_feather(manual / "all_stage" / f"{day}.feather",
                                 ["request_id"])["request_id"])
    valid = sum(in_valid(r, fraction=params["valid_fraction"], seed=params["seed"])
                for r in ids.tolist())
    counts["valid"] += valid
    counts["train"] += len(ids) - valid
  tests = ([manual / "others" / params["test_file"]] if params["protocol"] == "coarse" else
           [manual / "all_stage" / f"{d}.feather"
            for d in parse_days(params["test_day"], "source.recflow_test_day")])
  counts["test"] = sum(len(np.unique(read_feather(t, ["request_id"])["request_id"]))
                       for t in tests)
  empty = [split for split, n in counts.items() if n == 0]
  if empty:
    raise ValueError(f"recflow: split(s) {empty} would have no request ({counts} from "
                     f"source.recflow_train_days={params['train_days']!r}, "
                     f"recflow_test_day={params['test_day']!r}, "
                     f"valid_fraction={params['valid_fraction']})")


def split_records(manual: Path, params: Mapping[str, Any], split: str) -> Iterator[dict]:
  """Every record of a split, reading one day's files at a time."""
  vocab = id_vocab(load_pickle(manual / "others" / "id_cnt.pkl"))
  protocol = params["protocol"]
  train_days = parse_days(params["train_days"], "source.recflow_train_days")
  test_days = parse_days(params["test_day"], "source.recflow_test_day")
  columns = protocol_columns(params)
  if protocol == "coarse" and split == "test":
    seqs = {}
    for day in test_days:
      seqs.update(load_pickle(manual / "seq_effective_50_dict" / f"{day}.pkl"))
    path = manual / "others" / params["test_file"]
    present = feather_columns(path)
    # The stage flags are optional in the test file (RecFlow's test dataset reads 14
    # columns): without realshow every candidate's label counts, without the flags the
    # graded truth is the label.
    needed = [*REQUEST_COLUMNS, *CANDIDATE_COLUMNS, params["label"]]
    table = read_feather(path, needed + [c for c in STAGES if c in present])
    yield from coarse_requests(table, seqs, params, vocab, split="test", day_index=-1)
    return
  days = test_days if split == "test" else train_days
  for i, day in enumerate(days):
    table = read_feather(manual / "all_stage" / f"{day}.feather", columns)
    seqs = load_pickle(manual / "seq_effective_50_dict" / f"{day}.pkl")
    if protocol == "coarse":
      yield from coarse_requests(table, seqs, params, vocab, split=split, day_index=i)
    else:
      request_dict = load_pickle(manual / "request_id_dict" / f"{day}.pkl")
      yield from lcron_requests(table, seqs, request_dict, params, vocab, split=split)
    del table, seqs


# --- the TFDS builder ---------------------------------------------------------------------

def list_size_of(params: Mapping[str, Any]) -> int:
  """N: ``list_size`` (coarse) or 4 stages × ``per_stage`` (lcron)."""
  return params["list_size"] if params["protocol"] == "coarse" else 4 * params["per_stage"]


def shapes_of(params: Mapping[str, Any]) -> dict:
  """``{field: (shape, dtype)}`` of a record (:func:`tfds_base.record_shapes`)."""
  return tfds_base.record_shapes(
      context=CATEGORY_BUCKETS + 1, list_size=list_size_of(params),
      items=CATEGORY_BUCKETS + UPLOAD_BUCKETS, cross=3, truth=True, propensity=False,
      context_ids=len(CONTEXT_ID_FIELDS), item_ids=len(ITEM_ID_FIELDS),
      sequence=(SEQ_LEN, 5))


def _builder_class():
  import tensorflow_datasets as tfds

  tfds_base.quiet_tfds()

  @dataclasses.dataclass
  class RecflowConfig(tfds.core.BuilderConfig):
    manual: str = ""
    params: dict = dataclasses.field(default_factory=dict)

  class PrerankRecflow(tfds.core.GeneratorBasedBuilder):
    """RecFlow's files in the prerank-jax batch schema (see the module docstring)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [RecflowConfig(name="placeholder", params=dict(
        protocol="lcron", per_stage=1, list_size=4),
        description="use prerank_jax.data.recflow.make_builder")]

    def _info(self):
      c = self.builder_config
      manual = Path(c.manual)
      meta = {"params": c.params, "manual_dir": c.manual}
      id_cnt = manual / "others" / "id_cnt.pkl"
      if id_cnt.is_file():
        vocab = id_vocab(load_pickle(id_cnt))
        meta["vocab"] = {"context": list(vocab.context), "items": list(vocab.items)}
      return tfds_base.dataset_info(
          self, shapes_of(c.params), description=__doc__, license_note=LICENCE,
          homepage="https://github.com/RecFlow-ICLR/RecFlow", metadata=meta,
          candidate_ids=True)

    def _split_generators(self, dl_manager):
      return {split: self._generate_examples(split) for split in SPLITS}

    def _download_and_prepare(self, dl_manager, download_config=None):
      with spooled_tfds_writer():  # memory bounded by a day, not by a split
        return super()._download_and_prepare(dl_manager, download_config)

    def _generate_examples(self, split):
      c = self.builder_config
      shapes = shapes_of(c.params)
      for i, record in enumerate(split_records(Path(c.manual), c.params, split)):
        yield i, tfds_base.check_record(record, shapes)

  return PrerankRecflow, RecflowConfig


builder_classes = functools.cache(_builder_class)

# Preparation memory. TFDS's writer passes every serialized record through its Shuffler
# (tensorflow_datasets/core/shuffle.py), which keeps a split in memory up to 1 GB, then
# spills to 1,000 bucket files through TensorFlow's gfile (TensorFlow is not installed
# here: a split over 1 GB fails), and with ``disable_shuffling`` all keys 0, 1, 2, ... land
# in bucket 0, which is read back whole. While a RecFlow split is written, the Shuffler is
# replaced by OrderedSpool: records go to one local file in generation order and are read
# back one at a time, so preparation holds one day's files and a record at a time.


class OrderedSpool:
  """A stand-in for TFDS's ``Shuffler`` when shuffling is disabled (same constructor,
  ``add``, ``size``, ``num_examples``, ``bucket_lengths``, iteration): the records, added
  in increasing key order, are appended to a temporary file under ``dirpath`` and yielded
  back in that order, one at a time.

  Raises:
    ValueError: a key not above the previous one (the order would be lost).
  """

  def __init__(self, dirpath, hash_salt=None, disable_shuffling: bool = True,
               ignore_duplicates: bool = False):
    del hash_salt, ignore_duplicates
    if not disable_shuffling:
      raise ValueError("OrderedSpool: keeps the generation order; shuffling must be off")
    self._path = Path(dirpath) / f"recflow-spool-{uuid.uuid4().hex}.tmp"
    self._file = None
    self._size = 0
    self._count = 0
    self._last: int | None = None

  @property
  def size(self) -> int:
    return self._size

  @property
  def num_examples(self) -> int:
    return self._count

  @property
  def bucket_lengths(self) -> list[int]:
    return [self._count]

  def add(self, key, data: bytes) -> None:
    key = int(key)
    if self._last is not None and key <= self._last:
      raise ValueError(f"OrderedSpool: key {key} after {self._last}; keys must increase")
    if self._file is None:
      self._path.parent.mkdir(parents=True, exist_ok=True)
      self._file = open(self._path, "wb")
    self._file.write(struct.pack("<QQ", key, len(data)))
    self._file.write(data)
    self._last, self._size, self._count = key, self._size + len(data), self._count + 1

  def __iter__(self):
    if self._file is None:
      return
    self._file.close()
    try:
      with open(self._path, "rb") as f:
        while header := f.read(16):
          key, length = struct.unpack("<QQ", header)
          yield key, f.read(length)
    finally:
      self._path.unlink(missing_ok=True)


@contextlib.contextmanager
def spooled_tfds_writer():
  """Makes TFDS's writer use :class:`OrderedSpool` for the splits written inside (those
  with shuffling disabled, as every prerank-jax dataset's), and restores its Shuffler."""
  from tensorflow_datasets.core import shuffle

  original = shuffle.Shuffler

  def make(dirpath, hash_salt, disable_shuffling=False, ignore_duplicates=False):
    if disable_shuffling:
      return OrderedSpool(dirpath, hash_salt, disable_shuffling, ignore_duplicates)
    return original(dirpath, hash_salt, disable_shuffling=disable_shuffling,
                    ignore_duplicates=ignore_duplicates)

  shuffle.Shuffler = make
  try:
    yield
  finally:
    shuffle.Shuffler = original


PARAMS = {"protocol": "recflow_protocol", "train_days": "recflow_train_days",
          "test_day": "recflow_test_day", "test_file": "recflow_test_file",
          "label": "recflow_label", "per_stage": "recflow_per_stage",
          "list_size": "list_size", "valid_fraction": "valid_fraction"}


def params_of(config) -> dict[str, Any]:
  """The builder's parameters from ``config.source`` (:data:`PARAMS`) and the seed."""
  s = config.source
  out = {k: s[v] for k, v in PARAMS.items()}
  out["seed"] = int(config.seed)
  return out


def manual_dir(config) -> Path:
  """RecFlow's root folder: ``source.manual_dir``, else
  ``<data_dir>/downloads/manual/recflow``."""
  s = config.source
  data_dir = tfds_base.default_data_dir(s.data_dir)
  return (Path(s.manual_dir).expanduser() if s.manual_dir
          else data_dir / "downloads" / "manual" / "recflow").resolve()


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)``: ``missing`` is the instructions when raw files are absent
  (checked before anything is written); see :func:`prerank_jax.data.letor.make_builder`."""
  from prerank_jax.data import messages

  manual = manual_dir(config)
  params = params_of(config)
  files = required_files(manual, params)
  signature = [(str(f.relative_to(manual)), f.stat().st_size) for f in files if f.is_file()]
  name = (f"{params['protocol']}-n{list_size_of(params)}-"
          f"{fingerprint([str(manual), params, signature], length=10)}")
  cls, config_cls = builder_classes()
  builder = cls(config=config_cls(name=name, manual=str(manual), params=params,
                                  description=f"RecFlow files in {manual}"),
                data_dir=str(tfds_base.default_data_dir(config.source.data_dir)),
                file_format="array_record")
  if tfds_base.is_prepared(builder):
    return builder, None
  absent = [f for f in files if not f.is_file()]
  if absent:
    shown = absent[:12]
    where = [(str(f), "missing") for f in shown]
    if len(absent) > len(shown):
      where.append((f"... and {len(absent) - len(shown)} more", "missing"))
    return None, messages.missing_message(config, kind="recflow", what=WHAT,
                                          licence=LICENCE, manual_dir=manual, where=where)
  return builder, None


def load(config, *, show: bool = False, lazy_train: bool = False
         ) -> tuple[dict[str, Batch], Any]:
  """``({"train", "valid", "test"} → Batch, builder)``, preparing once (after
  :func:`check_inputs`) when needed.

  Raises:
    DatasetMissingError: raw files missing (at once, with instructions).
    ValueError: a file or a split that cannot be read as the protocol needs.
  """
  builder, missing = make_builder(config)
  if builder is None:
    raise tfds_base.DatasetMissingError(missing)
  if not tfds_base.is_prepared(builder):  # every check before TFDS writes a file
    check_inputs(Path(builder.builder_config.manual), builder.builder_config.params)
  builder = tfds_base.prepare(builder, missing=None, show=show)
  return tfds_base.read_splits(builder, SPLITS, lazy_train=lazy_train), builder


def split_ids(config, builder, split: str):
  """RecFlow's ``request_id`` of each list and ``video_id`` of each candidate of a prepared
  split (:class:`~prerank_jax.data.ids.SplitIds`; ``""`` on padding)."""
  return tfds_base.split_ids(builder, split, request_column="request_id",
                             candidate_column="video_id")


def vocab_flags(manual: str | Path) -> list[str]:
  """The command-line overrides that give ``configs/recflow.py:<protocol>,ids``'s DSSM
  student and DIN teacher the ID table sizes of the files in ``manual``
  (``others/id_cnt.pkl``: :func:`id_vocab`)."""
  vocab = id_vocab(load_pickle(Path(manual) / "others" / "id_cnt.pkl"))
  text = lambda sizes: "(" + ",".join(str(v) for v in sizes) + ")"
  return [f"--config.{role}.model.{field}_vocab={text(sizes)}"
          for role in ("student", "teacher")
          for field, sizes in (("context", vocab.context), ("item", vocab.items))]


def prepared_vocab(builder) -> IdVocab:
  """The ID table sizes a prepared RecFlow dataset was written with."""
  meta = json.loads((Path(str(builder.data_path)) / "metadata.json").read_text())
  return IdVocab(context=tuple(meta["vocab"]["context"]), items=tuple(meta["vocab"]["items"]))
