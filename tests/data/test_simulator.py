"""Tests of the cascade simulator: determinism, schema, cascade invariants, validation."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from prerank_jax.batch import validate_batch
from prerank_jax.data.simulator import (PRESETS, SimulatorConfigError, simulate,
                                        validate_simulator_params)


def _params(**overrides) -> dict:
  return {**PRESETS["tiny"], **overrides}


@pytest.fixture(scope="module")
def tiny() -> dict:
  return simulate(PRESETS["tiny"], seed=0)


def test_same_seed_same_arrays_different_seed_differs():
  a, b, c = (simulate(PRESETS["tiny"], seed=s) for s in (3, 3, 4))
  for split in ("train", "valid", "test"):
    for fa, fb in zip(a[split], b[split]):
      if fa is None:
        assert fb is None
      else:
        np.testing.assert_array_equal(fa, fb)
  assert not np.array_equal(a["train"].context, c["train"].context)
  assert not np.array_equal(a["train"].items, c["train"].items)


def test_splits_are_different_requests(tiny):
  assert not np.array_equal(tiny["valid"].context, tiny["test"].context)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
  checked = validate_simulator_params(PRESETS[name])
  assert checked == PRESETS[name]


def test_configdict_params_accepted():
  out = simulate(ml_collections.ConfigDict(PRESETS["tiny"]), seed=0)
  expected = simulate(PRESETS["tiny"], seed=0)["train"].label
  np.testing.assert_array_equal(out["train"].label, expected)


def test_batches_follow_schema(tiny):
  p = PRESETS["tiny"]
  sizes = {"train": p["num_requests"], "valid": p["num_eval_requests"],
           "test": p["num_eval_requests"]}
  assert set(tiny) == set(sizes)
  for split, batch in tiny.items():
    validate_batch(batch, name=split, require_truth=True)
    r, n = sizes[split], p["list_size"]
    assert batch.context.shape == (r, p["context_features"])
    assert batch.items.shape == (r, n, p["item_features"])
    assert batch.cross.shape == (r, n, p["cross_features"])
    assert batch.teacher_scores is None
    for field in ("context", "items", "cross", "label", "true_relevance", "propensity"):
      assert getattr(batch, field).dtype == np.float32, field
    assert batch.exposed.dtype == np.bool_ and batch.valid.dtype == np.bool_


def test_cascade_invariants(tiny):
  p = PRESETS["tiny"]
  e, eta = p["num_exposed"], p["position_bias"]
  for batch in tiny.values():
    lengths = batch.valid.sum(axis=1)
    assert lengths.min() >= p["min_list_size"] and lengths.max() <= p["list_size"]
    assert len(np.unique(lengths)) > 1  # lengths really vary
    assert (batch.exposed.sum(axis=1) == e).all()
    assert not (batch.exposed & ~batch.valid).any()
    assert (batch.label[~batch.exposed] == 0).all()
    assert set(np.unique(batch.label)) <= {0.0, 1.0}  # label_grades=2: clicks
    truth = batch.true_relevance[batch.valid]
    assert set(np.unique(truth)) <= set(range(p["relevance_grades"]))
    # Each list exposes exactly one candidate per position 1..E with propensity (1/p)^eta.
    expected = np.sort((1.0 / np.arange(1, e + 1)) ** eta)
    got = np.sort(batch.propensity.reshape(-1, p["list_size"])[batch.exposed].reshape(-1, e), 1)
    np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6)
    assert (batch.propensity[~batch.exposed] == 1.0).all()


def test_padding_is_zero(tiny):
  for batch in tiny.values():
    pad = ~batch.valid
    assert pad.any()
    assert (batch.items[pad] == 0).all() and (batch.cross[pad] == 0).all()
    assert (batch.label[pad] == 0).all() and (batch.true_relevance[pad] == 0).all()
    assert not batch.exposed[pad].any()


def test_graded_labels_and_no_position_bias():
  batch = simulate(_params(label_grades=5, position_bias=0.0), seed=1)["train"]
  assert set(np.unique(batch.label)) <= {0.0, 1.0, 2.0, 3.0, 4.0}
  assert (batch.label[batch.exposed] > 1).any()
  assert (batch.propensity == 1.0).all()


def test_logging_policy_is_informative():
  batch = simulate(_params(num_requests=400), seed=2)["train"]
  assert batch.true_relevance[batch.exposed].mean() > batch.true_relevance[batch.valid].mean()
  # Clicks follow relevance: clicked candidates are more relevant than unclicked exposed ones.
  clicked = batch.exposed & (batch.label > 0)
  unclicked = batch.exposed & (batch.label == 0)
  assert batch.true_relevance[clicked].mean() > batch.true_relevance[unclicked].mean()


def _r2(features: np.ndarray, target: np.ndarray) -> float:
  x = np.concatenate([features, np.ones((len(features), 1))], axis=1).astype(np.float64)
  coef, *_ = np.linalg.lstsq(x, target, rcond=None)
  resid = target - x @ coef
  return 1.0 - resid.var() / target.var()


def test_cross_features_carry_the_interaction():
  batch = simulate(_params(num_requests=400), seed=3)["train"]
  valid = batch.valid
  target = batch.true_relevance[valid].astype(np.float64)
  context = np.repeat(batch.context[:, None, :], batch.list_size, axis=1)
  student = np.concatenate([context, batch.items], axis=-1)[valid]
  teacher = np.concatenate([batch.cross, batch.items], axis=-1)[valid]
  # A linear model on the student's view cannot form u·v; the cross features expose it.
  assert _r2(teacher, target) > _r2(student, target) + 0.1


@pytest.mark.parametrize("overrides, knob", [
    (dict(num_exposed=50), "num_exposed"),
    (dict(min_list_size=30), "min_list_size"),
    (dict(feature_noise=-0.1), "feature_noise"),
    (dict(logging_noise=float("nan")), "logging_noise"),
    (dict(position_bias=-1.0), "position_bias"),
    (dict(label_grades=1), "label_grades"),
    (dict(relevance_grades=1), "relevance_grades"),
    (dict(retrieval_pool=0), "retrieval_pool"),
    (dict(num_requests=0), "num_requests"),
    (dict(list_size=True), "list_size"),
    (dict(num_users=10.0), "num_users"),
    (dict(cross_noise="0.1"), "cross_noise"),
])
def test_bad_knobs_raise_naming_the_knob(overrides, knob):
  with pytest.raises(SimulatorConfigError, match=rf"^data\.{knob}: must be"):
    validate_simulator_params(_params(**overrides))
  with pytest.raises(SimulatorConfigError, match=knob):
    simulate(_params(**overrides), seed=0)


def test_error_message_states_range():
  with pytest.raises(SimulatorConfigError) as info:
    validate_simulator_params(_params(num_exposed=50), prefix="cfg.data")
  assert str(info.value) == ("cfg.data.num_exposed: must be an int in [1, min_list_size=12], "
                             "got 50")


def test_unknown_and_missing_knobs_raise():
  with pytest.raises(SimulatorConfigError, match="unknown.*num_itemz.*num_items"):
    validate_simulator_params(_params(num_itemz=3))
  params = _params()
  del params["latent_dim"]
  with pytest.raises(SimulatorConfigError, match=r"data\.latent_dim: missing"):
    validate_simulator_params(params)


def test_numpy_ints_accepted():
  checked = validate_simulator_params(_params(num_requests=np.int64(8)))
  assert checked["num_requests"] == 8 and type(checked["num_requests"]) is int
