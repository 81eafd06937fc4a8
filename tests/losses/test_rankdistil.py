"""RankDistil: PL sampling, top-k ListMLE, brute force with the same noise, training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax
from jax.test_util import check_grads

from prerank_jax import metrics
from prerank_jax.batch import feature_sizes
from prerank_jax.losses import make_objective
from prerank_jax.losses.rankdistil import rankdistil_loss, sample_plackett_luce, top_k_listmle
from prerank_jax.losses.registry import HPARAMS, KD_LOSSES, STATIC_OPTIONS
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import noisy_truth_teacher, teacher_consistency
from tests.conftest import load_config


def test_registered():
  spec = KD_LOSSES["rankdistil"]
  assert spec.hparams == ("temperature", "rankdistil_topk")
  assert spec.needs == ("rng",)
  assert spec.options == ("rankdistil_num_samples", "rankdistil_temperature_on")
  assert HPARAMS["rankdistil_topk"].default == 10.0
  assert STATIC_OPTIONS["rankdistil_num_samples"].default == 8


# ---------------------------------------------------------------- top-k ListMLE


def test_top_k_listmle_closed_form():
  s = jnp.array([1.0, 0.0, 2.0])
  order = jnp.array([2, 0, 1])
  lse = lambda xs: math.log(sum(math.exp(x) for x in xs))
  place1 = 2.0 - lse([2.0, 1.0, 0.0])
  place2 = 1.0 - lse([1.0, 0.0])
  where = jnp.ones(3, bool)
  assert float(top_k_listmle(s, order, where=where, k=1)) == pytest.approx(-place1, rel=1e-6)
  assert float(top_k_listmle(s, order, where=where, k=2)) == \
      pytest.approx(-(place1 + place2), rel=1e-6)
  # the last place always contributes log(1) = 0, so k = 3 equals k = 2 here
  assert float(top_k_listmle(s, order, where=where, k=3)) == \
      pytest.approx(-(place1 + place2), rel=1e-6)


def test_full_listmle_matches_rax():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.normal(size=(4, 9)), jnp.float32)
  labels = jnp.asarray(rng.permutation(36).reshape(4, 9), jnp.float32)  # distinct
  where = jnp.asarray(rng.random((4, 9)) < 0.75).at[:, 0].set(True)
  order = jnp.argsort(metrics.ranks(labels, where=where), axis=-1)
  ours = top_k_listmle(s, order, where=where, k=9)
  theirs = rax.listmle_loss(s, labels, where=where, reduce_fn=None)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_top_k_listmle_padding_with_garbage_equals_slicing():
  rng = np.random.default_rng(1)
  s = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  order = jnp.asarray(np.stack([rng.permutation(5) for _ in range(3)]))
  where = jnp.ones((3, 5), bool)
  pad_s = jnp.concatenate([s, jnp.full((3, 3), jnp.nan)], -1)
  pad_order = jnp.concatenate([order, jnp.broadcast_to(jnp.arange(5, 8), (3, 3))], -1)
  pad_w = jnp.concatenate([where, jnp.zeros((3, 3), bool)], -1)
  f = lambda x: jnp.sum(top_k_listmle(x, order, where=where, k=3))
  g = lambda x: jnp.sum(top_k_listmle(x, pad_order, where=pad_w, k=3))
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :5], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 5:] == 0)


def test_top_k_listmle_check_grads():
  s = jnp.array([[0.3, -0.2, 1.1, 0.5]])
  order = jnp.array([[2, 0, 3, 1]])
  check_grads(
      lambda x: top_k_listmle(x, order, where=jnp.ones((1, 4), bool), k=2).sum(), (s,),
      order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


# ---------------------------------------------------------------- PL sampling


def test_samples_are_permutations_with_valid_candidates_first():
  rng = np.random.default_rng(2)
  t = jnp.asarray(rng.normal(size=(3, 7)), jnp.float32).at[:, 5:].set(jnp.nan)
  where = jnp.ones((3, 7), bool).at[:, 5:].set(False)
  order = np.asarray(sample_plackett_luce(jax.random.key(0), t, where=where, num_samples=16))
  assert order.shape == (16, 3, 7)
  np.testing.assert_array_equal(np.sort(order, -1), np.broadcast_to(np.arange(7), order.shape))
  assert np.all(order[..., 5:] >= 5)


def test_samples_follow_the_plackett_luce_model():
  t = jnp.array([2.0, 1.0, 0.0, -1.0])
  temperature = 2.0
  p = np.exp(np.asarray(t) / temperature)
  p /= p.sum()
  n = 40_000
  order = np.asarray(sample_plackett_luce(jax.random.key(1), t, where=jnp.ones(4, bool),
                                          num_samples=n, temperature=temperature))
  first = np.bincount(order[:, 0], minlength=4) / n
  np.testing.assert_allclose(first, p, atol=0.01)
  # P(first = 0, second = 1) = p0 · p1 / (1 − p0)
  both = np.mean((order[:, 0] == 0) & (order[:, 1] == 1))
  assert both == pytest.approx(p[0] * p[1] / (1 - p[0]), abs=0.01)


def test_small_temperature_gives_the_teacher_order():
  s = jnp.array([[0.3, -0.2, 1.1, 0.5, 0.0]])
  t = jnp.array([[1.0, 3.0, 0.0, 2.0, -1.0]])
  where = jnp.ones((1, 5), bool)
  got = rankdistil_loss(s, t, where=where, rng=jax.random.key(0), temperature=1e-3,
                        rankdistil_topk=3.0, rankdistil_num_samples=4)
  expected = top_k_listmle(s, jnp.array([[1, 3, 0, 2, 4]]), where=where, k=3)
  assert float(got) == pytest.approx(float(expected[0]), rel=1e-6)


# ---------------------------------------------------------------- brute force


def _brute_force(s, t, where, key, *, temperature, k, num_samples):
  """Numpy RankDistil with the same Gumbel noise as the implementation."""
  s, t, where = (np.asarray(x, np.float64) for x in (s, t, where))
  noise = np.asarray(jax.random.gumbel(key, (num_samples,) + t.shape, jnp.float32))
  per_list = []
  for l in range(t.shape[0]):
    valid = np.flatnonzero(where[l])
    if valid.size == 0:
      continue
    total = 0.0
    for i in range(num_samples):
      key_l = t[l, valid] / temperature + noise[i, l, valid]
      pi = valid[np.argsort(-key_l, kind="stable")]
      for r in range(min(int(k), len(pi))):
        rest = s[l, pi[r:]]
        total -= s[l, pi[r]] - (rest.max() + np.log(np.exp(rest - rest.max()).sum()))
    per_list.append(total / num_samples)
  return float(np.mean(per_list)) if per_list else 0.0


@pytest.mark.parametrize("temperature, k", [(1.0, 3.0), (0.3, 1.0), (5.0, 10.0)])
def test_matches_brute_force_with_the_same_noise(temperature, k):
  rng = np.random.default_rng(3)
  s = jnp.asarray(rng.normal(size=(4, 8)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(4, 8)) * 2, jnp.float32)
  where = jnp.asarray(rng.random((4, 8)) < 0.8).at[:, :2].set(True)
  key = jax.random.key(7)
  got = rankdistil_loss(s, t, where=where, rng=key, temperature=temperature,
                        rankdistil_topk=k, rankdistil_num_samples=5)
  expected = _brute_force(s, t, where, key, temperature=temperature, k=k, num_samples=5)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_padding_with_garbage_matches_brute_force_on_the_valid_slots():
  rng = np.random.default_rng(4)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  pad = lambda x, v: jnp.concatenate([x, jnp.full((3, 3), v, x.dtype)], -1)
  pad_s, pad_t = pad(s, jnp.nan), pad(t, 1e30)
  pad_w = pad(jnp.ones((3, 6), bool), False)
  key = jax.random.key(3)
  f = lambda x: rankdistil_loss(x, pad_t, where=pad_w, rng=key, temperature=2.0,
                                rankdistil_topk=4.0, rankdistil_num_samples=6)
  expected = _brute_force(pad(s, 0.0), pad(t, 0.0), pad_w, key, temperature=2.0, k=4,
                          num_samples=6)
  assert float(f(pad_s)) == pytest.approx(expected, rel=1e-5)
  grad = jax.grad(f)(pad_s)
  assert np.all(np.isfinite(grad)) and np.all(grad[:, 6:] == 0)


def test_permutation_invariance_in_expectation():
  rng = np.random.default_rng(5)
  s = jnp.asarray(rng.normal(size=(7,)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(7,)), jnp.float32)
  where = jnp.ones(7, bool).at[6].set(False)
  perm = jnp.asarray(rng.permutation(7))
  kw = dict(temperature=1.0, rankdistil_topk=3.0, rankdistil_num_samples=8192)
  a = rankdistil_loss(s, t, where=where, rng=jax.random.key(0), **kw)
  b = rankdistil_loss(s[perm], t[perm], where=where[perm], rng=jax.random.key(1), **kw)
  assert float(a) == pytest.approx(float(b), rel=0.02)


# ---------------------------------------------------------------- numerics


def test_all_masked_gives_zero_and_finite_gradient():
  s, t = jnp.array([[1e4, -1e4, 3.0]]), jnp.array([[2.0, 1.0, jnp.nan]])
  where = jnp.zeros((1, 3), bool)
  f = lambda x: rankdistil_loss(x, t, where=where, rng=jax.random.key(0))
  assert float(f(s)) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(s)))


@pytest.mark.parametrize("temperature", [0.05, 1.0, 100.0])
def test_extreme_logits_and_temperatures_give_finite_gradients(temperature):
  s = jnp.array([[1e4, -1e4, 3.0, 0.0], [0.1, 0.2, -1e4, 1e4]])
  t = jnp.array([[-1e4, 1e4, 0.0, 1.0], [1e4, 1e4, -1e4, 0.0]])
  where = jnp.ones((2, 4), bool)
  f = lambda x, y: rankdistil_loss(x, y, where=where, rng=jax.random.key(0),
                                   temperature=temperature, rankdistil_topk=2.0)
  assert np.isfinite(float(f(s, t)))
  gs, gt = jax.grad(f, argnums=(0, 1))(s, t)
  assert np.all(np.isfinite(gs))
  assert np.all(gt == 0)  # the teacher is frozen


def test_missing_rng_is_a_clear_error():
  with pytest.raises(ValueError, match="rankdistil.*rng"):
    rankdistil_loss(jnp.zeros(3), jnp.zeros(3), where=jnp.ones(3, bool), rng=None)


def test_objective_passes_rng_options_and_traced_hparams():
  rng = np.random.default_rng(6)
  from prerank_jax.batch import Batch
  r, n = 2, 5
  batch = Batch(context=jnp.zeros((r, 1)), items=jnp.zeros((r, n, 1)),
                cross=jnp.zeros((r, n, 1)), label=jnp.zeros((r, n)),
                exposed=jnp.zeros((r, n), bool), valid=jnp.ones((r, n), bool),
                teacher_scores=jnp.asarray(rng.normal(size=(r, n, 1)), jnp.float32))
  s = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  objective = make_objective(kd="rankdistil", gt="bce",
                             options={"rankdistil_num_samples": 3})
  hp = {"alpha": 1.0, "temperature": 0.5, "rankdistil_topk": 2.0}
  key = jax.random.key(11)
  got = jax.jit(lambda x, h: objective(x, batch, h, rng=key))(s, hp)
  _, kd_key = jax.random.split(key)
  expected = rankdistil_loss(s, batch.teacher_scores[..., 0], where=batch.valid, rng=kd_key,
                             temperature=0.5, rankdistil_topk=2.0, rankdistil_num_samples=3)
  assert float(got) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------- training


def test_rankdistil_trains_a_student(tiny_splits):
  config = load_config()
  config.student.loss.kd = "rankdistil"
  config.student.num_epochs = 20
  data = noisy_truth_teacher(tiny_splits, noise=0.5)
  train, valid = data["train"], data["valid"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  compiled = compile_sweep(trainer)
  hp, rngs = stack_points(grid_points({"rankdistil_topk": (3.0, 10.0), "temperature": (1.0,),
                                       "alpha": (1.0,), "learning_rate": (1e-2,)}, seed=0))
  before = _tc(compiled.apply(compiled.init(hp, rngs).params, valid), valid)
  state, hist = compiled.train(hp, rngs, SweepData(train, valid))
  loss = np.asarray(hist["loss"])
  assert np.all(np.isfinite(loss)) and not np.any(np.asarray(state.diverged))
  assert np.all(loss[:, -3:].mean(1) < loss[:, :3].mean(1)), loss
  after = _tc(compiled.apply(state.params, valid), valid)
  print("rankdistil loss", loss[:, 0], loss[:, -1], "R@(5,50%)", before, after)
  assert np.all(after > before), (before, after)


def _tc(scores, batch):
  """R@(5, 50%) on the valid split, per sweep point."""
  return teacher_consistency(scores, batch, k=5, keep_ratio=0.5)
