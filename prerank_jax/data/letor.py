"""LETOR / LibSVM ranking files as a TFDS dataset (``prerank_letor``).

Input: the format of MSLR-WEB10K/30K, Istella, Yahoo C14, LETOR 4.0 and the LightGBM
ranking examples, one judged document a line::

    <label> qid:<query id> <feature id>:<value> <feature id>:<value> ... [# comment]

* Feature ids are the integers written in the file (usually 1-based); a feature a line
  leaves out is 0 (sparse files). The config lists below name features by these ids.
* Without ``qid:`` tokens, a ``<file>.query`` group file (LightGBM style, one group size a
  line) groups consecutive lines into queries. With both, the group file wins.
* Lines of one query need not be contiguous: documents are grouped by query id, and queries
  keep the order of their first line.

Splits: the files named by ``source.train_file/valid_file/test_file`` (relative to the manual
directory; defaults ``train.txt``, ``vali.txt``, ``test.txt``) or a catalog layout
(``Fold1/{train,vali,test}.txt`` for ``mslr_web/10k_fold1``). For your own files (``letor``)
a valid or test file left at its default name and absent is carved from train: a seeded
``valid_fraction`` (``test_fraction``) of the train queries; catalog layouts need every
file (Istella's ``main`` has no vali file and always carves).

Each query becomes one request of the batch schema:

* **filtering**: train and valid queries with fewer than ``min_list_size`` documents are
  dropped (too short to learn a ranking from); the **test** split keeps every query, so
  the evaluation sees all of them: a list shorter than ``eval.k`` is scored over its
  length (NDCG@k over min(k, n), as trec_eval and LightGBM) and counted in results.md;
* **truncation rule**: a query with more than ``N = list_size`` documents keeps a seeded,
  uniformly random subset of ``N`` of them (independent of labels and features), in file
  order; shorter lists are padded (``valid=False``, zeros);
* **features**: every feature is first normalised with statistics of the *train* split
  (``normalize="log_zscore"``: ``sign(x)·log1p(|x|)``, then z-scored; ``"zscore"``;
  ``"none"``). The student's features (``student_features``, ``()`` = all) become ``items``;
  the teacher's (``teacher_features``, ``()`` = all) minus the student's become ``cross``
  (teacher only), so the teacher sees their union. ``context`` is one query-level feature,
  ``log1p(L) / log1p(N)`` of the list length ``L`` before truncation;
* **exposure** (these datasets judge every document, so the logs are simulated): a noisy
  logging ranker scores ``y + logging_noise·ε`` (``y`` the judged label, or, with
  ``logging_feature = f``, the normalised feature ``f``) and exposes its top
  ``E = num_exposed`` (all of a shorter list). With ``position_bias = η > 0`` an exposed
  document at position ``p`` is examined with propensity ``(1/p)^η``; unexamined ones log
  label 0. ``label`` is the judged grade where exposed (and examined), else 0;
  ``exposed`` marks the top E; ``true_relevance`` is the judged grade of every document;
  ``propensity`` is ``(1/p)^η`` where exposed, else 1; ``exposure_propensity`` is the
  probability that the logging ranker exposes the document, by Monte Carlo over its noise
  (``prerank_jax/data/exposure.py``).

All randomness comes from ``seed`` (config ``seed``), the split and the query's position.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.data import tfds_base
from prerank_jax.data.exposure import exposure_probability, seeded_rng
from prerank_jax.data.ids import SplitIds
from prerank_jax.data.logged_teacher import LOGGED, attach_logged_teacher
# configs/letor.py's default student feature set (20 cheap MSLR-WEB feature ids).
from prerank_jax.data.sources import MSLR_STUDENT_FEATURES
from prerank_jax.fingerprint import fingerprint

VERSION = "1.3.0"
SPLITS = ("train", "valid", "test")
NORMALIZERS = ("log_zscore", "zscore", "none")


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  """Where a TFDS catalog LTR dataset's extracted files sit under the manual directory."""

  files: Mapping[str, str]        # split -> path relative to the manual dir ("" = carve)
  download: str                   # what to download, from where
  licence: str


_MSLR = ("MSLR-WEB{size}.zip from https://www.microsoft.com/en-us/research/project/mslr/ "
         "(unzip it: it holds Fold1..Fold5)")
_MSLR_LICENCE = ("Microsoft Research LETOR/MSLR licence: research use; you may not "
                 "redistribute the data. prerank-jax ships this loader, not the data.")
CATALOG: dict[str, CatalogEntry] = {}
for _size in ("10k", "30k"):
  for _fold in range(1, 6):
    CATALOG[f"mslr_web/{_size}_fold{_fold}"] = CatalogEntry(
        {"train": f"Fold{_fold}/train.txt", "valid": f"Fold{_fold}/vali.txt",
         "test": f"Fold{_fold}/test.txt"},
        _MSLR.format(size=_size.upper()), _MSLR_LICENCE)
_ISTELLA = ("the Istella LETOR dataset from https://istella.ai/datasets/letor-dataset/ "
            "(extract the archive)")
_ISTELLA_LICENCE = ("Istella LETOR licence: non-commercial research use only, no "
                    "redistribution. prerank-jax ships this loader, not the data.")
CATALOG["istella/main"] = CatalogEntry(
    {"train": "full/train.txt", "valid": "", "test": "full/test.txt"}, _ISTELLA,
    _ISTELLA_LICENCE)
CATALOG["istella/s"] = CatalogEntry(
    {"train": "sample/train.txt", "valid": "sample/vali.txt", "test": "sample/test.txt"},
    _ISTELLA, _ISTELLA_LICENCE)
