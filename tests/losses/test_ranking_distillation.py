"""Ranking Distillation: weights against an independent re-implementation, closed form,
sampled rank estimate, masking, invariances, numerics, objective wiring and learning."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.stats import binom

from prerank_jax import metrics
from prerank_jax.batch import Batch, feature_sizes
from prerank_jax.losses import KD_LOSSES, make_objective
from prerank_jax.losses.ranking_distillation import (position_weights, ranking_distillation,
                                                     ranking_distillation_weights,
                                                     sampled_ranks)
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import sweep_data, teacher_consistency


def _reference(s, t, valid, labels, exposed, *, K, lam, mu, step, warmup):
  """Independent plain-Python RD from the formulas: (weights [R, N], mean loss)."""
  weights = np.zeros(s.shape)
  losses, lists = 0.0, 0
  for l in range(s.shape[0]):
    idx = [i for i in range(s.shape[1]) if valid[l, i]]
    gt = {i for i in idx if exposed[l, i] and labels[l, i] > 0}
    pool = sorted((i for i in idx if i not in gt), key=lambda i: (-t[l, i], i))
    student = sorted(pool, key=lambda i: (-s[l, i], i))  # r̂ over the same pool as r
    student_rank = {i: r + 1 for r, i in enumerate(student)}
    k = int(math.floor(K))
    z = sum(math.exp(-r / lam) for r in range(1, k + 1))
    for r, i in enumerate(pool[:k], start=1):
      w_a = math.exp(-r / lam) / z
      w_b = max(0.0, math.tanh(mu * (student_rank[i] - r)))
      weights[l, i] = w_a * w_b if step >= warmup else w_a
    if idx:
      lists += 1
      losses += sum(weights[l, i] * -math.log(1 / (1 + math.exp(-s[l, i]))) for i in idx)
  return weights, losses / max(lists, 1)


def _case(seed=0, r=5, n=12):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(r, n))
  t = rng.normal(size=(r, n))
  valid = np.ones((r, n), bool)
  valid[1, 8:] = False
  valid[2, ::3] = False
  exposed = np.zeros((r, n), bool)
  exposed[:, :4] = True
  labels = np.where(exposed, rng.integers(0, 3, (r, n)), 0).astype(np.float64)
  if r > 4:
    valid[4, 2:] = False      # two valid candidates: fewer than K in the pool,
    labels[4, :2] = 1.0       # and both are GT positives: nothing to distil
  return s, t, valid, labels, exposed


def _call(fn, s, t, valid, labels, exposed, **kw):
  return fn(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(valid),
            labels=jnp.asarray(labels), exposed=jnp.asarray(valid & exposed), **kw)


@pytest.mark.parametrize("K,lam,mu,step,warmup", [
    (3.0, 1.0, 0.1, 0, 0.0),
    (5.0, 0.5, 1.0, 7, 7.0),       # step == warmup: hybrid is on
    (5.0, 2.0, 1.0, 6, 7.0),       # before the warm-up: w^a only
    (4.7, 1e3, 0.3, 100, 10.0),    # non-integer K is floored; nearly flat w^a
    (20.0, 1e-2, 5.0, 1, 0.0),     # K larger than every pool; sharp w^a
    (1.0, 1.0, 0.0, 3, 0.0),       # μ = 0 switches the term off after warm-up
])
def test_weights_and_loss_match_independent_reimplementation(K, lam, mu, step, warmup):
  s, t, valid, labels, exposed = _case()
  ref_w, ref_loss = _reference(s, t, valid, labels, exposed, K=K, lam=lam, mu=mu,
                               step=step, warmup=warmup)
  kw = dict(step=jnp.int32(step), rd_topk=K, rd_lambda=lam, rd_mu=mu, rd_warmup_steps=warmup)
  w = _call(ranking_distillation_weights, s, t, valid, labels, exposed, **kw)
  np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-7)
  loss = _call(ranking_distillation, s, t, valid, labels, exposed, **kw)
  assert float(loss) == pytest.approx(ref_loss, rel=1e-5, abs=1e-7)


def test_closed_form_small_list():
  # t orders the candidates 0 > 1 > 2 > 3 > 4; candidate 0 is a GT positive and excluded,
  # so the teacher positions are 1 -> r=1, 2 -> r=2 (K=2). Within the same pool
  # {1, 2, 3, 4} the student ranks them 4th and 1st.
  s = [3.0, -1.0, 4.0, 0.5, 2.0]
  t = [5.0, 4.0, 3.0, 2.0, 1.0]
  labels, exposed = [1.0, 0.0, 0.0, 0.0, 0.0], [True, True, False, False, False]
  lam, mu = 1.0, 0.5
  z = math.exp(-1) + math.exp(-2)
  w1 = math.exp(-1) / z * max(0.0, math.tanh(mu * (4 - 1)))
  w2 = math.exp(-2) / z * max(0.0, math.tanh(mu * (1 - 2)))   # = 0: already above
  expected = w1 * math.log(1 + math.exp(1.0)) + w2 * math.log(1 + math.exp(-4.0))
  got = ranking_distillation(jnp.array(s), jnp.array(t), where=jnp.ones(5, bool),
                             labels=jnp.array(labels), exposed=jnp.array(exposed),
                             rd_topk=2.0, rd_lambda=lam, rd_mu=mu)
  assert float(got) == pytest.approx(expected, rel=1e-6)
  # Before the warm-up only the position weights apply, and they sum to 1.
  w = ranking_distillation_weights(jnp.array(s), jnp.array(t), where=jnp.ones(5, bool),
                                   labels=jnp.array(labels), exposed=jnp.array(exposed),
                                   step=0, rd_topk=2.0, rd_warmup_steps=5.0)
  np.testing.assert_allclose(w, [0, math.exp(-1) / z, math.exp(-2) / z, 0, 0], rtol=1e-6)


def test_position_weights_closed_form_is_stable():
  r = jnp.arange(1, 11)
  for lam in (1e-3, 0.3, 1.0, 7.0, 1e6):
    w = position_weights(r, topk=10.0, lam=lam)
    direct = np.exp(-np.arange(1, 11) / lam)
    direct = direct / direct.sum() if np.isfinite(direct).all() and direct.sum() > 0 else None
    assert np.all(np.isfinite(w)) and float(jnp.sum(w)) == pytest.approx(1.0, rel=1e-5)
    if direct is not None:
      np.testing.assert_allclose(w, direct, rtol=1e-4, atol=1e-30)


def test_gradient_is_weighted_log_sigmoid_with_stopped_weights():
  s, t, valid, labels, exposed = _case(1)
  kw = dict(step=jnp.int32(3), rd_topk=4.0, rd_lambda=2.0, rd_mu=0.5)
  w = _call(ranking_distillation_weights, s, t, valid, labels, exposed, **kw)
  f = lambda x: ranking_distillation(x, jnp.asarray(t), where=jnp.asarray(valid),
                                     labels=jnp.asarray(labels),
                                     exposed=jnp.asarray(valid & exposed), **kw)
  lists = np.sum(np.any(valid, -1))
  expected = -np.asarray(w) * (1 - 1 / (1 + np.exp(-s))) / lists  # d softplus(-s) = -σ(-s)
  np.testing.assert_allclose(jax.grad(f)(jnp.asarray(s)), expected, rtol=1e-5, atol=1e-8)


# --- the sampled rank estimate --------------------------------------------------------------


def test_sampled_ranks_draw_only_from_the_pool():
  # Slots outside the pool hold a higher (masked-to-0) score than every pool member: the
  # pool's top candidate can only get rank 1 if they are never drawn.
  s = jnp.array([[-1.0, -3.0, 0.0, -2.0, 0.0], [-1.0, -2.0, 0.0, 0.0, 0.0]])
  where = jnp.array([[True, True, False, True, False], [True, True, False, False, False]])
  for seed in range(5):
    r = sampled_ranks(s, where=where, rng=jax.random.key(seed), num_samples=16)
    assert float(r[0, 0]) == 1.0 and float(r[1, 0]) == 1.0
    # Rank 1 + floor(|pool|·c/n) with 0 ≤ c ≤ n: never past |pool| + 1.
    assert 1.0 <= float(r[0, 1]) <= 4.0 and 1.0 <= float(r[1, 1]) <= 3.0


def test_sampled_ranks_follow_the_reference_formula():
  # The reference (distill_caser.py): predicted_rank = floor(N · #(sample > s_i) / n),
  # samples uniform with replacement from the pool; here 1-based. Same draws as the
  # implementation: randint(key, [R, N, n], 0, |pool|) indexes the pool in index order.
  rng = np.random.default_rng(7)
  s = rng.normal(size=(2, 9)).astype(np.float32)
  pool = np.ones((2, 9), bool)
  pool[0, [1, 4]] = False
  pool[1, 6:] = False
  key, n = jax.random.key(4), 13
  got = np.asarray(sampled_ranks(jnp.asarray(s), where=jnp.asarray(pool), rng=key,
                                 num_samples=n))
  sizes = pool.sum(-1)
  u = np.asarray(jax.random.randint(key, (2, 9, n), 0, sizes[:, None, None]))
  for l in range(2):
    members = np.flatnonzero(pool[l])
    for i in np.flatnonzero(pool[l]):
      drawn = s[l, members[u[l, i]]]
      higher = int(np.sum(drawn > s[l, i]))
      assert got[l, i] == 1 + math.floor(sizes[l] * higher / n)


def _sampled_rank_moments(higher: int, pool: int, n: int) -> tuple[float, float]:
  """Exact mean and variance of r̂ = 1 + floor(pool·c/n), c ~ Binomial(n, higher/pool)."""
  c = np.arange(n + 1)
  pmf = binom.pmf(c, n, higher / pool)
  values = 1.0 + (pool * c) // n
  mean = float(np.sum(pmf * values))
  return mean, float(np.sum(pmf * (values - mean) ** 2))


def test_sampled_ranks_mean_within_its_standard_error_and_deterministic():
  """Each estimate's mean over K draws is within 5 standard errors of its exact mean (from
  the binomial law of the count, scipy.stats.binom), and that exact mean is the exact rank
  minus the floor's bias in (-1, 0]."""
  rng = np.random.default_rng(2)
  s = jnp.asarray(rng.normal(size=(2, 15)), jnp.float32)   # no ties
  where = jnp.asarray(np.arange(15) < np.array([[15], [9]]))
  exact = np.asarray(metrics.ranks(s, where=where))
  num_draws, n = 400, 10
  keys = jax.random.split(jax.random.key(0), num_draws)
  est = np.asarray(jax.vmap(lambda k: sampled_ranks(s, where=where, rng=k, num_samples=n))(keys))
  pools = np.asarray(where).sum(-1)
  for l, i in zip(*np.nonzero(np.asarray(where))):
    higher = int(exact[l, i]) - 1
    mean, var = _sampled_rank_moments(higher, int(pools[l]), n)
    assert -1.0 < mean - exact[l, i] <= 0.0, (l, i)
    # 5 standard errors: a false alarm has probability ~6e-7 per candidate.
    tol = 5.0 * math.sqrt(var / num_draws)
    assert abs(est[:, l, i].mean() - mean) <= tol, (l, i, est[:, l, i].mean(), mean, tol)
  again = sampled_ranks(s, where=where, rng=keys[3], num_samples=10)
  np.testing.assert_array_equal(again, est[3])
  one = sampled_ranks(s, where=where.at[1].set(jnp.arange(15) == 4), rng=keys[0],
                      num_samples=10)
  assert float(one[1, 4]) == 1.0   # a single pool member has rank 1


