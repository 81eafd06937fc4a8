"""Cost accounting: XLA's FLOPs match the hand-computed structure; cached two-tower is cheap;
latency measurement runs (no timing thresholds: timings belong in benchmarks/)."""

import math

import jax
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes, validate_batch
from prerank_jax.models import build_model, param_count
from prerank_jax.models.cost import (flops_per_candidate, measure_scoring, model_costs,
                                     request_batch)

# XLA may fuse or simplify a few elementwise ops (e.g. a width-1 dot becomes a multiply),
# so counts are compared to the hand formula with a 2% relative tolerance.
REL = 0.02


def _one_layer_mlp_flops(inputs: int, h: int) -> int:
  """Hand count per candidate: 2·in·h (matmul) + h (bias) + h (ReLU) + 2·h + 1 (head)."""
  return 2 * inputs * h + h + h + 2 * h + 1


def test_teacher_student_flops_ratio_matches_the_hand_computed_structure(tiny_splits):
  batch = tiny_splits["valid"]
  sizes = feature_sizes(batch)
  student = build_model("mlp_student", feature_sizes=sizes, hidden=(8,))
  teacher = build_model("mlp_teacher", feature_sizes=sizes, hidden=(64,))
  f_s = flops_per_candidate(student, student.init(jax.random.key(0)), batch)
  f_t = flops_per_candidate(teacher, teacher.init(jax.random.key(0)), batch)
  expect_s = _one_layer_mlp_flops(sizes["context"] + sizes["items"], 8)
  expect_t = _one_layer_mlp_flops(sizes["context"] + sizes["items"] + sizes["cross"], 64)
  assert f_s == pytest.approx(expect_s, rel=REL)
  assert f_t == pytest.approx(expect_t, rel=REL)
  assert f_t / f_s == pytest.approx(expect_t / expect_s, rel=2 * REL)


def test_linear_and_feature_subset_costs(tiny_splits):
  batch = tiny_splits["valid"]
  sizes = feature_sizes(batch)
  full = build_model("linear", feature_sizes=sizes)
  few = build_model("linear", feature_sizes=sizes, item_features=(0,), context_features=(1,))
  p_full, p_few = full.init(jax.random.key(0)), few.init(jax.random.key(0))
  assert param_count(p_full) == sizes["context"] + sizes["items"] + 1
  assert param_count(p_few) == 3
  # 2F (multiply-adds) + 1 (bias) per candidate; fewer features cost less.
  assert flops_per_candidate(full, p_full, batch) == pytest.approx(
      2 * (sizes["context"] + sizes["items"]) + 1, rel=REL)
  assert flops_per_candidate(few, p_few, batch) < flops_per_candidate(full, p_full, batch)


def test_cached_two_tower_costs_a_dot_product_per_candidate():
  sizes = {"context": 6, "items": 5, "cross": 3}
  d, n = 8, 500
  batch = request_batch(sizes, n, num_requests=2)
  validate_batch(batch, require_truth=True)
  model = build_model("two_tower", feature_sizes=sizes, embed_dim=d, tower_hidden=(16,))
  params = model.init(jax.random.key(0))
  full = flops_per_candidate(model, params, batch)
  cached = flops_per_candidate(model, params, batch, cached=True)
  # Cached: the dot product (2D per candidate) plus the context tower once per request.
  context_tower = 2 * sizes["context"] * 16 + 16 + 16 + 2 * 16 * d + d  # dense, ReLU, dense
  assert cached == pytest.approx(2 * d + context_tower / n, rel=0.05)
  # Full: the item tower runs for every candidate on top of that.
  assert full > cached + 2 * sizes["items"] * 16
  costs = model_costs(model, params, batch, cached=True)
  assert costs == {"params": param_count(params), "flops_per_candidate": cached}


def test_measure_scoring_reports_positive_latency_and_throughput():
  sizes = {"context": 3, "items": 4, "cross": 2}
  for name, cached in (("mlp_student", False), ("two_tower", True), ("oracle", False)):
    model = build_model(name, feature_sizes=sizes, hidden=(4,), embed_dim=4, tower_hidden=())
    out = measure_scoring(model, model.init(jax.random.key(0)), 100, cached=cached,
                          repeats=3, min_seconds=0.0)
    assert out["latency_s"] > 0 and math.isfinite(out["latency_s"])
    assert out["candidates_per_s"] == pytest.approx(100 / out["latency_s"])
  with pytest.raises(ValueError, match="no cached scoring path"):
    measure_scoring(model, model.init(jax.random.key(0)), 10, cached=True, repeats=1,
                    min_seconds=0.0)


def test_request_batch_is_valid_and_seeded():
  sizes = {"context": 2, "items": 3, "cross": 4}
  a, b = request_batch(sizes, 7, seed=1), request_batch(sizes, 7, seed=1)
  validate_batch(a, require_truth=True)
  assert a.items.shape == (1, 7, 3) and a.cross.shape == (1, 7, 4)
  np.testing.assert_array_equal(a.items, b.items)