CATALOG["istella/x"] = CatalogEntry(
    {"train": "train.txt", "valid": "vali.txt", "test": "test.txt"}, _ISTELLA,
    _ISTELLA_LICENCE)
for _set in ("set1", "set2"):
  CATALOG[f"yahoo_ltrc/{_set}"] = CatalogEntry(
      {"train": f"{_set}.train.txt", "valid": f"{_set}.valid.txt",
       "test": f"{_set}.test.txt"},
      "ltrc_yahoo.tar.bz2 (Yahoo! Learning to Rank Challenge, C14) from "
      "https://webscope.sandbox.yahoo.com/ (extract it)",
      "Yahoo! Webscope licence: research use after registration, no redistribution. "
      "prerank-jax ships this loader, not the data.")
GENERIC = CatalogEntry(
    {"train": "train.txt", "valid": "vali.txt", "test": "test.txt"},
    "your LibSVM ranking files (`label qid:Q f:v ...`)",
    "your own data: its licence is yours to check.")


# --- parsing ------------------------------------------------------------------------------

@dataclasses.dataclass
class ParsedFile:
  """A parsed LibSVM ranking file: ``features[i]`` is a dense ``[L_i, D]`` block."""

  qids: list[str]
  labels: list[np.ndarray]   # [L_i] float32
  features: list[np.ndarray]  # [L_i, max_id + 1] float32; column = feature id
  feature_ids: list[int]      # 1..max_id (and 0 when the file uses id 0)
  qids_in_file: bool = True   # False: names are group numbers of a .query file
  lines: list | None = None   # [L_i] 0-based data-line indices of each query's documents


def _read_groups(path: Path) -> list[int] | None:
  group = Path(str(path) + ".query")
  if not group.exists():
    return None
  sizes = [int(x) for x in group.read_text().split()]
  if any(s < 1 for s in sizes):
    raise ValueError(f"{group}: group sizes must be >= 1")
  return sizes


def parse_file(path: Path) -> ParsedFile:
  """Parses one LibSVM ranking file (see the module docstring for the accepted format).

  Well-formed files take a compiled path: files whose lines all hold the same number of
  tokens and no comment (dense files such as MSLR-WEB) are cut into tokens with numpy and
  parsed by Arrow's string-to-number cast (:func:`_parse_columns`); other files by scikit-learn's ``load_svmlight_file``
  (:func:`_parse_compiled`), both in chunks of ``_CHUNK_BYTES``. Anything they refuse or
  that fails a check (a bad token,
  a non-finite value, a label that is not a grade, a missing ``qid:``, a repeated or
  unsorted feature id, a ``qid`` not written as a plain integer) is parsed again line by
  line, which gives the same result for every file the compiled path accepts and names the
  ``file:line`` of the first bad line otherwise.
  """
  path = Path(path)
  groups = _read_groups(path)
  for compiled in (_parse_columns, _parse_compiled):
    fast = compiled(path, groups)
    if fast is not None:
      return fast
  return _parse_lines(path, groups)


# Compiled path: bytes per load_svmlight_file call. It must exceed the longest line (a
# chunk that starts inside a line longer than itself would read the next line twice).
_CHUNK_BYTES = 64 << 20
_MAX_FEATURE_ID = (1 << 24) - 1  # compiled path: larger ids go to the line parser
# A qid token not written as a plain integer (0, 7, -3): the compiled paths read query ids
# as integers, which would rename it ("007" -> "7"); such files go to the line parser.
_NON_CANONICAL_QID = re.compile(rb"qid:(?!(?:0|-?[1-9][0-9]*)(?:[ \t\r\n]|$))")


def _parse_compiled(path: Path, groups: list[int] | None) -> ParsedFile | None:
  """The compiled path of :func:`parse_file`; ``None`` when the file needs the line parser.

  ``load_svmlight_file(zero_based=True, query_id=True)`` keeps column = feature id, parses
  numbers with ``strtod`` (correctly rounded, like Python's ``float``) and drops ``#``
  comments and blank lines, as the line parser does. It returns query ids as integers, so
  files whose ids are not plain integers (``qid:abc``, ``qid:007``) go to the line parser,
  which keeps them as written.
  """
  from sklearn.datasets import load_svmlight_file  # compiled; imported when needed

  size = path.stat().st_size
  if size == 0:
    return None
  labels, qids, blocks, max_id, min_id = [], [], [], 0, 1
  try:
    for offset in range(0, size, _CHUNK_BYTES):
      x, y, q = load_svmlight_file(str(path), n_features=_MAX_FEATURE_ID + 1,
                                   dtype=np.float64, zero_based=True, query_id=True,
                                   offset=offset, length=_CHUNK_BYTES)
      if y.size == 0:
        continue
      if groups is None and q.size != y.size:
        return None  # a line without qid: the line parser names it
      x.sort_indices()
      values = x.data
      if not np.all(np.isfinite(values)) or np.any(np.abs(values) > np.finfo(np.float32).max):
        return None
      if x.nnz:
        max_id = max(max_id, int(x.indices.max()))
        min_id = min(min_id, int(x.indices.min()))
      labels.append(y)
      qids.append(q)
      blocks.append(x.astype(np.float32))
  except (ValueError, RuntimeError, OverflowError, UnicodeDecodeError):
    return None
  if not labels:
    return None
  raw = np.concatenate(labels)
  if np.any(~np.isfinite(raw) | (raw < 0) | (raw != np.round(raw))):
    return None
  if groups is None and not _canonical_qids(path):
    return None
  width = max_id + 1
  dense = np.zeros((raw.size, width), np.float32)
  row = 0
  for block in blocks:
    dense[row:row + block.shape[0]] = block[:, :width].toarray()
    row += block.shape[0]
  qid = np.concatenate(qids) if groups is None else None
  return _grouped(path, raw, dense, qid, groups, min_id, max_id)