def test_sampled_estimate_converges_to_exact_loss_and_needs_rng():
  s, t, valid, labels, exposed = _case(3)
  kw = dict(step=jnp.int32(1), rd_topk=4.0, rd_lambda=1.0, rd_mu=2.0)
  exact = _call(ranking_distillation, s, t, valid, labels, exposed, **kw)
  sampled = _call(ranking_distillation, s, t, valid, labels, exposed,
                  rd_rank_estimate="sampled", rd_num_rank_samples=20_000,
                  rng=jax.random.key(1), **kw)
  assert float(sampled) == pytest.approx(float(exact), rel=0.05)
  with pytest.raises(ValueError, match="rng"):
    _call(ranking_distillation, s, t, valid, labels, exposed,
          rd_rank_estimate="sampled", **kw)
  with pytest.raises(ValueError, match="rd_rank_estimate"):
    _call(ranking_distillation, s, t, valid, labels, exposed, rd_rank_estimate="approx")


# --- masking, invariances, numerics ---------------------------------------------------------


@pytest.mark.parametrize("estimate", ["exact", "sampled"])
def test_padding_with_garbage_equals_slicing(estimate):
  s, t, _, labels, exposed = _case(4, r=3, n=6)
  valid = np.ones((3, 6), bool)
  nan = np.full((3, 4), np.nan)
  pad = lambda x, fill: jnp.asarray(np.concatenate([x, fill], -1))
  pad_valid = pad(valid, np.zeros((3, 4), bool))
  kw = dict(step=jnp.int32(2), rd_topk=3.0, rd_mu=0.7, rd_rank_estimate=estimate,
            rd_num_rank_samples=4096, rng=jax.random.key(0))
  f = lambda x: ranking_distillation(x, jnp.asarray(t), where=jnp.asarray(valid),
                                     labels=jnp.asarray(labels),
                                     exposed=jnp.asarray(exposed), **kw)
  g = lambda x: ranking_distillation(x, pad(t, nan), where=pad_valid,
                                     labels=pad(labels, nan),
                                     exposed=pad(exposed, np.ones((3, 4), bool)) & pad_valid,
                                     **kw)
  pad_s = pad(s, nan)
  if estimate == "exact":   # the sampled draw depends on the padded shape
    np.testing.assert_allclose(f(jnp.asarray(s)), g(pad_s), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f)(jnp.asarray(s)), jax.grad(g)(pad_s)[:, :6],
                               rtol=1e-5, atol=1e-8)
  value, grad = jax.value_and_grad(g)(pad_s)
  assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(grad[:, 6:] == 0)


