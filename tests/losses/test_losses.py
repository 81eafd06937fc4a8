"""Closed-form values and invariances of the foundation losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prerank_jax.batch import Batch
from prerank_jax.losses import (hinton_listwise_kd, hinton_pointwise_kd,
                                inverse_propensity_weights, logit_mse, make_objective,
                                pointwise_bce)

ALL = jnp.array([True, True])


def _softmax(xs):
  e = [math.exp(x) for x in xs]
  return [x / sum(e) for x in e]


def test_listwise_kd_closed_form():
  s, t, T = [0.0, 1.0], [2.0, 0.0], 2.0
  p, q = _softmax([x / T for x in t]), _softmax([x / T for x in s])
  expected = T**2 * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
  got = hinton_listwise_kd(jnp.array(s), jnp.array(t), where=ALL, temperature=T)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_listwise_kd_t_squared_scaling_and_optax_cross_check():
  rng = np.random.default_rng(0)
  s, t = jnp.asarray(rng.normal(size=(4, 7))), jnp.asarray(rng.normal(size=(4, 7)))
  where = jnp.ones((4, 7), bool)
  for T in (0.5, 1.0, 3.0):
    kl = optax.losses.kl_divergence(jax.nn.log_softmax(s / T), jax.nn.softmax(t / T))
    got = hinton_listwise_kd(s, t, where=where, temperature=T)
    np.testing.assert_allclose(got, T**2 * jnp.mean(kl), rtol=1e-5)


def test_pointwise_kd_closed_form():
  s, t, T = 1.0, -0.5, 3.0
  p = 1 / (1 + math.exp(-t / T))
  sig = 1 / (1 + math.exp(-s / T))
  expected = T**2 * -(p * math.log(sig) + (1 - p) * math.log(1 - sig))
  got = hinton_pointwise_kd(jnp.array([s]), jnp.array([t]), where=jnp.array([True]),
                            temperature=T)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_logit_mse_and_bce_closed_form():
  assert float(logit_mse(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0]), where=ALL)) == \
      pytest.approx(0.5 * (1 + 9) / 2)
  s = jnp.array([2.0, -1.0])
  expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-1.0))) / 2
  assert float(pointwise_bce(s, jnp.array([3.0, 0.0]), where=ALL)) == pytest.approx(expected)


def test_bce_importance_weights_and_propensity_floor():
  s, y = jnp.array([0.0, 0.0]), jnp.array([1.0, 1.0])
  w = inverse_propensity_weights(jnp.array([0.5, 0.01]), where=ALL, clip=0.1)
  np.testing.assert_allclose(w, [2.0, 10.0])
  got = pointwise_bce(s, y, where=ALL, weights=w)
  assert float(got) == pytest.approx(math.log(2) * 12 / 2)


@pytest.mark.parametrize("loss", [hinton_listwise_kd, hinton_pointwise_kd, logit_mse])
def test_padding_with_garbage_changes_nothing(loss):
  rng = np.random.default_rng(1)
  s, t = jnp.asarray(rng.normal(size=(3, 5))), jnp.asarray(rng.normal(size=(3, 5)))
  where = jnp.ones((3, 5), bool)
  pad_s = jnp.concatenate([s, jnp.full((3, 4), jnp.nan)], -1)
  pad_t = jnp.concatenate([t, jnp.full((3, 4), 1e30)], -1)
  pad_w = jnp.concatenate([where, jnp.zeros((3, 4), bool)], -1)
  kw = {} if loss is logit_mse else {"temperature": 2.0}
  f = lambda x: loss(x, t, where=where, **kw)
  g = lambda x: loss(x, pad_t, where=pad_w, **kw)
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :5], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 5:] == 0)


@pytest.mark.parametrize("loss", [hinton_listwise_kd, hinton_pointwise_kd, logit_mse,
                                  pointwise_bce])
def test_all_masked_gives_zero_and_finite_gradient(loss):
  s, t = jnp.array([[1e4, -1e4, 3.0]]), jnp.array([[2.0, 1.0, 0.0]])
  where = jnp.zeros((1, 3), bool)
  f = lambda x: loss(x, t, where=where)
  assert float(f(s)) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(s)))


def test_listwise_kd_is_permutation_invariant_and_zero_at_teacher():
  s = jnp.array([0.3, -1.0, 2.0, 0.5])
  t = jnp.array([1.0, 0.0, -2.0, 0.2])
  where = jnp.array([True, True, True, False])
  perm = jnp.array([2, 0, 3, 1])
  a = hinton_listwise_kd(s, t, where=where, temperature=1.5)
  b = hinton_listwise_kd(s[perm], t[perm], where=where[perm], temperature=1.5)
  assert float(a) == pytest.approx(float(b), rel=1e-6)
  assert float(hinton_listwise_kd(t, t, where=where, temperature=1.5)) == pytest.approx(0, abs=1e-6)


def _batch(rng, teachers=1):
  r, n = 3, 6
  exposed = np.zeros((r, n), bool)
  exposed[:, :2] = True
  return Batch(context=jnp.zeros((r, 2)), items=jnp.zeros((r, n, 2)), cross=jnp.zeros((r, n, 1)),
               label=jnp.asarray(exposed * rng.integers(0, 2, (r, n)), jnp.float32),
               exposed=jnp.asarray(exposed), valid=jnp.ones((r, n), bool),
               teacher_scores=jnp.asarray(rng.normal(size=(r, n, teachers)), jnp.float32))


@pytest.mark.parametrize("kd", ["hinton_listwise", "hinton_pointwise", "logit_mse"])
def test_alpha_zero_is_pure_gt_and_alpha_one_is_pure_kd(kd):
  rng = np.random.default_rng(2)
  batch = _batch(rng)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  objective = make_objective(kd=kd, gt="bce")
  gt = pointwise_bce(s, batch.label, where=batch.exposed)
  hp = lambda a: {"alpha": jnp.float32(a), "temperature": jnp.float32(2.0)}
  assert float(objective(s, batch, hp(0.0))) == pytest.approx(float(gt), rel=1e-6)
  gt_only = make_objective(kd="none", gt="bce")
  assert float(gt_only(s, batch._replace(teacher_scores=None), hp(0.3))) == \
      pytest.approx(float(gt), rel=1e-6)
  pure_kd = make_objective(kd=kd, gt="bce")(s, batch, hp(1.0))
  mixed = make_objective(kd=kd, gt="bce")(s, batch, hp(0.25))
  assert float(mixed) == pytest.approx(0.25 * float(pure_kd) + 0.75 * float(gt), rel=1e-5)


def test_kd_objective_without_teacher_scores_is_an_error():
  batch = _batch(np.random.default_rng(3))._replace(teacher_scores=None)
  objective = make_objective(kd="hinton_listwise", gt="bce")
  with pytest.raises(ValueError, match="teacher_scores"):
    objective(jnp.zeros((3, 6)), batch, {"alpha": 0.5, "temperature": 1.0})


def test_unknown_loss_name_lists_valid_names():
  with pytest.raises(ValueError, match=r"loss.kd.*hinton_listwise"):
    make_objective(kd="hinton", gt="bce")
  with pytest.raises(ValueError, match=r"loss.gt.*bce"):
    make_objective(kd="logit_mse", gt="mse")


def test_ensemble_of_identical_teachers_equals_one_teacher():
  rng = np.random.default_rng(4)
  one = _batch(rng)
  three = one._replace(teacher_scores=jnp.repeat(one.teacher_scores, 3, axis=-1))
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  objective = make_objective(kd="hinton_listwise", gt="bce")
  hp = {"alpha": 0.7, "temperature": 2.0}
  assert float(objective(s, one, hp)) == pytest.approx(float(objective(s, three, hp)), rel=1e-6)
