"""One hash for every identity: prepared datasets' config names (10 hex digits) and run and
teacher identities (16) keep the values the two former copies gave, so datasets prepared
and runs made before the merge are still found."""

import numpy as np

from prerank_jax.data.tfds_base import pad_rows
from prerank_jax.fingerprint import fingerprint


def test_fingerprint_keeps_the_former_values():
  # Values of the former tfds_base.short_hash and rundir.fingerprint (commit ba42a83).
  params = {"params": {"num_requests": 200, "list_size": 20}, "seed": 3}
  assert fingerprint(params, length=10) == "bfdc4ff759"
  assert fingerprint(["100k", {"list_size": 30, "history_fraction": 0.5}],
                     length=10) == "bdfe30afca"
  assert fingerprint(params) == "bfdc4ff7592dad0d"
  assert fingerprint("/runs/x") == "5c1768dc80cd05b3"


def test_fingerprint_ignores_key_order_and_sees_values():
  assert fingerprint({"a": 1, "b": (2, 3)}) == fingerprint({"b": [2, 3], "a": 1})
  assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_pad_rows_appends_zero_rows_of_the_same_dtype():
  x = np.arange(6, dtype=np.int32).reshape(3, 2)
  out = pad_rows(x, 5)
  assert out.shape == (5, 2) and out.dtype == np.int32
  np.testing.assert_array_equal(out[:3], x)
  assert not out[3:].any()
  np.testing.assert_array_equal(pad_rows(np.array([True, False]), 4), [True, False, False, False])