def test_permutation_invariance():
  s, t, valid, labels, exposed = _case(5)
  perm = np.random.default_rng(0).permutation(s.shape[1])
  kw = dict(step=jnp.int32(4), rd_topk=5.0, rd_lambda=3.0, rd_mu=0.4)
  a = _call(ranking_distillation, s, t, valid, labels, exposed, **kw)
  b = _call(ranking_distillation, s[:, perm], t[:, perm], valid[:, perm], labels[:, perm],
            exposed[:, perm], **kw)
  assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_all_masked_gives_zero_and_finite_gradient():
  s, t = jnp.array([[1e4, -1e4, 3.0]]), jnp.array([[2.0, 1.0, 0.0]])
  none = jnp.zeros((1, 3), bool)
  for estimate in ("exact", "sampled"):
    f = lambda x: ranking_distillation(x, t, where=none, labels=jnp.ones((1, 3)),
                                       exposed=none, rd_rank_estimate=estimate,
                                       rng=jax.random.key(0))
    assert float(f(s)) == 0.0
    assert np.all(np.isfinite(jax.grad(f)(s)))


@pytest.mark.parametrize("lam,mu", [(1e-3, 0.0), (1.0, 0.1), (1e6, 1e4)])
def test_extreme_logits_and_hyperparameters_give_finite_grads(lam, mu):
  s = jnp.array([[1e4, -1e4, 3.0, 0.0, -5.0]])
  t = jnp.array([[-1e4, 1e4, 0.0, 2.0, 1.0]])
  where = jnp.array([[True, True, True, True, False]])
  for estimate in ("exact", "sampled"):
    value, grad = jax.value_and_grad(lambda x: ranking_distillation(
        x, t, where=where, labels=jnp.zeros((1, 5)), exposed=jnp.zeros((1, 5), bool),
        rd_topk=1000.0, rd_lambda=lam, rd_mu=mu, rd_rank_estimate=estimate,
        rng=jax.random.key(0)))(s)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_check_grads():
  with jax.enable_x64(True):
    s, t, valid, labels, exposed = _case(6, r=3, n=6)
    kw = dict(where=jnp.asarray(valid), labels=jnp.asarray(labels),
              exposed=jnp.asarray(valid & exposed), step=jnp.int32(1), rd_topk=3.0,
              rd_mu=0.5)
    check_grads(lambda x: ranking_distillation(x, jnp.asarray(t), **kw),
                (jnp.asarray(s),), order=1, modes=("rev",))


