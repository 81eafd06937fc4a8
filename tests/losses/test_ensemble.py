"""Teacher ensembles: closed forms, identical teachers, weights, masking, config plumbing."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import Batch, feature_sizes
from prerank_jax.config import ConfigError, validate_config
from prerank_jax.losses import make_objective
from prerank_jax.losses.ensemble import (ENSEMBLES, logit_mean_prob, mean_logits, mean_rank,
                                         normalized_weights)
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.conftest import load_config

NAMES = sorted(ENSEMBLES)


def test_registry_names():
  assert set(ENSEMBLES) == {"mean_logits", "logit_mean_prob", "mean_rank"}


def test_closed_forms():
  t = jnp.array([[0.0, 2.0], [1.0, -1.0], [3.0, 3.0]])  # N = 3 candidates, M = 2
  w = (1.0, 3.0)
  np.testing.assert_allclose(mean_logits(t), [1.0, 0.0, 3.0], rtol=1e-6)
  np.testing.assert_allclose(mean_logits(t, weights=w), [1.5, -0.5, 3.0], rtol=1e-6)
  sig = lambda x: 1 / (1 + math.exp(-x))
  logit = lambda p: math.log(p / (1 - p))
  expected = [logit(0.25 * sig(a) + 0.75 * sig(b)) for a, b in t.tolist()]
  np.testing.assert_allclose(logit_mean_prob(t, weights=w), expected, rtol=1e-5)
  expected = [logit(0.5 * sig(a) + 0.5 * sig(b)) for a, b in t.tolist()]
  np.testing.assert_allclose(logit_mean_prob(t), expected, rtol=1e-5)
  # Ranks of teacher 0: [3, 2, 1]; of teacher 1: [2, 3, 1] (tie at 3.0 broken by index).
  np.testing.assert_allclose(mean_rank(t), [-2.5, -2.5, -1.0])
  np.testing.assert_allclose(mean_rank(t, weights=w), [-0.25 * 3 - 0.75 * 2,
                                                       -0.25 * 2 - 0.75 * 3, -1.0])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("weights", [None, (1.0, 2.0, 0.5)])
def test_identical_teachers_equal_one_teacher(name, weights):
  rng = np.random.default_rng(0)
  t = jnp.asarray(rng.normal(size=(4, 7, 1)) * 3, jnp.float32)
  where = jnp.asarray(rng.random((4, 7)) < 0.8)
  fn = ENSEMBLES[name]
  one = fn(t, where=where)
  three = fn(jnp.repeat(t, 3, axis=-1), where=where, weights=weights)
  np.testing.assert_allclose(three, one, rtol=1e-5, atol=1e-5)
  if name != "mean_rank":  # the logit-level ensembles return that teacher itself
    np.testing.assert_allclose(one, jnp.where(where, t[..., 0], 0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_drops_a_teacher(name):
  rng = np.random.default_rng(1)
  t = jnp.asarray(rng.normal(size=(3, 6, 2)), jnp.float32)
  fn = ENSEMBLES[name]
  np.testing.assert_allclose(fn(t, weights=(0.0, 2.0)), fn(t[..., 1:]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(fn(t, weights=(5.0, 0.0)), fn(t[..., :1]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_masked_garbage_changes_nothing(name):
  rng = np.random.default_rng(2)
  t = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
  where = jnp.ones((3, 5), bool)
  pad_t = jnp.concatenate([t, jnp.full((3, 2, 2), jnp.nan)], axis=1).at[:, 5, 0].set(1e30)
  pad_w = jnp.concatenate([where, jnp.zeros((3, 2), bool)], -1)
  fn = ENSEMBLES[name]
  out = fn(pad_t, where=pad_w, weights=(1.0, 2.0))
  np.testing.assert_allclose(out[:, :5], fn(t, where=where, weights=(1.0, 2.0)), rtol=1e-6)
  assert np.all(out[:, 5:] == 0)


def test_logit_mean_prob_extreme_logits_are_finite():
  t = jnp.array([[1e4, 1e4], [-1e4, -1e4], [1e4, -1e4], [0.0, 50.0]])
  out = logit_mean_prob(t)
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out[:3], [1e4, -1e4, 0.0], atol=1e-2)
  # mean probability of σ(0) = 0.5 and σ(50) ≈ 1 is 0.75
  assert float(out[3]) == pytest.approx(math.log(3.0), rel=1e-5)


def test_weights_are_validated():
  with pytest.raises(ValueError, match=r"loss.ensemble_weights: must have one weight per "
                                       r"teacher \(M=2"):
    normalized_weights((1.0, 2.0, 3.0), 2)
  with pytest.raises(ValueError, match=r"loss.ensemble_weights: .*>= 0"):
    normalized_weights((1.0, -1.0), 2)
  with pytest.raises(ValueError, match=r"loss.ensemble_weights"):
    normalized_weights((0.0, 0.0), 2)
  with pytest.raises(ValueError, match=r"loss.ensemble_weights"):
    make_objective(kd="logit_mse", gt="bce", ensemble_weights=(1.0, -2.0))


def _batch(rng, teachers):
  r, n = 3, 6
  exposed = np.zeros((r, n), bool)
  exposed[:, :2] = True
  return Batch(context=jnp.zeros((r, 2)), items=jnp.zeros((r, n, 2)),
               cross=jnp.zeros((r, n, 1)),
               label=jnp.asarray(exposed * rng.integers(0, 2, (r, n)), jnp.float32),
               exposed=jnp.asarray(exposed), valid=jnp.ones((r, n), bool),
               teacher_scores=jnp.asarray(rng.normal(size=(r, n, teachers)), jnp.float32))


@pytest.mark.parametrize("name", NAMES)
def test_objective_uses_the_ensemble_and_its_weights(name):
  rng = np.random.default_rng(3)
  batch = _batch(rng, 2)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  hp = {"alpha": 1.0, "temperature": 2.0}
  objective = make_objective(kd="hinton_listwise", gt="bce", ensemble=name,
                             ensemble_weights=(0.0, 1.0))
  second = batch._replace(teacher_scores=batch.teacher_scores[..., 1:])
  single = make_objective(kd="hinton_listwise", gt="bce", ensemble=name)
  assert float(objective(s, batch, hp)) == pytest.approx(float(single(s, second, hp)), rel=1e-5)
  three = batch._replace(teacher_scores=jnp.repeat(second.teacher_scores, 3, -1))
  assert float(single(s, three, hp)) == pytest.approx(float(single(s, second, hp)), rel=1e-5)
  wrong = make_objective(kd="hinton_listwise", gt="bce", ensemble=name,
                         ensemble_weights=(1.0, 1.0, 1.0))
  with pytest.raises(ValueError, match=r"loss.ensemble_weights: must have one weight per "
                                       r"teacher \(M=2"):
    jax.jit(lambda x: wrong(x, batch, hp))(s)


def test_config_has_and_validates_ensemble_weights():
  config = load_config()
  assert tuple(config.student.loss.ensemble_weights) == ()
  assert tuple(config.teacher.loss.ensemble_weights) == ()
  config.student.loss.ensemble_weights = (1.0, -1.0)
  with pytest.raises(ConfigError, match=r"student.loss.ensemble_weights"):
    validate_config(config)
  config = load_config()
  config.student.loss.ensemble_weights = (1.0, 2.0)  # but teacher.num_teachers = 1
  with pytest.raises(ConfigError, match=r"student.loss.ensemble_weights: must have one "
                                        r"weight per teacher"):
    validate_config(config)
  config.teacher.num_teachers = 2
  validate_config(config)


@pytest.mark.parametrize("name", ["logit_mean_prob", "mean_rank"])
def test_trainer_reads_ensemble_and_weights_from_the_config(tiny_splits, name):
  config = load_config()
  config.student.num_epochs = 1
  config.student.loss.ensemble = name
  config.student.loss.ensemble_weights = (1.0, 3.0)
  rng = np.random.default_rng(0)
  data = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (2,))
                        .astype(np.float32)) for k, b in tiny_splits.items()}
  train = data["train"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  hp, rngs = stack_points(grid_points({"learning_rate": (1e-3,)}, seed=0))
  _, hist = compile_sweep(trainer).train(hp, rngs, SweepData(train, data["valid"]))
  assert np.all(np.isfinite(hist["loss"]))
  config.student.loss.ensemble_weights = (1.0, 1.0, 1.0)
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  with pytest.raises(ValueError, match=r"loss.ensemble_weights"):
    compile_sweep(trainer).train(hp, rngs, SweepData(train, data["valid"]))
