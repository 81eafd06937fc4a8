"""The user's own identifiers of requests and candidates, carried beside a split's
:class:`~prerank_jax.batch.Batch` so that every output (``scores.parquet``, TREC files,
exported scores) can be keyed by them instead of by internal indices.

A loader that knows the IDs returns one :class:`SplitIds` per split in
``Loaded.ids`` (``prerank_jax/data/registry.py``); the in-memory simulator returns
``None`` and the outputs fall back to the internal indices.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SplitIds(NamedTuple):
  """IDs of one split, aligned with its batch.

  Attributes:
    request: ``[R]`` str array, the request ID of each list (a tabular table's request
      column, a LETOR file's qid).
    candidate: ``[R, N]`` str array, the candidate ID of each slot (a tabular table's
      ``source.candidate_column``, a LETOR line's ``#docid = …`` comment, else its
      1-based line number in its file); ``""`` on padding.
    request_column: the user's name of the request ID column (``source.request_column``
      for tables, ``"qid"`` for LETOR files).
    candidate_column: the user's name of the candidate ID column
      (``source.candidate_column`` for tables, ``"docid"`` for LETOR files).
  """

  request: np.ndarray
  candidate: np.ndarray
  request_column: str = "request_id"
  candidate_column: str = "candidate_id"


def check_ids(ids: SplitIds, *, num_requests: int, list_size: int, name: str) -> SplitIds:
  """Checks that ``ids`` align with a split of ``[num_requests, list_size]``.

  Raises:
    ValueError: naming the split and the shapes.
  """
  request, candidate = np.asarray(ids.request), np.asarray(ids.candidate)
  if request.shape != (num_requests,) or candidate.shape != (num_requests, list_size):
    raise ValueError(f"{name}: IDs of shape request {request.shape}, candidate "
                     f"{candidate.shape} do not align with the split's "
                     f"[{num_requests}, {list_size}] lists")
  return ids