def test_hyperparameters_are_traced_one_program_for_a_sweep():
  s, t, valid, labels, exposed = _case(7)
  traces = []

  @jax.jit
  def loss(k, lam, mu, warmup, step):
    traces.append(1)
    return _call(ranking_distillation, s, t, valid, labels, exposed, step=step, rd_topk=k,
                 rd_lambda=lam, rd_mu=mu, rd_warmup_steps=warmup)

  grid = [(2.0, 0.5, 0.1, 0.0, 0), (7.0, 3.0, 1.0, 5.0, 2), (1000.0, 1.0, 0.2, 1.0, 9)]
  for k, lam, mu, warmup, step in grid:
    got = loss(jnp.float32(k), jnp.float32(lam), jnp.float32(mu), jnp.float32(warmup),
               jnp.int32(step))
    _, expected = _reference(s, t, valid, labels, exposed, K=k, lam=lam, mu=mu, step=step,
                             warmup=warmup)
    assert float(got) == pytest.approx(expected, rel=1e-5)
  assert len(traces) == 1


def test_objective_passes_labels_exposed_step_and_rng():
  rng = np.random.default_rng(8)
  r, n = 3, 7
  exposed = np.zeros((r, n), bool)
  exposed[:, :3] = True
  batch = Batch(context=jnp.zeros((r, 2)), items=jnp.zeros((r, n, 2)),
                cross=jnp.zeros((r, n, 1)),
                label=jnp.asarray(exposed * rng.integers(0, 2, (r, n)), jnp.float32),
                exposed=jnp.asarray(exposed), valid=jnp.ones((r, n), bool),
                teacher_scores=jnp.asarray(rng.normal(size=(r, n, 1)), jnp.float32))
  s = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  hp = {"alpha": jnp.float32(1.0), "rd_topk": jnp.float32(3.0), "rd_lambda": jnp.float32(1.0),
        "rd_mu": jnp.float32(0.5), "rd_warmup_steps": jnp.float32(2.0)}
  direct = lambda step: ranking_distillation(
      s, batch.teacher_scores[..., 0], where=batch.valid, labels=batch.label,
      exposed=batch.exposed, step=step, rd_topk=3.0, rd_mu=0.5, rd_warmup_steps=2.0)
  objective = make_objective(kd="ranking_distillation", gt="bce")
  for step in (0, 5):
    got = objective(s, batch, hp, step=jnp.int32(step), rng=jax.random.key(0))
    assert float(got) == pytest.approx(float(direct(step)), rel=1e-6)
  assert float(direct(0)) != pytest.approx(float(direct(5)), rel=1e-3)  # warm-up matters
  sampled = make_objective(kd="ranking_distillation", gt="bce",
                           options={"rd_rank_estimate": "sampled", "rd_num_rank_samples": 8})
  assert np.isfinite(float(sampled(s, batch, hp, step=jnp.int32(5), rng=jax.random.key(0))))
  with pytest.raises(ValueError, match="rd_rank_estimate"):
    make_objective(kd="ranking_distillation", gt="bce", options={"rd_rank_estimate": "x"})


