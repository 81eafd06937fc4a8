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
===================  ===============  =======  ==========================================

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


def feature_sizes(batch: Batch) -> dict[str, int]:
  """Returns ``{"context": Fc, "items": Fi, "cross": Fx}`` of a batch."""
  return {
      "context": int(batch.context.shape[-1]),
      "items": int(batch.items.shape[-1]),
      "cross": int(batch.cross.shape[-1]),
  }


def _check(cond: bool, field: str, message: str, where: str) -> None:
  if not cond:
    raise BatchError(f"{where}.{field}: {message}")


def validate_batch(
    batch: Batch,
    *,
    name: str = "batch",
    require_teacher: bool = False,
    require_truth: bool = False,
) -> Batch:
  """Checks shapes, dtypes, finiteness and mask consistency of a batch on the host.

  Args:
    batch: the batch to check.
    name: prefix used in error messages, e.g. ``"train"``.
    require_teacher: ``teacher_scores`` must be present.
    require_truth: ``true_relevance`` must be present.

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
                   "exposure_propensity": 2}
  for field, ndim in expected_ndim.items():
    value = arrays[field]
    if value is None:
      if field == "teacher_scores" and require_teacher:
        raise BatchError(f"{name}.teacher_scores: required here, but it is None "
                         "(score the data with the teacher first)")
      if field == "true_relevance" and require_truth:
        raise BatchError(f"{name}.true_relevance: required here, but it is None")
      _check(field in ("true_relevance", "propensity", "teacher_scores",
                       "exposure_propensity"), field,
             "is required and may not be None", name)
      continue
    _check(value.ndim == ndim, field,
           f"expected {ndim} dimensions, got shape {value.shape}", name)
    lead = (num_requests,) if field == "context" else (num_requests, list_size)
    _check(value.shape[:len(lead)] == lead, field,
           f"expected leading shape {lead} (R={num_requests}, N={list_size}), "
           f"got {value.shape}", name)
    if field in ("exposed", "valid"):
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
  return batch