def _canonical_qids(path: Path) -> bool:
  with open(path, "rb") as f:
    tail = b""  # the end of the previous chunk, so a token across a boundary is seen
    for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
      if _NON_CANONICAL_QID.search(tail + chunk):
        return False
      tail = chunk[-32:]
  return True


def _line_chunks(path: Path):
  """The file in pieces of about ``_CHUNK_BYTES`` that end at a newline."""
  with open(path, "rb") as f:
    rest = b""
    for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
      chunk = rest + chunk
      cut = chunk.rfind(b"\n") + 1
      if cut == 0:
        rest = chunk
        continue
      rest = chunk[cut:]
      yield chunk[:cut]
    if rest:
      yield rest + b"\n"


def _column_chunk(chunk: bytes, has_qid: bool):
  """One chunk of :func:`_parse_columns`: ``(tokens a line, labels, qids, ids, values)``,
  or ``None`` when the chunk is not in the layout it reads."""
  import pyarrow as pa
  import pyarrow.compute as pc

  if b"#" in chunk or b"\r" in chunk or b"\t" in chunk:
    return None
  if has_qid:  # "label qid:q ..." -> "label q ..."; every line must have had one
    with_qid = chunk.count(b" qid:")
    chunk = chunk.replace(b" qid:", b" ")
  u8 = np.frombuffer(chunk, np.uint8)
  ends = np.flatnonzero(_SEPARATOR[u8])                               # token ends
  if ends.size == 0:
    return None
  starts = np.concatenate([[0], ends[:-1] + 1])
  length = ends - starts
  if np.any(length <= 0):
    return None                                                       # an empty token
  seps = u8[ends]
  newlines = np.flatnonzero(seps == 10)
  tokens = int(newlines[0]) + 1
  lines = newlines.size
  if tokens * lines != ends.size or np.any(np.diff(newlines) != tokens) or (
      has_qid and with_qid != lines):
    return None                                                       # ragged lines
  lead = 2 if has_qid else 1                                          # label [q]
  num = (tokens - lead) // 2
  if num < 1 or tokens != lead + 2 * num:
    return None
  pattern = np.array([32] * lead + [58, 32] * (num - 1) + [58, 10], np.uint8)
  if np.any(seps.reshape(lines, tokens) != pattern):
    return None
  try:  # each token keeps the separator after it: strip it, then cast
    offsets = np.concatenate([[0], ends + 1]).astype(np.int64)
    text = pa.LargeStringArray.from_buffers(ends.size, pa.py_buffer(offsets),
                                           pa.py_buffer(chunk))
    numbers = pc.cast(pc.utf8_rtrim(text, characters=" :\n"), pa.float64())
  except (pa.ArrowInvalid, pa.ArrowTypeError):
    return None
  numbers = numbers.to_numpy(zero_copy_only=False).reshape(lines, tokens)
  length = length.reshape(lines, tokens)
  ints = [(numbers[:, lead::2], length[:, lead::2], _MAX_FEATURE_ID)]
  if has_qid:
    ints.append((numbers[:, 1], length[:, 1], 2.0**53))
  for v, n, high in ints:  # plain integers: as many characters as digits
    if np.any((v < 0) | (v > high) | (v != np.round(v))):
      return None
    if np.any(np.floor(np.log10(np.maximum(v, 1.0))).astype(np.int64) + 1 != n):
      return None
  ids, values = numbers[:, lead::2], numbers[:, lead + 1::2]
  if np.any(np.diff(ids, axis=1) <= 0):
    return None                       # ids out of increasing order: the line parser's rules
  if not np.all(np.isfinite(values)) or np.any(np.abs(values) > np.finfo(np.float32).max):
    return None                       # the line parser names the value and its line
  qid = numbers[:, 1].astype(np.int64) if has_qid else None
  # Copies, so that the chunk's float64 token array is freed.
  return tokens, numbers[:, 0].copy(), qid, ids.astype(np.int32), values.astype(np.float32)


_SEPARATOR = np.zeros(256, bool)
_SEPARATOR[[ord(" "), ord("\n"), ord(":")]] = True


def _parse_columns(path: Path, groups: list[int] | None) -> ParsedFile | None:
  """Compiled path for files whose lines all read ``label qid:q i:v ... i:v`` with the
  same number of features, single spaces and no comment (dense files such as MSLR-WEB).

  Tokens are cut at the separators with numpy and parsed by Arrow's string-to-number cast
  (correctly rounded, like Python's ``float``). The layout is checked exactly: every line
  has the same separators in the same places, no token is empty, ids and qids are written
  as plain integers (no sign, no leading zero, no decimal point), ids increase along a
  line. Anything else is left to the other parsers (``None``).
  """
  import concurrent.futures

  has_qid = groups is None
  labels, qids, blocks, layouts = [], [], [], set()
  workers = max(1, min(4, os.cpu_count() or 1))
  # Chunks are independent: numpy and Arrow release the GIL, so threads use every core;
  # at most `workers` chunks are in flight, which bounds the memory.
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending: list = []
    chunks = _line_chunks(path)
    while True:
      while len(pending) < workers:
        chunk = next(chunks, None)
        if chunk is None:
          break
        pending.append(pool.submit(_column_chunk, chunk, has_qid))
      if not pending:
        break
      part = pending.pop(0).result()
      if part is None:
        for f in pending:
          f.cancel()
        return None
      layout, label, qid, ids, values = part
      layouts.add(layout)
      labels.append(label)
      qids.append(qid)
      blocks.append((ids, values))
  if len(layouts) > 1:
    return None  # chunks with different numbers of features
  if not labels:
    return None
  raw = np.concatenate(labels)
  if np.any(~np.isfinite(raw) | (raw < 0) | (raw != np.round(raw))):
    return None
  max_id, min_id = 0, 1
  for ids, _ in blocks:
    max_id, min_id = max(max_id, int(ids.max())), min(min_id, int(ids.min()))
  dense = np.zeros((raw.size, max_id + 1), np.float32)
  row = 0
  while blocks:
    ids, values = blocks.pop(0)
    if np.all(ids == ids[:1]):  # the same ids on every line (dense files): column copies
      dense[row:row + ids.shape[0], ids[0]] = values
    else:
      dense[np.arange(row, row + ids.shape[0])[:, None], ids] = values
    row += ids.shape[0]
  qid = np.concatenate(qids) if has_qid else None
  return _grouped(path, raw, dense, qid, groups, min_id, max_id)


