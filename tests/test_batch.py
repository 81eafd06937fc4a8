"""The batch validator names the offending field for every kind of bad input."""

import numpy as np
import pytest

from prerank_jax.batch import BatchError, validate_batch


def test_simulated_batches_are_valid(tiny_splits):
  for name, batch in tiny_splits.items():
    validate_batch(batch, name=name, require_truth=True)


@pytest.mark.parametrize("field, mutate, match", [
    ("items", lambda b: b._replace(items=b.items[..., :1, :]), r"items: expected leading shape"),
    ("context", lambda b: b._replace(context=b.context[:-1]), r"context: expected leading shape"),
    ("label", lambda b: b._replace(label=b.label[..., None]), r"label: expected 2 dimensions"),
    ("valid", lambda b: b._replace(valid=b.valid.astype(np.int32)), r"valid: must be a bool"),
    ("label", lambda b: b._replace(label=b.label.astype(np.int32)), r"label: must be a float"),
    ("items", lambda b: b._replace(items=_poke(b.items, np.nan)), r"items: must be finite"),
    ("cross", lambda b: b._replace(cross=_poke(b.cross, np.inf)), r"cross: must be finite"),
    ("teacher_scores", lambda b: b._replace(teacher_scores=_poke(
        np.zeros(b.label.shape + (2,), np.float32), np.nan)), r"teacher_scores: must be finite"),
    ("valid", lambda b: b._replace(valid=_empty_first(b.valid), exposed=_empty_first(b.exposed)),
     r"valid: every list needs at least 1 valid candidate.*request 0"),
    ("exposed", lambda b: b._replace(exposed=~b.valid | b.exposed), r"exposed: .*must be valid"),
    ("label", lambda b: b._replace(label=b.label - 1), r"label: labels must be >= 0"),
])
def test_bad_input_names_the_field(tiny_splits, field, mutate, match):
  with pytest.raises(BatchError, match=match):
    validate_batch(mutate(tiny_splits["train"]), name="train")


def test_missing_required_teacher_is_named(tiny_splits):
  with pytest.raises(BatchError, match="train.teacher_scores: required"):
    validate_batch(tiny_splits["train"], name="train", require_teacher=True)


def _poke(x, value):
  x = np.array(x, copy=True)
  x.flat[3] = value
  return x


def _empty_first(mask):
  mask = np.array(mask, copy=True)
  mask[0] = False
  return mask
