"""ListNet distillation: closed form, optax cross-check, relation to hinton_listwise,
masking, invariances, numerics, and learning through the vmapped trainer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from prerank_jax import metrics
from prerank_jax.batch import feature_sizes
from prerank_jax.losses import KD_LOSSES, hinton_listwise_kd
from prerank_jax.losses.listnet import listnet_distill
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import sweep_data, teacher_consistency


def _softmax(xs):
  m = max(xs)
  e = [math.exp(x - m) for x in xs]
  return [x / sum(e) for x in e]


def test_closed_form():
  s, t, T = [0.5, -1.0, 2.0], [1.0, 0.0, -0.5], 2.0
  p, q = _softmax([x / T for x in t]), _softmax([x / T for x in s])
  expected = -T**2 * sum(pi * math.log(qi) for pi, qi in zip(p, q))
  got = listnet_distill(jnp.array(s), jnp.array(t), where=jnp.ones(3, bool), temperature=T)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_matches_optax_softmax_cross_entropy():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(4, 7)).astype(np.float32), rng.normal(size=(4, 7)).astype(np.float32)
  where = np.ones((4, 7), bool)
  where[1, 5:] = False
  for T in (0.5, 1.0, 3.0):
    ce = optax.softmax_cross_entropy(jnp.asarray(s / T), jax.nn.softmax(jnp.asarray(t / T)))
    got = listnet_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.ones((4, 7), bool),
                          temperature=T)
    np.testing.assert_allclose(got, T**2 * jnp.mean(ce), rtol=1e-5)
    # A masked list equals the sliced list.
    ce1 = optax.softmax_cross_entropy(jnp.asarray(s[1, :5] / T),
                                      jax.nn.softmax(jnp.asarray(t[1, :5] / T)))
    per_list = listnet_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(where),
                               temperature=T, reduce_fn=None)
    np.testing.assert_allclose(per_list[1], T**2 * ce1, rtol=1e-5)


def test_differs_from_hinton_listwise_by_teacher_entropy_only():
  rng = np.random.default_rng(1)
  s, t = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.normal(size=(3, 6)))
  where = jnp.ones((3, 6), bool)
  for T in (0.3, 1.0, 4.0):
    p = jax.nn.softmax(t / T)
    entropy = -jnp.sum(p * jnp.log(p), -1)
    a = listnet_distill(s, t, where=where, temperature=T, reduce_fn=None)
    b = hinton_listwise_kd(s, t, where=where, temperature=T, reduce_fn=None)
    np.testing.assert_allclose(a - b, T**2 * entropy, rtol=1e-4, atol=1e-5)
    ga = jax.grad(lambda x: listnet_distill(x, t, where=where, temperature=T))(s)
    gb = jax.grad(lambda x: hinton_listwise_kd(x, t, where=where, temperature=T))(s)
    np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-7)


def test_padding_with_garbage_equals_slicing():
  rng = np.random.default_rng(2)
  s, t = jnp.asarray(rng.normal(size=(3, 5))), jnp.asarray(rng.normal(size=(3, 5)))
  pad_s = jnp.concatenate([s, jnp.full((3, 4), jnp.nan)], -1)
  pad_t = jnp.concatenate([t, jnp.full((3, 4), jnp.nan)], -1)
  pad_w = jnp.concatenate([jnp.ones((3, 5), bool), jnp.zeros((3, 4), bool)], -1)
  f = lambda x: listnet_distill(x, t, where=jnp.ones((3, 5), bool), temperature=2.0)
  g = lambda x: listnet_distill(x, pad_t, where=pad_w, temperature=2.0)
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :5], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 5:] == 0)


def test_permutation_invariance_and_all_masked():
  s = jnp.array([0.3, -1.0, 2.0, 0.5])
  t = jnp.array([1.0, 0.0, -2.0, 0.2])
  where = jnp.array([True, True, True, False])
  perm = jnp.array([2, 0, 3, 1])
  a = listnet_distill(s, t, where=where, temperature=1.5)
  b = listnet_distill(s[perm], t[perm], where=where[perm], temperature=1.5)
  assert float(a) == pytest.approx(float(b), rel=1e-6)
  none = jnp.zeros((2, 4), bool)
  f = lambda x: listnet_distill(x, jnp.stack([t, t]), where=none, temperature=1.5)
  assert float(f(jnp.stack([s, s]))) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(jnp.stack([s, s]))))


@pytest.mark.parametrize("T", [0.05, 1.0, 100.0])
def test_extreme_temperatures_and_logits_give_finite_grads(T):
  s = jnp.array([[1e4, -1e4, 3.0, 0.0]])
  t = jnp.array([[-1e4, 1e4, 0.0, 2.0]])
  where = jnp.array([[True, True, True, False]])
  value, grad = jax.value_and_grad(
      lambda x: listnet_distill(x, t, where=where, temperature=T))(s)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_check_grads():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    s, t = jnp.asarray(rng.normal(size=(2, 5))), jnp.asarray(rng.normal(size=(2, 5)))
    where = jnp.array([[True] * 5, [True, True, True, False, False]])
    check_grads(lambda x: listnet_distill(x, t, where=where, temperature=0.7), (s,),
                order=1, modes=("rev",))


def test_registered():
  assert KD_LOSSES["listnet_distill"].fn is listnet_distill
  assert KD_LOSSES["listnet_distill"].hparams == ("temperature",)


# --- learning through the vmapped trainer -------------------------------------------------


def test_student_learns_from_the_teacher(tiny_splits):
  from tests.conftest import load_config
  config = load_config()
  config.student.loss.kd = "listnet_distill"
  config.student.num_epochs = 8
  config.student.batch_size = 8
  train = tiny_splits["train"]
  data = sweep_data(tiny_splits, noise=0.3)
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  compiled = compile_sweep(trainer)
  hparams, rngs = stack_points(grid_points(
      {"temperature": (0.5, 2.0), "alpha": (1.0,), "learning_rate": (1e-2,)}, seed=0))
  state, hist = compiled.train(hparams, rngs, data)
  before = _tc(compiled.apply(compiled.init(hparams, rngs).params,
                                               data.valid), data.valid)
  after = _tc(compiled.apply(state.params, data.valid), data.valid)
  assert not np.any(state.diverged)
  assert np.all(np.asarray(hist["loss"][:, -1]) < np.asarray(hist["loss"][:, 0]))
  assert np.all(np.asarray(after) > np.asarray(before)), (before, after)


def _tc(scores, batch):
  """R@(3, 25%) on the valid split, per sweep point."""
  return teacher_consistency(scores, batch, k=3, keep_ratio=0.25)