def test_registered():
  spec = KD_LOSSES["ranking_distillation"]
  assert spec.fn is ranking_distillation
  assert spec.hparams == ("rd_topk", "rd_lambda", "rd_mu", "rd_warmup_steps")
  assert set(spec.needs) == {"labels", "exposed", "step", "rng"}
  assert spec.options == ("rd_rank_estimate", "rd_num_rank_samples")


# --- learning through the vmapped trainer -------------------------------------------------


@pytest.mark.parametrize("estimate", ["exact", "sampled"])
def test_student_learns_from_the_teacher(tiny_splits, estimate):
  # RD has no negatives of its own (as in the paper, the GT term supplies them), so it is
  # trained mixed with the GT loss (α = 0.5 is the paper's α_paper = 1), next to a
  # GT-only point (α = 0) in the same vmapped program.
  from tests.conftest import load_config
  config = load_config()
  config.student.loss.kd = "ranking_distillation"
  config.student.loss.options.update(rd_rank_estimate=estimate, rd_num_rank_samples=8)
  config.student.num_epochs = 12
  config.student.batch_size = 8
  train = tiny_splits["train"]
  data = sweep_data(tiny_splits, noise=0.3)
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  compiled = compile_sweep(trainer)
  points = grid_points({"alpha": (0.5,), "rd_topk": (2.0, 4.0), "learning_rate": (3e-3,)},
                       seed=0)
  points += grid_points({"alpha": (0.0,), "learning_rate": (3e-3,)}, seed=0)
  hparams, rngs = stack_points(points)
  state, hist = compiled.train(hparams, rngs, data)
  before = _tc(compiled.apply(compiled.init(hparams, rngs).params,
                                               data.valid), data.valid)
  after = np.asarray(_tc(compiled.apply(state.params, data.valid),
                                          data.valid))
  assert not np.any(state.diverged)
  assert np.all(np.asarray(hist["loss"][:, -1]) < np.asarray(hist["loss"][:, 0]))
  assert np.all(after[:2] > np.asarray(before)[:2]), (before, after)
  assert np.mean(after[:2]) > after[2], after   # distilled points beat the GT-only point


def _tc(scores, batch):
  """R@(3, 25%) on the valid split, per sweep point."""
  return teacher_consistency(scores, batch, k=3, keep_ratio=0.25)
