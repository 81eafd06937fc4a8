"""The batch schema: one pytree for a batch of candidate lists.

Every part of prerank-jax (simulator, loaders, models, losses, metrics) speaks this
schema. Shapes use ``R`` requests (lists), ``N`` candidates per list (the list axis,
always last for scores and labels) and ``M`` teachers.

===================  ===============  =======  ==========================================
field                shape            dtype    meaning
===================  ===============  =======  ==========================================
``context``          ``[R, Fc]``      float    request/user features (cheap; student sees)
``items``            ``[R, N, Fi]``   float    candidate features (cheap; student sees)
``cross``            ``[R, N, Fx]``   float    interaction features (teacher only)
``label``            ``[R, N]``       float    graded label; 0 where not ``exposed``
``exposed``          ``[R, N]``       bool     the label was observed (shown by the cascade)
``valid``            ``[R, N]``       bool     a real candidate, not padding
``true_relevance``   ``[R, N]``       float    optional; graded truth (simulator only)
``propensity``       ``[R, N]``       float    optional; examination propensity in (0, 1]
``teacher_scores``   ``[R, N, M]``    float    optional; logits of M frozen teachers
``exposure_``        ``[R, N]``       float    optional; probability in [0, 1] that the
``propensity``                                 logging policy exposes the candidate (its
                                               selection propensity); 1 on padding
``context_ids``      ``[R, Cc]``      int32    optional; request-side categorical IDs
                                               (user, device, ...)
``item_ids``         ``[R, N, Ci]``   int32    optional; candidate-side categorical IDs
                                               (item, author, category, ...); 0 on padding
``sequence_ids``     ``[R, L, Cs]``   int32    optional; the user's behaviour sequence,
                                               column j an ID of item field j (Cs <= Ci)
``sequence_mask``    ``[R, L]``       bool     with ``sequence_ids``: a real behaviour
                                               slot, not padding
``teacher_mask``     ``[R, N, M]``    bool     optional; teacher m scored candidate n (a
                                               logged ranker's missing scores are False,
                                               their ``teacher_scores`` a finite filler
                                               no term reads); None = all present
===================  ===============  =======  ==========================================

Categorical IDs index embedding tables. Row 0 of every table is reserved: it is the
padding ID and the out-of-vocabulary ID, so a real ID lies in ``[1, vocab)``. The vocabulary
sizes (rows, reserved row included) are a static :class:`IdVocab`; behaviour column ``j``
shares the table of item field ``j`` (an item clicked earlier and a candidate item are the
same kind of ID). Unbounded IDs (strings, 64-bit keys) go through :func:`hash_ids`, a stable
FNV-1a hash into ``hash_buckets`` rows, the same on every host and Python process.

Padding is always masked: ``exposed`` implies ``valid``. :func:`validate_batch` checks all
of this on the host before any compiled work starts and raises :class:`BatchError` naming
the field.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

Array = np.ndarray  # host arrays; jax arrays are accepted too.


class Batch(NamedTuple):
  """A batch of candidate lists; see the module docstring for the schema."""

  context: Array
  items: Array
  cross: Array
  label: Array
  exposed: Array
  valid: Array
  true_relevance: Optional[Array] = None
  propensity: Optional[Array] = None
  teacher_scores: Optional[Array] = None
  exposure_propensity: Optional[Array] = None
  context_ids: Optional[Array] = None
  item_ids: Optional[Array] = None
  sequence_ids: Optional[Array] = None
  sequence_mask: Optional[Array] = None
  teacher_mask: Optional[Array] = None

  @property
  def num_requests(self) -> int:
    return int(self.valid.shape[0])

  @property
  def list_size(self) -> int:
    return int(self.valid.shape[-1])

  def take(self, index) -> "Batch":
    """Selects requests (leading axis) from every field; ``None`` stays ``None``."""
    return Batch(*(None if f is None else f[index] for f in self))


class BatchError(ValueError):
  """A batch violates the schema; the message names the offending field."""


# ID groups: Batch field -> the key of its column count in feature_sizes.
ID_GROUPS = {"context_ids": "context_ids", "item_ids": "item_ids",
             "sequence_ids": "sequence_ids"}


def feature_sizes(batch: Batch) -> dict[str, int]:
  """Returns ``{"context": Fc, "items": Fi, "cross": Fx}`` of a batch, plus
  ``"context_ids": Cc``, ``"item_ids": Ci``, ``"sequence_ids": Cs`` and
  ``"sequence_length": L`` for the ID fields the batch has (absent ones are left out, so a
  float-only batch gives the three float groups only)."""
  sizes = {
      "context": int(batch.context.shape[-1]),
      "items": int(batch.items.shape[-1]),
      "cross": int(batch.cross.shape[-1]),
  }
  for field, key in ID_GROUPS.items():
    value = getattr(batch, field)
    if value is not None:
      sizes[key] = int(value.shape[-1])
  if batch.sequence_ids is not None:
    sizes["sequence_length"] = int(batch.sequence_ids.shape[-2])
  return sizes


class IdVocab(NamedTuple):
  """Static vocabulary sizes of the categorical ID columns (rows of each embedding table,
  the reserved row 0 included, so real IDs lie in ``[1, size)``).

  Attributes:
    context: one size per ``context_ids`` column, ``[Cc]``.
    items: one size per ``item_ids`` column, ``[Ci]``; ``sequence_ids`` column ``j`` uses
      ``items[j]`` (behaviour and candidates share item tables).
  """

  context: tuple[int, ...] = ()
  items: tuple[int, ...] = ()


_FNV_OFFSET, _FNV_PRIME, _MASK64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
  """The 64-bit FNV-1a hash of ``data`` (Fowler, Noll, Vo; IETF draft-eastlake-fnv).

  Definition: ``h = 14695981039346656037``; for each byte ``b``: ``h = (h XOR b) ·
  1099511628211 mod 2^64``. Unlike Python's ``hash()`` it is not salted per process, so
  every host and run maps an ID to the same value.

  >>> fnv1a_64(b"")
  14695981039346656037
  >>> fnv1a_64(b"a")
  12638187200555641996
  """
  h = _FNV_OFFSET
  for byte in data:
    h = ((h ^ byte) * _FNV_PRIME) & _MASK64
  return h


def hash_ids(values: Array, hash_buckets: int) -> np.ndarray:
  """Maps unbounded IDs (strings, bytes or integers, any shape) to rows ``[1, hash_buckets)``.

  Definition: ``row(v) = 1 + fnv1a_64(utf8(str(v))) mod (hash_buckets − 1)`` (bytes are
  hashed as they are); ``None`` and ``""`` map to the reserved row 0 (padding / missing).
  An integer ID hashes its decimal text, so ``7`` and ``"7"`` share a row. Stable across
  hosts, processes and runs (no Python ``hash()``).

  Args:
    values: IDs of any shape ``[...]``.
    hash_buckets: rows of the embedding table, the reserved row 0 included; >= 2.

  Returns:
    ``[...]`` int32 rows.

  Raises:
    ValueError: ``hash_buckets`` out of range [2, 2^31 − 1].
  """
  if isinstance(hash_buckets, bool) or not isinstance(hash_buckets, (int, np.integer)) \
      or not 2 <= hash_buckets <= 2**31 - 1:
    raise ValueError(f"hash_buckets: must be an int in [2, 2147483647], got {hash_buckets!r}")
  values = np.asarray(values, dtype=object)
  flat = values.reshape(-1)
  rows = np.zeros(len(flat), np.int32)
  table = {}
  for i, v in enumerate(flat):
    if v is None or (isinstance(v, (str, bytes)) and len(v) == 0):
      continue
    key = v if isinstance(v, bytes) else str(v).encode("utf-8")
    if key not in table:
      table[key] = 1 + fnv1a_64(key) % (int(hash_buckets) - 1)
    rows[i] = table[key]
  return rows.reshape(values.shape)


def _check(cond: bool, field: str, message: str, where: str) -> None:
  if not cond:
    raise BatchError(f"{where}.{field}: {message}")


def validate_batch(
    batch: Batch,
    *,
    name: str = "batch",
    require_teacher: bool = False,
    require_truth: bool = False,
    vocab: Optional[IdVocab] = None,
) -> Batch:
  """Checks shapes, dtypes, finiteness and mask consistency of a batch on the host.

  Args:
    batch: the batch to check.
    name: prefix used in error messages, e.g. ``"train"``.
    require_teacher: ``teacher_scores`` must be present.
    require_truth: ``true_relevance`` must be present.
    vocab: vocabulary sizes of the ID columns; if given, every ID must lie in
      ``[0, size)`` of its column (and the batch's ID columns must match it in number).
      Without it, IDs are only checked to be ``>= 0``.

  Returns:
    The batch, unchanged, so calls can be chained.

  Raises:
    BatchError: naming the field, what was expected and what was found.
  """
  if not isinstance(batch, Batch):
    raise BatchError(f"{name}: expected a prerank_jax.Batch, got {type(batch).__name__}")
  arrays = {k: (None if v is None else np.asarray(v)) for k, v in batch._asdict().items()}
  valid = arrays["valid"]
  _check(valid.ndim == 2, "valid", f"expected shape [R, N], got {valid.shape}", name)
  num_requests, list_size = valid.shape
  _check(num_requests >= 1, "valid", "expected at least 1 request (R >= 1), got R=0", name)
  _check(list_size >= 1, "valid", "expected list size N >= 1, got N=0", name)

  expected_ndim = {"context": 2, "items": 3, "cross": 3, "label": 2, "exposed": 2,
                   "valid": 2, "true_relevance": 2, "propensity": 2, "teacher_scores": 3,
                   "exposure_propensity": 2, "teacher_mask": 3}
  for field, ndim in expected_ndim.items():
    value = arrays[field]
    if value is None:
      if field == "teacher_scores" and require_teacher:
        raise BatchError(f"{name}.teacher_scores: required here, but it is None "
                         "(score the data with the teacher first)")
      if field == "true_relevance" and require_truth:
        raise BatchError(f"{name}.true_relevance: required here, but it is None")
      _check(field in ("true_relevance", "propensity", "teacher_scores",
                       "exposure_propensity", "teacher_mask"), field,
             "is required and may not be None", name)
      continue
    _check(value.ndim == ndim, field,
           f"expected {ndim} dimensions, got shape {value.shape}", name)
    lead = (num_requests,) if field == "context" else (num_requests, list_size)
    _check(value.shape[:len(lead)] == lead, field,
           f"expected leading shape {lead} (R={num_requests}, N={list_size}), "
           f"got {value.shape}", name)
    if field in ("exposed", "valid", "teacher_mask"):
      _check(value.dtype == np.bool_, field, f"must be a bool mask, got dtype {value.dtype}",
             name)
    else:
      _check(np.issubdtype(value.dtype, np.floating), field,
             f"must be a float array, got dtype {value.dtype}", name)
      bad = ~np.isfinite(value)
      if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise BatchError(f"{name}.{field}: must be finite (no NaN/inf); found "
                         f"{int(bad.sum())} non-finite values, the first at index {first}")
  _check(arrays["items"].shape[-1] >= 1, "items", "need at least 1 item feature (Fi >= 1)",
         name)
  empty = ~valid.any(axis=-1)
  if empty.any():
    raise BatchError(f"{name}.valid: every list needs at least 1 valid candidate; "
                     f"{int(empty.sum())} lists have none, the first is request "
                     f"{int(np.argmax(empty))}")
  _check(not (arrays["exposed"] & ~valid).any(), "exposed",
         "exposed candidates must be valid (padding is never exposed)", name)
  _check(bool((arrays["label"] >= 0).all()), "label", "labels must be >= 0", name)
  if arrays["propensity"] is not None:
    p = arrays["propensity"][arrays["exposed"]]
    _check(bool(((p > 0) & (p <= 1)).all()), "propensity",
           "propensities of exposed candidates must lie in (0, 1]", name)
  if arrays["exposure_propensity"] is not None:
    p = arrays["exposure_propensity"][valid]
    _check(bool(((p >= 0) & (p <= 1)).all()), "exposure_propensity",
           "exposure propensities of valid candidates must lie in [0, 1]", name)
  if arrays["teacher_scores"] is not None:
    _check(arrays["teacher_scores"].shape[-1] >= 1, "teacher_scores",
           "need at least 1 teacher (M >= 1)", name)
  if arrays["teacher_mask"] is not None:
    scores = arrays["teacher_scores"]
    _check(scores is not None and scores.shape == arrays["teacher_mask"].shape,
           "teacher_mask", "must have the shape [R, N, M] of teacher_scores, got "
           f"{arrays['teacher_mask'].shape} and "
           f"{None if scores is None else scores.shape}", name)
  _validate_ids(arrays, valid, name, vocab)
  return batch


def _validate_ids(arrays: dict, valid: np.ndarray, name: str,
                  vocab: Optional[IdVocab]) -> None:
  """The ID fields of :func:`validate_batch`: dtype int32, shapes, ranges, padding at 0."""
  num_requests, list_size = valid.shape
  ids, mask = arrays["sequence_ids"], arrays["sequence_mask"]
  _check((ids is None) == (mask is None), "sequence_mask" if ids is not None else
         "sequence_ids", "sequence_ids and sequence_mask come together (both or neither)",
         name)
  layout = {"context_ids": (2, (num_requests,), "[R, Cc]"),
            "item_ids": (3, (num_requests, list_size), "[R, N, Ci]"),
            "sequence_ids": (3, (num_requests,), "[R, L, Cs]")}
  for field, (ndim, lead, text) in layout.items():
    value = arrays[field]
    if value is None:
      continue
    _check(value.ndim == ndim and value.shape[:len(lead)] == lead, field,
           f"expected shape {text} with R={num_requests}"
           + (f", N={list_size}" if len(lead) == 2 else "") + f", got {value.shape}", name)
    _check(value.dtype == np.int32, field, f"must be an int32 array, got dtype {value.dtype}",
           name)
    _check(value.shape[-1] >= 1, field, "need at least 1 ID column", name)
    if (value < 0).any():
      first = tuple(int(i) for i in np.argwhere(value < 0)[0])
      raise BatchError(f"{name}.{field}: IDs must be >= 0 (0 is the reserved padding/OOV "
                       f"row); found {int((value < 0).sum())} negative, the first at {first}")
  if mask is not None:
    _check(mask.dtype == np.bool_, "sequence_mask",
           f"must be a bool mask, got dtype {mask.dtype}", name)
    _check(mask.shape == ids.shape[:2], "sequence_mask",
           f"expected shape [R, L] = {ids.shape[:2]}, got {mask.shape}", name)
    _check(not ids[~mask].any(), "sequence_ids",
           "padding behaviour slots (sequence_mask False) must hold the reserved ID 0", name)
  if arrays["item_ids"] is not None:
    _check(not arrays["item_ids"][~valid].any(), "item_ids",
           "padding candidates (valid False) must hold the reserved ID 0", name)
  if ids is not None and arrays["item_ids"] is not None:
    _check(ids.shape[-1] <= arrays["item_ids"].shape[-1], "sequence_ids",
           f"behaviour column j shares item field j's table, so Cs <= Ci "
           f"({arrays['item_ids'].shape[-1]}); got Cs={ids.shape[-1]}", name)
  if vocab is None:
    return
  sizes = {"context_ids": tuple(vocab.context), "item_ids": tuple(vocab.items),
           "sequence_ids": tuple(vocab.items)}
  for field, size in sizes.items():
    value = arrays[field]
    if value is None:
      continue
    columns = value.shape[-1]
    if field == "sequence_ids":
      _check(columns <= len(size), field, f"has {columns} columns, but the vocabulary has "
             f"only {len(size)} item tables to share", name)
    else:
      _check(columns == len(size), field, f"has {columns} ID columns, but the vocabulary "
             f"gives {len(size)} sizes {size}", name)
    for j in range(columns):
      column = value[..., j]
      if column.size and int(column.max()) >= size[j]:
        first = tuple(int(i) for i in np.argwhere(column >= size[j])[0])
        raise BatchError(f"{name}.{field}[..., {j}]: IDs must lie in [0, {size[j] - 1}] "
                         f"(vocabulary size {size[j]}, row 0 reserved); found "
                         f"{int(column.max())}, the first at {first} (map unseen IDs to 0 "
                         "or use hash_ids)")