def _grouped(path: Path, raw: np.ndarray, dense: np.ndarray, qid: np.ndarray | None,
             groups: list[int] | None, min_id: int, max_id: int) -> ParsedFile | None:
  """Splits parsed lines into queries as the line parser does (``None``: defer to it)."""
  label = raw.astype(np.float32)
  if groups is not None:
    if sum(groups) != raw.size:
      return None
    bounds = np.cumsum([0, *groups])
    members = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(groups))]
    names = [str(i) for i in range(len(groups))]
  else:
    unique, first, inverse = np.unique(qid, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")           # queries in order of first line
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(by_first.size)
    query_of_line = rank[inverse.reshape(-1)]
    lines = np.argsort(query_of_line, kind="stable")      # file order within each query
    counts = np.bincount(query_of_line, minlength=unique.size)
    members = np.split(lines, np.cumsum(counts)[:-1])
    names = [str(int(v)) for v in unique[by_first]]
  # A query on consecutive lines (the usual layout) is a view, not a copy.
  members = [slice(int(m[0]), int(m[-1]) + 1) if m.size and m[-1] - m[0] + 1 == m.size
             else m for m in members]
  return ParsedFile(names, [label[m] for m in members], [dense[m] for m in members],
                    list(range(min_id, max_id + 1)), qids_in_file=groups is None,
                    lines=[np.arange(raw.size)[m] for m in members])


def _parse_lines(path: Path, groups: list[int] | None) -> ParsedFile:
  """The line-by-line parser: the reference, and the one that names a bad line."""
  labels, qids, rows, cols, vals, line_numbers = [], [], [], [], [], []
  max_id, min_id, line_count = 0, 1, 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line_number, line in enumerate(f, 1):
      body = line.split("#", 1)[0].split()
      if not body:
        continue
      try:
        labels.append(float(body[0]))
        rest = body[1:]
        qid = None
        if rest and rest[0].startswith("qid:"):
          qid, rest = rest[0][4:], rest[1:]
        qids.append(qid)
        for token in rest:
          key, _, value = token.partition(":")
          fid = int(key)
          if fid < 0:
            raise ValueError(f"negative feature id {fid}")
          rows.append(line_count)
          cols.append(fid)
          vals.append(float(value))
          if fid > max_id:
            max_id = fid
          if fid < min_id:
            min_id = fid
      except ValueError as e:
        raise ValueError(f"{path}:{line_number}: not a LibSVM ranking line ({e}): "
                         f"{line.strip()[:120]!r}") from None
      line_numbers.append(line_number)
      line_count += 1
  if not line_count:
    raise ValueError(f"{path}: no data lines")
  dense = np.zeros((line_count, max_id + 1), np.float32)
  dense[np.asarray(rows, np.int64), np.asarray(cols, np.int64)] = np.asarray(vals, np.float32)
  label = np.asarray(labels, np.float32)
  # Checked on the values as written (float64), so each error names its file:line.
  values = np.asarray(vals, np.float64)
  bad = np.flatnonzero(~np.isfinite(values) | (np.abs(values) > np.finfo(np.float32).max))
  if bad.size:
    i = bad[0]
    raise ValueError(f"{path}:{line_numbers[rows[i]]}: feature {cols[i]} is {values[i]}; "
                     "feature values must be finite float32 numbers")
  raw = np.asarray(labels, np.float64)
  bad = np.flatnonzero(~np.isfinite(raw) | (raw < 0) | (raw != np.round(raw)))
  if bad.size:
    raise ValueError(f"{path}:{line_numbers[bad[0]]}: label {labels[bad[0]]} is not a grade; "
                     "labels must be integer grades >= 0 (0, 1, 2, ...)")

  if groups is not None:
    if sum(groups) != line_count:
      raise ValueError(f"{path}.query: group sizes sum to {sum(groups)}, but the file has "
                       f"{line_count} lines")
    bounds = np.cumsum([0, *groups])
    members = [np.arange(bounds[i], bounds[i + 1]) for i in range(len(groups))]
    names = [str(i) for i in range(len(groups))]
  else:
    missing = [i for i, q in enumerate(qids) if q is None]
    if missing:
      raise ValueError(f"{path}:{line_numbers[missing[0]]}: the line has no qid: and there "
                       f"is no group file {path}.query")
    order: dict[str, list[int]] = {}
    for i, q in enumerate(qids):
      order.setdefault(q, []).append(i)
    names = list(order)
    members = [np.asarray(v) for v in order.values()]
  return ParsedFile(names, [label[m] for m in members], [dense[m] for m in members],
                    list(range(min_id, max_id + 1)), qids_in_file=groups is None,
                    lines=[np.arange(raw.size)[m] for m in members])


_DOCID = re.compile(r"docid\s*=\s*(\S+)")


def data_line_ids(path: Path) -> np.ndarray:
  """The candidate ID of every data line of a LibSVM file, in order: the ``docid = …`` of
  its comment where it has one (LETOR 4.0 writes ``#docid = GX008-86-4444840 inc = 1``),
  else its 1-based line number in the file. A data line is one with anything before its
  ``#`` (the parsers skip blank and comment-only lines)."""
  out = []
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      body, sharp, comment = line.partition(b"#")
      if not body.strip():
        continue
      found = _DOCID.search(comment.decode("utf-8", "replace")) if sharp else None
      out.append(found.group(1) if found else str(number))
  return np.asarray(out, dtype=str)


def read_score_file(path: Path, *, libsvm: Path, num_lines: int) -> np.ndarray:
  """One teacher's scores of a LibSVM file, one a line as LightGBM's ``predict`` writes
  them (blank lines skipped; ``nan`` marks a missing score).

  Raises:
    ValueError: a line that is not a number (``file:line``), or a count of scores that
      differs from the LibSVM file's data lines, naming both files and both counts.
  """
  values = []
  with open(path, encoding="utf-8", errors="replace") as f:
    for number, line in enumerate(f, 1):
      text = line.strip()
      if not text:
        continue
      try:
        values.append(float(text.split()[0]))
      except ValueError:
        raise ValueError(f"{path}:{number}: not a score: {text[:80]!r} (one number a line, "
                         "as LightGBM's predict writes)") from None
  if len(values) != num_lines:
    raise ValueError(f"source.teacher_score_file: {path} has {len(values)} scores, but "
                     f"{libsvm} has {num_lines} data lines; the score file must hold one "
                     "score a line, aligned with the LibSVM file's lines")
  return np.asarray(values, np.float64)


def check_disjoint_splits(parsed: Mapping[str, ParsedFile], files: Mapping[str, str]) -> None:
  """Refuses a query id that occurs in two split files (a leak between train and test).

  Splits named by a ``.query`` group file have no ids to compare and are skipped.
  """
  seen: dict[str, str] = {}
  for split, f in parsed.items():
    if not f.qids_in_file:
      continue
    for q in f.qids:
      if seen.setdefault(q, split) != split:
        raise ValueError(f"{files[split]}: qid:{q} also occurs in the {seen[q]} file "
                         f"{files[seen[q]]}; a query must be in exactly one split")


_PARSED: dict[tuple, ParsedFile] = {}  # (path, size, mtime) -> parsed; see parse_files


def parse_files(files: Mapping[str, str]) -> dict[str, ParsedFile]:
  """Parses the split files, memoised on (path, size, mtime) until :func:`clear_cache`."""
  out = {}
  for split, path in files.items():
    if path:
      stat = Path(path).stat()
      key = (str(path), stat.st_size, stat.st_mtime_ns)
      out[split] = _PARSED[key] if key in _PARSED else parse_file(Path(path))
      _PARSED[key] = out[split]
  return out


# Per-line fields checked by make_builder before TFDS writes anything, by builder name.
_PER_LINE: dict[str, dict] = {}


def clear_cache() -> None:
  _PARSED.clear()
  _PER_LINE.clear()


# --- turning queries into requests ---------------------------------------------------------

def _widen(block: np.ndarray, width: int) -> np.ndarray:
  if block.shape[1] == width:
    return block
  out = np.zeros((block.shape[0], width), np.float32)
  out[:, :block.shape[1]] = block
  return out


def feature_columns(present: Sequence[int], student: Sequence[int],
                    teacher: Sequence[int]) -> tuple[list[int], list[int]]:
  """Feature ids of ``items`` (the student's) and ``cross`` (the teacher's others)."""
  present = sorted(present)
  student_ids = list(student) if student else present
  teacher_ids = list(teacher) if teacher else present
  unknown = sorted({*student_ids, *teacher_ids} - set(present))
  if unknown:
    raise ValueError(f"source.student_features/teacher_features: feature ids {unknown[:10]} "
                     f"do not occur in the files (ids present: {present[0]}..{present[-1]})")
  cross_ids = [f for f in teacher_ids if f not in set(student_ids)]
  return student_ids, cross_ids


class Normalizer:
  """Per-feature normalisation fitted on the train split's documents."""

  def __init__(self, kind: str, train_blocks: Sequence[np.ndarray]):
    if kind not in NORMALIZERS:
      raise ValueError(f"source.normalize: must be one of {NORMALIZERS}, got {kind!r}")
    self.kind = kind
    if kind == "none":
      return
    x = self._pre(np.concatenate(train_blocks, axis=0).astype(np.float64))
    self.mean = x.mean(0)
    std = x.std(0)
    self.std = np.where(std > 1e-12, std, 1.0)

  def _pre(self, x):
    return np.sign(x) * np.log1p(np.abs(x)) if self.kind == "log_zscore" else x

  def __call__(self, x: np.ndarray) -> np.ndarray:
    if self.kind == "none":
      return x.astype(np.float32)
    return ((self._pre(x.astype(np.float64)) - self.mean) / self.std).astype(np.float32)


def make_request(label: np.ndarray, features: np.ndarray, *, rng: np.random.Generator,
                 list_size: int, items_cols: Sequence[int], cross_cols: Sequence[int],
                 num_exposed: int, logging_noise: float, logging_feature: int,
                 position_bias: float, per_document: Mapping[str, np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
  """One query (normalised features ``[L, D]``, judged labels ``[L]``) → one record.

  ``per_document`` maps extra record fields to ``[L, ...]`` values of the query's documents
  (the candidate IDs, the logged teacher scores); they follow the same truncation and are
  padded (``""`` for strings, 0 otherwise)."""
  length = len(label)
  n = list_size
  per_document = dict(per_document or {})
  if length > n:  # the truncation rule: a uniform random subset, kept in file order
    keep = np.sort(rng.choice(length, size=n, replace=False))
    label, features = label[keep], features[keep]
    per_document = {k: v[keep] for k, v in per_document.items()}
  k = len(label)
  valid = np.arange(n) < k
  pad = functools.partial(tfds_base.pad_rows, length=n)
  signal = label if logging_feature == 0 else features[:, logging_feature]
  log_score = signal + logging_noise * rng.standard_normal(k).astype(np.float32)
  e = min(num_exposed, k)
  top = np.argsort(-log_score, kind="stable")[:e]
  position = np.zeros(k, np.int64)
  position[top] = np.arange(1, e + 1)
  exposed = position > 0
  theta = np.where(exposed, (1.0 / np.maximum(position, 1)) ** position_bias, 1.0)
  examined = exposed & (rng.random(k) < theta)
  exposure = exposure_probability(signal[None, :], np.ones((1, k), bool), num_exposed=e,
                                  noise=logging_noise, rng=seeded_rng(log_score))[0]
  return {
      "context": np.array([math.log1p(length) / math.log1p(n)], np.float32),
      "items": pad(features[:, list(items_cols)]),
      "cross": pad(features[:, list(cross_cols)]),
      "label": pad(np.where(examined, label, 0.0).astype(np.float32)),
      "exposed": pad(exposed),
      "valid": valid,
      "true_relevance": pad(label.astype(np.float32)),
      "propensity": pad(theta.astype(np.float32)),
      "exposure_propensity": np.concatenate([exposure, np.ones(n - k, np.float32)]),
      **{name: ([str(x) for x in v] + [""] * (n - k) if v.dtype.kind in "US"
                else pad(v)) for name, v in per_document.items()},
  }


# --- the builder --------------------------------------------------------------------------

def split_queries(parsed: Mapping[str, ParsedFile], params: Mapping[str, Any],
                  per_line: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict:
  """``{split: [(qid, labels [L], features [L, D], per-document fields)]}``, carving
  missing splits from train. ``per_line[split]`` maps field names to values of every data
  line of the split's file (``[lines, ...]``); each query gets its documents' rows."""
  width = max(b.shape[1] for f in parsed.values() for b in f.features)
  per_line = per_line or {}
  queries = {s: list(zip(f.qids, f.labels, [_widen(b, width) for b in f.features],
                         [{k: v[rows] for k, v in per_line.get(s, {}).items()}
                          for rows in (f.lines or [None] * len(f.qids))]))
             for s, f in parsed.items()}
  train = queries["train"]
  carve = [s for s in ("valid", "test") if s not in queries]
  if carve:
    order = np.random.default_rng([params["seed"], 7]).permutation(len(train))
    counts = {s: max(1, int(round(params[f"{s}_fraction"] * len(train)))) for s in carve}
    if sum(counts.values()) >= len(train):
      raise ValueError(f"{len(train)} train queries are too few to carve {counts} from")
    start = 0
    for s in carve:
      queries[s] = [train[i] for i in sorted(order[start:start + counts[s]])]
      start += counts[s]
    queries["train"] = [train[i] for i in sorted(order[start:])]
  return queries


def _builder_class():
  import tensorflow_datasets as tfds

  tfds_base.quiet_tfds()

  @dataclasses.dataclass
  class LetorConfig(tfds.core.BuilderConfig):
    source: str = "letor"                                   # catalog name or "letor"
    files: dict = dataclasses.field(default_factory=dict)   # split -> absolute path | ""
    params: dict = dataclasses.field(default_factory=dict)  # PARAMS
    items_ids: list = dataclasses.field(default_factory=list)  # feature ids -> items
    cross_ids: list = dataclasses.field(default_factory=list)  # feature ids -> cross

  class PrerankLetor(tfds.core.GeneratorBasedBuilder):
    """LETOR/LibSVM ranking files in the prerank-jax batch schema (see the module doc)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "exposure_propensity of the simulated logging policy.",
                     "1.2.0": "The test split keeps queries shorter than min_list_size.",
                     "1.3.0": "Candidate IDs (docid comments, else line numbers); logged "
                              "teacher scores (source.teacher_score_file)."}
    BUILDER_CONFIGS = [LetorConfig(name="placeholder", items_ids=[1],
                                   params={"list_size": 1},
                                   description="use prerank_jax.data.letor.make_builder")]

    def _shapes(self):
      c = self.builder_config
      shapes = tfds_base.record_shapes(context=1, list_size=c.params["list_size"],
                                       items=len(c.items_ids), cross=len(c.cross_ids),
                                       truth=True, propensity=True, exposure=True)
      teachers = len(c.params.get("teacher_score_file", {}).get("train", ()))
      if teachers:
        shapes[tfds_base.LOGGED_SCORES] = ((c.params["list_size"], teachers), np.float32)
      return shapes

    def _info(self):
      c = self.builder_config
      entry = CATALOG.get(c.source, GENERIC)
      files = {s: f for s, f in c.files.items() if f}
      return tfds_base.dataset_info(
          self, self._shapes(), description=__doc__, license_note=entry.licence,
          metadata={"source": c.source, "params": c.params, "items_feature_ids": c.items_ids,
                    "cross_feature_ids": c.cross_ids,
                    "files": {s: Path(f).name for s, f in files.items()},
                    "file_signature": tfds_base.file_signature(files.values())
                    if all(Path(f).is_file() for f in files.values()) else None},
          candidate_ids=True)

    def _split_generators(self, dl_manager):
      c = self.builder_config
      parsed = parse_files(c.files)
      per_line = _PER_LINE.pop(c.name, None) or per_line_fields(parsed, c.files, c.params)
      self._queries = split_queries(parsed, c.params, per_line)
      self._normalizer = Normalizer(c.params["normalize"],
                                    [q[2] for q in self._queries["train"]])
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      c = self.builder_config
      p = c.params
      shapes = self._shapes()
      index, kept = SPLITS.index(split), 0
      for q, (qid, label, features, per_document) in enumerate(self._queries[split]):
        if len(label) < p["min_list_size"] and split != "test":  # test: no silent drops
          continue
        record = make_request(
            label, self._normalizer(features), rng=np.random.default_rng([p["seed"], index, q]),
            list_size=p["list_size"], items_cols=c.items_ids, cross_cols=c.cross_ids,
            num_exposed=p["num_exposed"], logging_noise=p["logging_noise"],
            logging_feature=p["logging_feature"], position_bias=p["position_bias"],
            per_document=per_document)
        record["request_id"] = qid
        yield kept, tfds_base.check_record(record, shapes)
        kept += 1
      if not kept:
        raise ValueError(f"{c.source}: split {split!r} has no query with at least "
                         f"source.min_list_size={p['min_list_size']} documents")

  return PrerankLetor, LetorConfig


# The builder classes, defined on first use (TFDS is imported lazily).
builder_classes = functools.cache(_builder_class)


def resolve_files(dataset: str, source: Mapping[str, Any]) -> tuple[Path, dict[str, str],
                                                                     CatalogEntry]:
  """The manual directory and ``{split: absolute path or ""}`` for a dataset name."""
  entry = CATALOG.get(dataset, GENERIC)
  data_dir = tfds_base.default_data_dir(source["data_dir"])
  manual = Path(source["manual_dir"]).expanduser() if source["manual_dir"] else (
      data_dir / "downloads" / "manual" / dataset.replace("/", "_"))
  files = {}
  for split in SPLITS:
    override = source[f"{split}_file"]
    rel = override if override else entry.files[split]
    files[split] = str((manual / rel).resolve()) if rel else ""
    if (split != "train" and not override and dataset not in CATALOG
        and not Path(files[split]).is_file()):
      files[split] = ""  # your own files: a valid/test file that is not there is carved
  if not files["train"]:
    raise ValueError(f"{dataset}: source.train_file is required")
  return manual.resolve(), files, entry


def check_student_features(dataset: str, student_features: Sequence[int]) -> None:
  """Refuses MSLR-WEB's feature ids on a dataset that is not MSLR-WEB.

  ``configs/letor.py`` gives the student 20 cheap MSLR features by their MSLR ids; on
  ``--config.dataset=letor`` (your own files), Istella or Yahoo those ids name unrelated
  columns, so the run stops with what to set instead. The documented default for files
  without MSLR's ids is ``source.student_features=()``: the student sees every feature.

  Raises:
    ValueError: naming ``source.student_features``.
  """
  if (tuple(int(i) for i in student_features) == MSLR_STUDENT_FEATURES
      and not dataset.startswith("mslr_web/")):
    raise ValueError(
        f"source.student_features: holds MSLR-WEB's 20 feature ids (the default of "
        f"configs/letor.py), but dataset {dataset!r} is not MSLR-WEB, so they would pick "
        "unrelated columns. Set --config.source.student_features=() (the documented "
        "default: the student sees every feature) or the ids of your file's cheap "
        "features, e.g. --config.source.student_features='(1,2,3)'")


def generic_route_hint(dataset: str) -> str:
  """The lines a missing catalog dataset's message adds: the generic ``letor`` route."""
  return ("\nNo " + dataset.split("/")[0] + " files? Any LibSVM ranking files "
          "(`label qid:Q f:v ...`) run through the generic route: --config.dataset=letor "
          "--config.source.train_file=<file> [--config.source.test_file=<file>] "
          "--config.source.student_features=() (every feature; MSLR's ids do not apply).")


def params_of(config) -> dict[str, Any]:
  s = config.source
  return {
      "list_size": int(s.list_size), "min_list_size": int(s.min_list_size),
      "num_exposed": int(s.num_exposed), "logging_noise": float(s.logging_noise),
      "logging_feature": int(s.logging_feature), "position_bias": float(s.position_bias),
      "student_features": [int(i) for i in s.student_features],
      "teacher_features": [int(i) for i in s.teacher_features],
      "normalize": str(s.normalize), "valid_fraction": float(s.valid_fraction),
      "test_fraction": float(s.test_fraction), "seed": int(config.seed),
      "teacher_score_file": score_files(config)}


def score_files(config) -> dict[str, list[str]]:
  """``{split: [absolute score file per teacher]}`` of ``source.teacher_score_file``
  (relative to the manual directory; empty for a config made before the field)."""
  s = config.source
  given = s.get("teacher_score_file")
  if given is None or not any(given[split] for split in SPLITS):
    return {}
  manual, _, _ = resolve_files(config.dataset, s)
  return {split: [str((manual / f).resolve()) for f in given[split]] for split in SPLITS}


def per_line_fields(parsed: Mapping[str, ParsedFile], files: Mapping[str, str],
                    params: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """``{split: {field: [data lines, ...]}}``: every data line's candidate ID and, with
  ``teacher_score_file``, its logged scores ``[lines, M]`` (checked: each score file has
  one score per data line; a file without any score is refused)."""
  from prerank_jax.data.logged_teacher import check_raw_scores

  out = {}
  scores = params.get("teacher_score_file") or {}
  for split in parsed:
    ids = data_line_ids(Path(files[split]))
    out[split] = {tfds_base.CANDIDATE_IDS: ids}
    if scores:
      if not scores.get(split):
        raise ValueError(f"source.teacher_score_file.{split}: the {split} file "
                         f"{files[split]} has no score file; a logged teacher needs one per "
                         "teacher for every split file")
      columns = []
      for path in scores[split]:
        values = read_score_file(Path(path), libsvm=Path(files[split]), num_lines=len(ids))
        check_raw_scores(values, name="its scores", source=path,
                         where=lambda i, path=path: f"{path} (score {i + 1})")
        columns.append(values)
      out[split][tfds_base.LOGGED_SCORES] = np.stack(columns, 1).astype(np.float32)
  return out


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)`` for ``config.dataset`` (a catalog name or ``"letor"``) and
  ``config.source``. ``missing`` holds the instructions when the dataset is neither prepared
  nor on disk as raw files (``builder`` is then ``None``). Without preparing, this parses
  the raw files (to learn the feature ids); a prepared dataset needs no raw files."""
  from prerank_jax.data import messages

  dataset = config.dataset
  check_student_features(dataset, config.source.student_features)
  manual, files, entry = resolve_files(dataset, config.source)
  params = params_of(config)
  # Catalog data is identified by its name; your own files by their paths.
  identity = {"source": dataset, "params": params,
              "files": None if dataset in CATALOG else files,
              # a rewritten score file (another size) is prepared anew
              **({"scores": [tfds_base.file_signature([f for f in paths if Path(f).is_file()])
                             for paths in params["teacher_score_file"].values()]}
                 if params["teacher_score_file"] else {})}
  name = (f"{dataset.replace('/', '-')}-n{params['list_size']}-e{params['num_exposed']}-"
          f"{fingerprint(identity, length=10)}")
  data_dir = tfds_base.default_data_dir(config.source.data_dir)
  prepared = data_dir / "prerank_letor" / name / VERSION
  present = [f for f in files.values() if f and Path(f).is_file()]
  absent = [f for f in files.values() if f and not Path(f).is_file()]
  cls, config_cls = builder_classes()
  make = lambda items_ids, cross_ids: cls(
      config=config_cls(name=name, source=dataset, files=files, params=params,
                        items_ids=list(items_ids), cross_ids=list(cross_ids),
                        description=f"{dataset} from {manual}"),
      data_dir=str(data_dir), file_format="array_record")
  if (prepared / "dataset_info.json").exists():
    meta = json.loads((prepared / "metadata.json").read_text())
    if (dataset not in CATALOG and not absent and meta.get("file_signature")
        and [list(x) for x in tfds_base.file_signature(present)] != meta["file_signature"]):
      raise ValueError(f"{dataset}: the files in {manual} changed since they were prepared "
                       f"into {prepared}; delete that directory to prepare them again")
    return make(meta["items_feature_ids"], meta["cross_feature_ids"]), None
  if absent:
    return None, messages.missing_message(
        config, kind="letor", what=entry.download, licence=entry.licence, manual_dir=manual,
        where=[(f, "missing" if f in absent else "found") for f in files.values() if f]
    ) + (generic_route_hint(dataset) if dataset in CATALOG else "")
  parsed = parse_files(files)
  check_disjoint_splits(parsed, files)
  _PER_LINE[name] = per_line_fields(parsed, files, params)  # refused here, before writing
  ids = sorted({i for f in parsed.values() for i in f.feature_ids})
  items_ids, cross_ids = feature_columns(ids, params["student_features"],
                                         params["teacher_features"])
  if params["logging_feature"] and params["logging_feature"] not in ids:
    raise ValueError(f"source.logging_feature: feature {params['logging_feature']} does not "
                     "occur in the files")
  return make(items_ids, cross_ids), None


def load(config, *, show: bool = False, lazy_train: bool = False
         ) -> tuple[dict[str, Batch], Any]:
  """Prepares (once) and reads ``{"train", "valid", "test"} → Batch`` and the builder."""
  builder, missing = make_builder(config)
  if builder is None:
    raise tfds_base.DatasetMissingError(missing)
  try:
    builder = tfds_base.prepare(builder, missing=None, show=show)
  finally:
    clear_cache()
  splits = tfds_base.read_splits(builder, SPLITS, lazy_train=lazy_train)
  if config.teacher.model.name == LOGGED:
    given = config.source.teacher_score_file
    for split in SPLITS:
      # A train split left on disk: its IDs are not read (messages give row numbers).
      lazy = isinstance(splits[split], tfds_base.RecordSplit)
      ids = None if lazy else split_ids(config, builder, split)
      names = given[split] or given["train"]  # a carved split has train's scores
      splits[split] = attach_logged_teacher(
          splits[split], tfds_base.read_array_field(builder, split, tfds_base.LOGGED_SCORES),
          names=[f"score file {f!r}" for f in names],
          kind=config.teacher.score_kind, missing=config.teacher.missing, split=split,
          request_ids=None if ids is None else ids.request,
          candidate_ids=None if ids is None else ids.candidate)
  return splits, builder


def split_ids(config, builder, split: str) -> SplitIds:
  """The user's IDs of one prepared split: the qid (or the group number of a ``.query``
  file) and each document's ``#docid = …`` comment, else its 1-based line number."""
  return tfds_base.split_ids(builder, split, request_column="qid", candidate_column="docid")
