"""A teacher-score cache stored next to a prepared dataset, as ArrayRecord.

Scoring every split with the teacher is done once per (dataset, teacher) and reused by
later sweeps. The cache of a TFDS dataset lives in its own directory::

    <data_dir>/<builder>/<config>/<version>/teacher_scores/<teacher hash>/
        key.json                 {"dataset": "prerank_letor/…/1.0.0", "teacher": "<sha256>",
                                  "format": 1, "splits": {"train": [R, N, M], ...}}
        train.array_record       one record per request: float32 [N, M] bytes
        valid.array_record  test.array_record

The key is the dataset's full name and version plus a hash of the teacher's parameters
(:func:`params_fingerprint`, the content of the teacher checkpoint). Opening a cache whose
``key.json`` names another dataset or teacher, or whose shapes differ from the split's, is
refused with :class:`TeacherCacheMismatch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from prerank_jax.batch import Batch

FORMAT = 1


class TeacherCacheMismatch(ValueError):
  """The cache on disk was written for another dataset, teacher or shape."""


def params_fingerprint(params: Any) -> str:
  """SHA-256 of a parameter pytree: every leaf's path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(params))
  for path, leaf in leaves:
    value = np.ascontiguousarray(np.asarray(leaf))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{value.dtype.str}{value.shape}".encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


class TeacherScoreCache:
  """Teacher scores ``[R, N, M]`` per split under ``directory``, keyed by ``key``.

  Args:
    directory: where the cache lives (see :meth:`for_dataset` for the standard place).
    dataset: the dataset's full name and version, e.g. ``builder.info.full_name``.
    teacher: the teacher's :func:`params_fingerprint`.
  """

  def __init__(self, directory: str | Path, *, dataset: str, teacher: str):
    self.directory = Path(directory)
    self.key = {"dataset": str(dataset), "teacher": str(teacher), "format": FORMAT}

  @classmethod
  def for_dataset(cls, builder, teacher: str) -> "TeacherScoreCache":
    """The cache next to a prepared TFDS dataset."""
    directory = Path(str(builder.data_path)) / "teacher_scores" / teacher[:16]
    return cls(directory, dataset=builder.info.full_name, teacher=teacher)

  @property
  def key_file(self) -> Path:
    return self.directory / "key.json"

  def _stored(self) -> dict | None:
    if not self.key_file.exists():
      return None
    stored = json.loads(self.key_file.read_text())
    found = {k: stored.get(k) for k in self.key}
    if found != self.key:
      diff = [f"{k}: cache has {found[k]!r}, this run needs {self.key[k]!r}"
              for k in self.key if found[k] != self.key[k]]
      raise TeacherCacheMismatch(
          f"teacher-score cache {self.directory} was written for another dataset or "
          f"teacher ({'; '.join(diff)}); refusing it. Delete the directory or point the "
          "cache elsewhere to score again.")
    return stored

  def has(self, split: str) -> bool:
    stored = self._stored()
    return stored is not None and split in stored.get("splits", {}) and (
        self.directory / f"{split}.array_record").exists()

  def load(self, split: str, *, num_requests: int, list_size: int) -> np.ndarray | None:
    """The split's scores ``[R, N, M]``, or ``None`` when the split is not cached."""
    if not self.has(split):
      return None
    shape = tuple(self._stored()["splits"][split])
    if shape[:2] != (num_requests, list_size):
      raise TeacherCacheMismatch(
          f"teacher-score cache {self.directory}: split {split!r} holds scores of shape "
          f"{shape}, but the split has R={num_requests}, N={list_size}; refusing it")
    from array_record.python import array_record_data_source

    source = array_record_data_source.ArrayRecordDataSource(
        [str(self.directory / f"{split}.array_record")])
    if len(source) != shape[0]:
      raise TeacherCacheMismatch(f"teacher-score cache {self.directory}: {split} has "
                                 f"{len(source)} records, key.json says {shape[0]}")
    raw = source.__getitems__(list(range(len(source))))
    return np.stack([np.frombuffer(r, np.float32).reshape(shape[1:]) for r in raw])

  def save(self, split: str, scores: np.ndarray) -> None:
    """Writes the split's scores ``[R, N, M]`` (atomically) and records it in key.json."""
    from array_record.python.array_record_module import ArrayRecordWriter

    scores = np.ascontiguousarray(np.asarray(scores, np.float32))
    if scores.ndim != 3:
      raise ValueError(f"teacher scores must be [R, N, M], got {scores.shape}")
    self._stored()  # refuse a cache of another dataset or teacher before writing
    self.directory.mkdir(parents=True, exist_ok=True)
    final = self.directory / f"{split}.array_record"
    tmp = final.with_suffix(f".tmp{os.getpid()}")
    try:
      writer = ArrayRecordWriter(str(tmp), "group_size:1")
      for row in scores:
        writer.write(row.tobytes())
      writer.close()
      os.replace(tmp, final)
    finally:
      tmp.unlink(missing_ok=True)
    # key.json is read, updated and replaced under an exclusive lock: two processes (or
    # threads) saving different splits at once must not drop each other's entry.
    with self._key_lock():
      stored = self._stored() or {**self.key, "splits": {}}
      stored["splits"][split] = list(scores.shape)
      tmp_key = self.key_file.with_suffix(f".tmp{os.getpid()}-{id(stored)}")
      try:
        tmp_key.write_text(json.dumps(stored, indent=1))
        os.replace(tmp_key, self.key_file)
      finally:
        tmp_key.unlink(missing_ok=True)

  @contextlib.contextmanager
  def _key_lock(self):
    with open(self.directory / ".key.lock", "a") as handle:
      fcntl.flock(handle, fcntl.LOCK_EX)
      try:
        yield
      finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def score_splits_cached(builder, teacher_params: Any, splits: Mapping[str, Batch],
                        score: Callable[[Mapping[str, Batch]], Mapping[str, Batch]]
                        ) -> tuple[dict[str, Batch], dict[str, str]]:
  """Adds teacher scores to every split, from the cache when it holds them.

  Args:
    builder: the prepared TFDS builder of the splits (``None``: no cache, just ``score``).
    teacher_params: the teacher's parameters (hashed into the key).
    splits: ``{name: Batch}`` without teacher scores.
    score: computes them, e.g. ``lambda s: runner.score_splits(teachers, s)``.

  Returns:
    ``({name: Batch with teacher_scores}, {name: "cache" | "computed"})``.
  """
  if builder is None:
    return dict(score(splits)), {name: "computed" for name in splits}
  cache = TeacherScoreCache.for_dataset(builder, params_fingerprint(teacher_params))
  out, how, todo = {}, {}, {}
  for name, batch in splits.items():
    scores = cache.load(name, num_requests=batch.num_requests, list_size=batch.list_size)
    if scores is None:
      todo[name] = batch
    else:
      out[name], how[name] = batch._replace(teacher_scores=scores), "cache"
  if todo:
    for name, batch in score(todo).items():
      cache.save(name, np.asarray(batch.teacher_scores))
      out[name], how[name] = batch, "computed"
  return {name: out[name] for name in splits}, how
