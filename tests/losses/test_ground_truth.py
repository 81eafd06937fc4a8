"""Ground-truth extras: graded softmax CE, grade/IPW weighting, unexposed negatives."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import rax
from jax.test_util import check_grads

from prerank_jax import metrics
from prerank_jax.batch import Batch, feature_sizes
from prerank_jax.config import validate_config
from prerank_jax.losses import make_objective
from prerank_jax.losses.ground_truth import (extra_positives_loss, grade_weights,
                                             inverse_propensity_weights, pointwise_bce,
                                             softmax_ce)
from prerank_jax.losses.registry import GT_LOSSES, GT_WEIGHTINGS, HPARAMS, STATIC_OPTIONS
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import noisy_truth_teacher
from tests.conftest import load_config


def test_registered():
  assert {"softmax", "gt_extra_positives"} <= set(GT_LOSSES)
  assert {"grade", "reweight_examination_grade"} <= set(GT_WEIGHTINGS)
  assert GT_LOSSES["gt_extra_positives"].hparams == ("gt_negative_weight",)
  assert HPARAMS["gt_negative_weight"].contains(0.0)
  assert STATIC_OPTIONS["gt_num_negatives"].default == 10


# ---------------------------------------------------------------- softmax CE


def test_softmax_closed_form_and_lists_without_positives():
  s = jnp.array([[1.0, 0.0, -1.0, 5.0], [0.3, 0.2, 0.1, 0.0]])
  y = jnp.array([[2.0, 1.0, 0.0, 9.0], [0.0, 0.0, 0.0, 0.0]])
  where = jnp.array([[True, True, True, False], [True, True, False, False]])
  z = sum(math.exp(x) for x in (1.0, 0.0, -1.0))
  expected = -(2 / 3 * (1.0 - math.log(z)) + 1 / 3 * (0.0 - math.log(z)))
  per_list = softmax_ce(s, y, where=where, reduce_fn=None)
  np.testing.assert_allclose(per_list, [expected, 0.0], rtol=1e-6)
  # the list without a positive label is not counted in the mean
  assert float(softmax_ce(s, y, where=where)) == pytest.approx(expected, rel=1e-6)


def test_softmax_matches_rax_and_optax():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, (5, 8)), jnp.float32).at[:, 0].set(1.0)
  where = jnp.asarray(rng.random((5, 8)) < 0.7).at[:, 0].set(True)
  ours = softmax_ce(s, y, where=where)
  theirs = rax.softmax_loss(s, y, where=where, label_fn=rax.utils.normalize_probabilities)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  full = jnp.ones((5, 8), bool)
  target = y / jnp.sum(y, -1, keepdims=True)
  np.testing.assert_allclose(softmax_ce(s, y, where=full),
                             jnp.mean(optax.softmax_cross_entropy(s, target)), rtol=1e-5)


def test_softmax_weights_rescale_terms():
  s, y = jnp.array([0.0, 1.0]), jnp.array([1.0, 1.0])
  w = jnp.array([2.0, 0.5])
  where = jnp.array([True, True])
  log_q = [0.0 - math.log(1 + math.e), 1.0 - math.log(1 + math.e)]
  expected = -(2.0 * 0.5 * log_q[0] + 0.5 * 0.5 * log_q[1])
  assert float(softmax_ce(s, y, where=where, weights=w)) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- weighting


def test_grade_weights():
  y = jnp.array([0.0, 1.0, 3.0, jnp.nan])
  np.testing.assert_allclose(grade_weights(y, where=jnp.array([True, True, True, False])),
                             [1.0, 2.0, 4.0, 0.0])


def _batch(rng, propensity=True):
  r, n = 4, 7
  exposed = np.zeros((r, n), bool)
  exposed[:, :3] = True
  valid = np.ones((r, n), bool)
  valid[0, 5:] = False
  return Batch(context=jnp.zeros((r, 2)), items=jnp.zeros((r, n, 2)),
               cross=jnp.zeros((r, n, 1)),
               label=jnp.asarray(exposed * rng.integers(0, 3, (r, n)), jnp.float32),
               exposed=jnp.asarray(exposed), valid=jnp.asarray(valid),
               propensity=(jnp.asarray(np.where(exposed, rng.uniform(0.01, 1.0, (r, n)), 1.0),
                                       jnp.float32) if propensity else None),
               teacher_scores=jnp.asarray(rng.normal(size=(r, n, 1)), jnp.float32))


@pytest.mark.parametrize("gt", ["bce", "softmax"])
def test_objective_weightings_use_user_propensities_and_grades(gt):
  rng = np.random.default_rng(1)
  batch = _batch(rng)
  s = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
  observed = batch.valid & batch.exposed
  fn = GT_LOSSES[gt].fn
  hp = {"alpha": 0.0}
  clip = 0.1
  ipw = 1.0 / np.maximum(np.asarray(batch.propensity), clip) * np.asarray(observed)
  grade = (1.0 + np.asarray(batch.label)) * np.asarray(observed)
  for weighting, w in [("reweight_examination", ipw), ("grade", grade),
                       ("reweight_examination_grade", ipw * grade)]:
    objective = make_objective(kd="none", gt=gt, gt_weighting=weighting,
                               propensity_floor=clip)
    expected = fn(s, batch.label, where=observed, weights=jnp.asarray(w, jnp.float32))
    assert float(objective(s, batch, hp)) == pytest.approx(float(expected), rel=1e-5)
  unweighted = make_objective(kd="none", gt=gt)(s, batch, hp)
  assert float(unweighted) == pytest.approx(float(fn(s, batch.label, where=observed)), rel=1e-6)


def test_ipw_without_propensities_is_a_clear_error():
  batch = _batch(np.random.default_rng(2), propensity=False)
  for weighting in ("reweight_examination", "reweight_examination_grade"):
    objective = make_objective(kd="none", gt="bce", gt_weighting=weighting)
    with pytest.raises(ValueError, match=r"batch.propensity: loss.gt_weighting="):
      objective(jnp.zeros((4, 7)), batch, {"alpha": 0.0})


def test_config_accepts_new_weightings_and_gt_losses():
  for weighting in ("grade", "reweight_examination_grade"):
    config = load_config()
    config.student.loss.gt_weighting = weighting
    config.student.loss.gt = "softmax"
    validate_config(config)
  config = load_config()
  config.student.loss.gt = "gt_extra_positives"
  validate_config(config)


# ---------------------------------------------------------------- extra positives


def test_extra_positives_closed_form_all_unexposed():
  s = jnp.array([[2.0, -1.0, 0.5, 1.0, 3.0]])
  y = jnp.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
  exposed = jnp.array([[True, True, False, False, False]])
  valid = jnp.array([[True, True, True, True, False]])
  sp = lambda x: math.log1p(math.exp(x))
  lam = 0.3
  expected = (sp(-2.0) + sp(-1.0) + lam * (sp(0.5) + sp(1.0))) / 4
  got = extra_positives_loss(s, y, where=exposed & valid, valid=valid, gt_negative_weight=lam,
                             gt_num_negatives=0)
  assert float(got) == pytest.approx(expected, rel=1e-6)
  w = jnp.array([[3.0, 0.5, 0.0, 0.0, 0.0]])
  expected_w = (3.0 * sp(-2.0) + 0.5 * sp(-1.0) + lam * (sp(0.5) + sp(1.0))) / 4
  got_w = extra_positives_loss(s, y, where=exposed & valid, valid=valid, weights=w,
                               gt_negative_weight=lam, gt_num_negatives=0)
  assert float(got_w) == pytest.approx(expected_w, rel=1e-6)


def test_extra_positives_samples_the_requested_number_of_negatives():
  rng = np.random.default_rng(3)
  r, n = 6, 12
  exposed = jnp.zeros((r, n), bool).at[:, :3].set(True)
  valid = jnp.ones((r, n), bool).at[0, 6:].set(False)  # list 0: only 3 unexposed
  y = jnp.where(exposed, 1.0, 0.0)
  s = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  counts = np.zeros(n)
  for seed in range(200):
    per_item = extra_positives_loss(s, y, where=exposed & valid, valid=valid,
                                    gt_num_negatives=4, rng=jax.random.key(seed),
                                    reduce_fn=None)
    chosen = np.asarray((per_item != 0) & ~exposed)
    np.testing.assert_array_equal(chosen.sum(-1), [3, 4, 4, 4, 4, 4])
    assert not chosen[0, 6:].any()
    counts += chosen[1:].sum(0)
  freq = counts[3:] / (200 * (r - 1))  # each of 9 unexposed is picked with prob 4/9
  np.testing.assert_allclose(freq, 4 / 9, atol=0.06)
  with pytest.raises(ValueError, match="gt_num_negatives"):
    extra_positives_loss(s, y, where=exposed, valid=valid, gt_num_negatives=4, rng=None)


# ---------------------------------------------------------------- invariances


def _cases():
  return {
      "softmax": lambda s, y, where, valid: softmax_ce(s, y, where=where),
      "extra_positives": lambda s, y, where, valid: extra_positives_loss(
          s, y, where=where, valid=valid, gt_negative_weight=0.7, gt_num_negatives=0),
  }


@pytest.mark.parametrize("name", sorted(_cases()))
def test_padding_with_garbage_equals_slicing(name):
  loss = _cases()[name]
  rng = np.random.default_rng(4)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 3, (3, 6)), jnp.float32)
  exposed = jnp.asarray(rng.random((3, 6)) < 0.5).at[:, 0].set(True)
  valid = jnp.ones((3, 6), bool)
  pad = lambda x, v: jnp.concatenate([x, jnp.full((3, 3), v, x.dtype)], -1)
  f = lambda x: loss(x, y * exposed, exposed, valid)
  g = lambda x: loss(x, pad(y, jnp.nan), pad(exposed, False), pad(valid, False))
  pad_s = pad(s, jnp.nan)
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :6], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 6:] == 0)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_permutation_invariance(name):
  loss = _cases()[name]
  rng = np.random.default_rng(5)
  s = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
  y = jnp.asarray([2.0, 0.0, 1.0, 0.0, 0.0, 0.0])
  exposed = jnp.array([True, True, True, False, False, False])
  valid = jnp.array([True, True, True, True, True, False])
  perm = jnp.array([4, 2, 5, 0, 3, 1])
  a = loss(s, y, exposed, valid)
  b = loss(s[perm], y[perm], exposed[perm], valid[perm])
  assert float(a) == pytest.approx(float(b), rel=1e-6)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_all_masked_gives_zero_and_extreme_logits_finite_grads(name):
  loss = _cases()[name]
  s = jnp.array([[1e4, -1e4, 3.0, 0.0]])
  y = jnp.array([[1.0, 2.0, 0.0, 0.0]])
  none = jnp.zeros((1, 4), bool)
  f = lambda x: loss(x, y, none, none)
  assert float(f(s)) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(s)))
  exposed = jnp.array([[True, True, True, False]])
  valid = jnp.ones((1, 4), bool)
  h = lambda x: loss(x, y, exposed, valid)
  assert np.isfinite(float(h(s)))
  assert np.all(np.isfinite(jax.grad(h)(s)))


@pytest.mark.parametrize("name", sorted(_cases()))
def test_check_grads(name):
  loss = _cases()[name]
  s = jnp.array([[0.3, -0.2, 1.1, 0.5, -0.7]])
  y = jnp.array([[1.0, 0.0, 2.0, 0.0, 0.0]])
  exposed = jnp.array([[True, True, True, False, False]])
  valid = jnp.ones((1, 5), bool)
  check_grads(lambda x: loss(x, y, exposed, valid), (s,), order=1, modes=["rev"],
              atol=1e-2, rtol=1e-2)


# ---------------------------------------------------------------- training


def _ndcg_true(scores, batch):
  return np.asarray(jax.vmap(lambda x: metrics.mean_over_lists(
      metrics.ndcg_at_k(x, batch.true_relevance, where=batch.valid, k=10),
      where=metrics.has_relevant(batch.true_relevance, where=batch.valid)))(scores))


@pytest.mark.parametrize("gt, axes", [
    ("softmax", {"learning_rate": (3e-3, 1e-2)}),
    ("gt_extra_positives", {"gt_negative_weight": (0.3, 1.0), "learning_rate": (1e-2,)}),
])
def test_gt_loss_trains_a_student(tiny_splits, gt, axes):
  config = load_config()
  config.student.loss.gt = gt
  config.student.num_epochs = 20
  data = noisy_truth_teacher(tiny_splits, noise=0.5)
  train, valid = data["train"], data["valid"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  compiled = compile_sweep(trainer)
  hp, rngs = stack_points(grid_points({"alpha": (0.0,), **axes}, seed=0))
  before = _ndcg_true(compiled.apply(compiled.init(hp, rngs).params, valid), valid)
  state, hist = compiled.train(hp, rngs, SweepData(train, valid))
  loss = np.asarray(hist["loss"])
  assert np.all(np.isfinite(loss)) and not np.any(np.asarray(state.diverged))
  assert np.all(loss[:, -3:].mean(1) < loss[:, :3].mean(1)), loss
  after = _ndcg_true(compiled.apply(state.params, valid), valid)
  print(gt, "loss first/last epoch", loss[:, 0], loss[:, -1], "ndcg@10 true", before, after)
  assert np.all(after > before), (before, after)


def test_extra_positives_sum_per_list_is_rank_distillations_scale():
  """``gt_list_reduction="sum_per_list"`` against a NumPy transcription of the released
  Ranking Distillation ``sigmoid_log_loss``: per instance, −Σ log σ(positives) − Σ log(1 −
  σ(negatives)); then the mean over instances."""
  s = np.array([[0.4, -1.2, 2.0, 0.1, -0.3], [1.5, 0.2, -0.7, 0.9, 0.0]], np.float32)
  y = np.array([[1.0, 0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0, 0.0]], np.float32)
  exposed = np.array([[True, True, False, False, False], [True, True, True, False, False]])
  valid = np.array([[True, True, True, True, False], [True, True, True, True, True]])
  got = extra_positives_loss(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(exposed),
                             valid=jnp.asarray(valid), gt_num_negatives=0,
                             gt_list_reduction="sum_per_list")
  per_instance = []
  for i in range(2):
    pos = exposed[i] & (y[i] > 0)
    neg = valid[i] & ~pos
    loss1 = -np.log(1 / (1 + np.exp(-s[i][pos].astype(np.float64))))
    loss0 = -np.log(1 - 1 / (1 + np.exp(-s[i][neg].astype(np.float64))))
    per_instance.append(np.sum(np.concatenate([loss1, loss0])))
  assert float(got) == pytest.approx(np.mean(per_instance), rel=1e-6)
  mean = extra_positives_loss(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(exposed),
                              valid=jnp.asarray(valid), gt_num_negatives=0)
  assert float(mean) == pytest.approx(np.sum(per_instance) / valid.sum(), rel=1e-6)
  with pytest.raises(ValueError, match="loss.options.gt_list_reduction"):
    extra_positives_loss(jnp.asarray(s), jnp.asarray(y), where=jnp.asarray(exposed),
                         valid=jnp.asarray(valid), gt_num_negatives=0,
                         gt_list_reduction="sum")
