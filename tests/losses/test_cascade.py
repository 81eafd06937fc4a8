"""Cascade losses: FS-LTR priorities, NeuralSort soft recall, RankFlow's student term."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from prerank_jax import metrics
from prerank_jax.batch import feature_sizes
from prerank_jax.losses.cascade import (fsltr_priority_loss, neuralsort, rankflow_loss,
                                        soft_recall_loss, soft_top_m)
from prerank_jax.losses.registry import HPARAMS, KD_LOSSES, STATIC_OPTIONS
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import noisy_truth_teacher, teacher_consistency
from tests.conftest import load_config

sp = lambda x: math.log1p(math.exp(x))
sig = lambda x: 1 / (1 + math.exp(-x))


def test_registered():
  assert KD_LOSSES["fsltr_priority"].hparams == ("fsltr_topk",)
  assert KD_LOSSES["fsltr_priority"].needs == ("labels", "exposed")
  assert KD_LOSSES["soft_recall"].hparams == ("recall_k", "recall_keep_ratio",
                                              "neuralsort_tau")
  assert KD_LOSSES["rankflow"].hparams == ("rankflow_topk", "rankflow_beta")
  assert KD_LOSSES["rankflow"].options == ("rankflow_space",)
  assert STATIC_OPTIONS["rankflow_space"].default == "prob"
  for name in ("fsltr_topk", "recall_k", "recall_keep_ratio", "neuralsort_tau",
               "rankflow_topk", "rankflow_beta"):
    assert HPARAMS[name].contains(HPARAMS[name].default)
  assert not HPARAMS["recall_keep_ratio"].contains(0.0)
  assert not HPARAMS["neuralsort_tau"].contains(0.0)


# ---------------------------------------------------------------- FS-LTR


def test_fsltr_closed_form():
  s = jnp.array([0.5, -1.0, 2.0, 0.0, 1.0, 9.0])
  t = jnp.array([0.0, 5.0, 3.0, 2.0, 1.0, 99.0])
  labels = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
  exposed = jnp.array([True, True, False, False, False, False])
  where = jnp.array([True, True, True, True, True, False])
  # K = 2: the teacher's top 2 are candidates 1 (exposed already) and 2.
  # priorities: 0 → 3 (clicked), 1 → 2 (exposed), 2 → 1 (teacher top-K), 3, 4 → 0.
  pairs = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 3), (2, 4)]
  expected = sum(sp(-(float(s[i]) - float(s[j]))) for i, j in pairs) / len(pairs)
  got = fsltr_priority_loss(s, t, where=where, labels=labels, exposed=exposed, fsltr_topk=2.0)
  assert float(got) == pytest.approx(expected, rel=1e-6)
  # K = 0: no teacher tier, candidate 2 joins the rest.
  pairs0 = [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4)]
  expected0 = sum(sp(-(float(s[i]) - float(s[j]))) for i, j in pairs0) / len(pairs0)
  got0 = fsltr_priority_loss(s, t, where=where, labels=labels, exposed=exposed, fsltr_topk=0.0)
  assert float(got0) == pytest.approx(expected0, rel=1e-6)


def test_fsltr_lists_without_pairs_are_not_counted():
  s = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  t = jnp.array([[1.0, 0.0], [1.0, 0.0]])
  labels = jnp.zeros((2, 2))
  exposed = jnp.array([[True, False], [False, False]])
  where = jnp.ones((2, 2), bool)
  per_list = fsltr_priority_loss(s, t, where=where, labels=labels, exposed=exposed,
                                 fsltr_topk=0.0, reduce_fn=None)
  np.testing.assert_allclose(per_list, [sp(-1.0), 0.0], rtol=1e-6)
  got = fsltr_priority_loss(s, t, where=where, labels=labels, exposed=exposed, fsltr_topk=0.0)
  assert float(got) == pytest.approx(sp(-1.0), rel=1e-6)


# ---------------------------------------------------------------- NeuralSort


def test_neuralsort_two_items_closed_form():
  s = jnp.array([0.7, -0.4, 123.0])
  where = jnp.array([True, True, False])
  tau = 0.5
  p_hat = neuralsort(s, where=where, tau=tau)
  row1 = [sig((0.7 + 0.4) / tau), sig(-(0.7 + 0.4) / tau), 0.0]
  np.testing.assert_allclose(p_hat[0], row1, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(p_hat[1], row1[::-1][1:] + [0.0], rtol=1e-6, atol=1e-7)


def test_neuralsort_rows_are_distributions_and_harden_as_tau_shrinks():
  rng = np.random.default_rng(0)
  s = jnp.asarray(rng.permutation(8) * 0.5, jnp.float32)
  p_hat = neuralsort(s, where=jnp.ones(8, bool), tau=1e-3)
  np.testing.assert_allclose(jnp.sum(p_hat, -1), 1.0, rtol=1e-5)
  hard = jax.nn.one_hot(jnp.argsort(-s), 8)
  np.testing.assert_allclose(p_hat, hard, atol=1e-5)


@pytest.mark.parametrize("m", [1, 3, 6])
def test_soft_top_m_tends_to_hard_top_m(m):
  rng = np.random.default_rng(1)
  s = jnp.asarray(np.stack([rng.permutation(9) * 0.3 for _ in range(4)]), jnp.float32)
  where = jnp.asarray(rng.random((4, 9)) < 0.8).at[:, :6].set(True)
  soft = soft_top_m(s, where=where, m=m, tau=1e-3)
  hard = metrics.top_m_mask(s, where=where, m=m)
  np.testing.assert_allclose(soft, hard.astype(jnp.float32), atol=1e-4)


# ---------------------------------------------------------------- soft recall


def test_soft_recall_closed_form():
  s = jnp.array([[0.7, -0.4]])
  t = jnp.array([[0.0, 1.0]])  # teacher top-1 is candidate 1
  got = soft_recall_loss(s, t, where=jnp.ones((1, 2), bool), recall_k=1.0,
                         recall_keep_ratio=0.5, neuralsort_tau=2.0,
                         soft_recall_form="linear")
  assert float(got) == pytest.approx(-sig((-0.4 - 0.7) / 2.0), rel=1e-6)
  # LCRON's form (the default): columns of a 2×2 NeuralSort sum to 1, so
  # ℓ = ½·(−log(P̂[1, 1] + ε) − log(P̂[2, 0] + ε)) with P̂[1, 1] = P̂[2, 0] = σ(−1.1/τ).
  got = soft_recall_loss(s, t, where=jnp.ones((1, 2), bool), recall_k=1.0,
                         recall_keep_ratio=0.5, neuralsort_tau=2.0)
  p = sig((-0.4 - 0.7) / 2.0)
  expected = -math.log(p / (1 + 1e-6) + 1e-6)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_soft_recall_tends_to_the_teacher_consistency_metric():
  rng = np.random.default_rng(2)
  s = jnp.asarray(np.stack([rng.permutation(12) * 0.5 for _ in range(6)]), jnp.float32)
  t = jnp.asarray(rng.normal(size=(6, 12)), jnp.float32)
  where = jnp.asarray(rng.random((6, 12)) < 0.8).at[:, :5].set(True)
  for k, ratio in [(3, 0.25), (5, 0.5), (2, 1.0)]:
    got = soft_recall_loss(s, t, where=where, recall_k=float(k), recall_keep_ratio=ratio,
                           neuralsort_tau=1e-3, soft_recall_form="linear")
    m = metrics.keep_size(where, keep_ratio=ratio)
    metric = jnp.mean(metrics.teacher_consistency_recall(s, t, where=where, k=k, m=m))
    assert float(got) == pytest.approx(-float(metric), abs=1e-4)


# ---------------------------------------------------------------- RankFlow


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_rankflow_closed_form(space):
  s, t = [1.0, 0.0, -1.0, 2.0], [3.0, 2.0, 1.0, 0.0]
  f = sig if space == "prob" else (lambda x: x)
  delta = (f(s[0]) + f(s[1])) / 2 - (f(s[2]) + f(s[3])) / 2
  mse = sum((f(a) - f(b)) ** 2 for a, b in zip(s, t)) / 4
  beta = 0.3
  expected = beta * -math.log(sig(delta)) + (1 - beta) * mse
  got = rankflow_loss(jnp.array(s), jnp.array(t), where=jnp.ones(4, bool), rankflow_topk=2.0,
                      rankflow_beta=beta, rankflow_space=space)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_rankflow_top_k_term_vanishes_without_a_rest():
  s, t = jnp.array([1.0, 0.0]), jnp.array([0.5, 0.2])
  got = rankflow_loss(s, t, where=jnp.ones(2, bool), rankflow_topk=5.0, rankflow_beta=1.0)
  assert float(got) == 0.0
  with pytest.raises(ValueError, match="rankflow_space"):
    rankflow_loss(s, t, where=jnp.ones(2, bool), rankflow_space="rank")


# ---------------------------------------------------------------- invariances


def _cases():
  return {
      "fsltr_priority": lambda s, t, w, y, e: fsltr_priority_loss(
          s, t, where=w, labels=y, exposed=e, fsltr_topk=2.0),
      "soft_recall": lambda s, t, w, y, e: soft_recall_loss(
          s, t, where=w, recall_k=2.0, recall_keep_ratio=0.5, neuralsort_tau=0.7),
      "soft_recall_arf": lambda s, t, w, y, e: soft_recall_loss(
          s, t, where=w, recall_k=2.0, recall_keep_ratio=0.5, neuralsort_tau=0.7,
          soft_recall_form="arf"),
      "soft_recall_linear": lambda s, t, w, y, e: soft_recall_loss(
          s, t, where=w, recall_k=2.0, recall_keep_ratio=0.5, neuralsort_tau=0.7,
          soft_recall_form="linear"),
      "rankflow_prob": lambda s, t, w, y, e: rankflow_loss(
          s, t, where=w, rankflow_topk=2.0, rankflow_beta=0.4),
      "rankflow_logit": lambda s, t, w, y, e: rankflow_loss(
          s, t, where=w, rankflow_topk=2.0, rankflow_beta=0.4, rankflow_space="logit"),
  }


def _inputs(rng, r=3, n=6):
  s = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  exposed = jnp.zeros((r, n), bool).at[:, :2].set(True)
  y = jnp.zeros((r, n)).at[:, 0].set(1.0)
  return s, t, y, exposed


@pytest.mark.parametrize("name", sorted(_cases()))
def test_padding_with_garbage_equals_slicing(name):
  loss = _cases()[name]
  s, t, y, e = _inputs(np.random.default_rng(3))
  w = jnp.ones((3, 6), bool)
  pad = lambda x, v: jnp.concatenate([x, jnp.full((3, 3), v, x.dtype)], -1)
  f = lambda x: loss(x, t, w, y, e)
  g = lambda x: loss(x, pad(t, 1e30), pad(w, False), pad(y, jnp.nan), pad(e, True))
  pad_s = pad(s, jnp.nan)
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :6], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 6:] == 0)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_permutation_invariance(name):
  loss = _cases()[name]
  s, t, y, e = _inputs(np.random.default_rng(4), r=1, n=7)
  w = jnp.ones((1, 7), bool).at[0, 5].set(False)
  perm = jnp.array([3, 6, 0, 5, 2, 1, 4])
  a = loss(s, t, w, y, e)
  b = loss(s[:, perm], t[:, perm], w[:, perm], y[:, perm], e[:, perm])
  assert float(a) == pytest.approx(float(b), rel=1e-5)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_all_masked_gives_zero_and_finite_gradient(name):
  loss = _cases()[name]
  s, t = jnp.array([[1e4, -1e4, 3.0]]), jnp.array([[2.0, jnp.nan, 0.0]])
  none = jnp.zeros((1, 3), bool)
  f = lambda x: loss(x, t, none, jnp.ones((1, 3)), none)
  assert float(f(s)) == 0.0
  assert np.all(np.isfinite(jax.grad(f)(s)))


@pytest.mark.parametrize("name", sorted(_cases()))
def test_extreme_logits_give_finite_gradients(name):
  loss = _cases()[name]
  s = jnp.array([[1e4, -1e4, 3.0, 0.0, 1e4], [0.1, 0.2, -1e4, 1e4, -1e4]])
  t = jnp.array([[-1e4, 1e4, 0.0, 1.0, 2.0], [1e4, 1e4, -1e4, 0.0, 3.0]])
  w = jnp.ones((2, 5), bool)
  e = jnp.zeros((2, 5), bool).at[:, 0].set(True)
  y = jnp.zeros((2, 5)).at[:, 0].set(1.0)
  f = lambda x, z: loss(x, z, w, y, e)
  assert np.isfinite(float(f(s, t)))
  gs, gt = jax.grad(f, argnums=(0, 1))(s, t)
  assert np.all(np.isfinite(gs))
  assert np.all(gt == 0)  # the teacher is frozen


@pytest.mark.parametrize("tau", [0.05, 1.0, 100.0])
def test_soft_recall_extreme_logits_finite_for_every_tau(tau):
  s = jnp.array([[1e4, -1e4, 3.0, 0.0, 1e4, 2.0]])
  t = jnp.array([[-1e4, 1e4, 0.0, 1.0, 2.0, 5.0]])
  f = lambda x: soft_recall_loss(x, t, where=jnp.ones((1, 6), bool), recall_k=3.0,
                                 recall_keep_ratio=0.5, neuralsort_tau=tau)
  assert np.isfinite(float(f(s)))
  assert np.all(np.isfinite(jax.grad(f)(s)))


@pytest.mark.parametrize("name", sorted(set(_cases()) - {"soft_recall"}))
def test_check_grads(name):
  loss = _cases()[name]
  s = jnp.array([[0.3, -0.2, 1.1, 0.5, -0.7, 0.05]])
  t = jnp.array([[1.0, 0.0, 2.0, -1.0, 0.5, 0.2]])
  w = jnp.ones((1, 6), bool)
  e = jnp.zeros((1, 6), bool).at[0, :2].set(True)
  y = jnp.zeros((1, 6)).at[0, 0].set(1.0)
  check_grads(lambda x: loss(x, t, w, y, e), (s,), order=1, modes=["rev"], atol=1e-2,
              rtol=1e-2)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("kd, axes", [
    ("fsltr_priority", {"fsltr_topk": (3.0, 8.0)}),
    ("soft_recall", {"neuralsort_tau": (0.5, 2.0), "recall_k": (5.0,),
                     "recall_keep_ratio": (0.5,)}),
    ("rankflow", {"rankflow_beta": (0.5, 1.0), "rankflow_topk": (5.0,)}),
])
def test_cascade_loss_trains_a_student(tiny_splits, kd, axes):
  config = load_config()
  config.student.loss.kd = kd
  config.student.num_epochs = 20
  data = noisy_truth_teacher(tiny_splits, noise=0.5)
  train, valid = data["train"], data["valid"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  compiled = compile_sweep(trainer)
  hp, rngs = stack_points(grid_points({**axes, "alpha": (1.0,), "learning_rate": (1e-2,)},
                                      seed=0))
  before = _tc(compiled.apply(compiled.init(hp, rngs).params, valid), valid)
  state, hist = compiled.train(hp, rngs, SweepData(train, valid))
  loss = np.asarray(hist["loss"])
  assert np.all(np.isfinite(loss)) and not np.any(np.asarray(state.diverged))
  assert np.all(loss[:, -3:].mean(1) < loss[:, :3].mean(1)), loss
  after = _tc(compiled.apply(state.params, valid), valid)
  print(kd, "loss", loss[:, 0], loss[:, -1], "R@(5,50%)", before, after)
  assert np.all(after > before), (before, after)


def _tc(scores, batch):
  """R@(5, 50%) on the valid split, per sweep point."""
  return teacher_consistency(scores, batch, k=5, keep_ratio=0.5)


def test_lcron_gradient_holds_the_column_normaliser_fixed():
  # LCRON detaches the column sums c (stop-gradient), so finite differences of the loss
  # itself do not match its gradient; they match with c frozen at its value.
  s = jnp.array([[0.3, -0.2, 1.1, 0.5, -0.7, 0.05]])
  t = jnp.array([[1.0, 0.0, 2.0, -1.0, 0.5, 0.2]])
  where = jnp.ones((1, 6), bool)
  target = np.array([[True, False, True, False, False, False]])   # teacher top-2
  m, tau, eps = 3, 0.7, 1e-6
  c = jnp.sum(neuralsort(s, where=where, tau=tau), axis=-2)

  def frozen(x):
    p_hat = neuralsort(x, where=where, tau=tau)
    up = jnp.sum(p_hat[:, :m, :], -2) / (c + eps)
    down = jnp.sum(p_hat[:, m:, :], -2) / (c + eps)
    terms = jnp.where(target, -jnp.log(up + eps), -jnp.log(down + eps))
    return jnp.mean(terms)

  check_grads(frozen, (s,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
  f = lambda x: soft_recall_loss(x, t, where=where, recall_k=2.0, recall_keep_ratio=0.5,
                                 neuralsort_tau=tau)
  assert float(f(s)) == pytest.approx(float(frozen(s)), rel=1e-5)
  np.testing.assert_allclose(jax.grad(f)(s), jax.grad(frozen)(s), rtol=1e-4, atol=1e-6)
