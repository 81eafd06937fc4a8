"""Pairwise distillation: closed forms, brute-force pair loops (all pairs and top-P), rax
cross-checks, masking, invariances, numerics, bounded memory and learning."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax
from jax.test_util import check_grads

from prerank_jax import metrics
from prerank_jax.batch import feature_sizes
from prerank_jax.losses import KD_LOSSES
from prerank_jax.losses.pairwise import ranknet_distill, soft_pairwise_distill
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points
from tests.learning import sweep_data, teacher_consistency

WEIGHTINGS = ("uniform", "teacher_gap", "delta_ndcg")


def _sig(x):
  return 1.0 / (1.0 + math.exp(-x))


def _inv_log2(r):
  return 1.0 / math.log2(1.0 + r)


def _order_ranks(x, idx):
  """1-based ranks by descending x among idx, ties by lower index."""
  order = sorted(idx, key=lambda i: (-x[i], i))
  return {i: r + 1 for r, i in enumerate(order)}


def _brute_ranknet(s, t, valid, *, T, weighting, top):
  """Independent pair loop over one batch [R, N] in plain Python."""
  per_list, has = [], []
  for sl, tl, vl in zip(s.tolist(), t.tolist(), valid.tolist()):
    idx = [i for i, v in enumerate(vl) if v]
    rho, sig = _order_ranks(tl, idx), _order_ranks(sl, idx)
    num = den = 0.0
    for i in idx:
      for j in idx:
        if not tl[i] > tl[j] or (top and rho[i] > top):
          continue
        if weighting == "uniform":
          w = 1.0
        elif weighting == "teacher_gap":
          w = abs(tl[i] - tl[j])
        else:
          w = (abs(_inv_log2(rho[i]) - _inv_log2(rho[j]))
               * abs(_inv_log2(sig[i]) - _inv_log2(sig[j])))
        num += w * math.log1p(math.exp(-(sl[i] - sl[j]) / T))
        den += w
    per_list.append(num / den if den > 0 else 0.0)
    has.append(den > 0)
  return sum(per_list) / max(sum(has), 1)


def _brute_soft(s, t, valid, *, T, top):
  per_list, has = [], []
  for sl, tl, vl in zip(s.tolist(), t.tolist(), valid.tolist()):
    idx = [i for i, v in enumerate(vl) if v]
    rho = _order_ranks(tl, idx)
    total, count = 0.0, 0
    for i in idx:
      for j in idx:
        if not rho[i] < rho[j] or (top and rho[i] > top):
          continue
        p, q = _sig((tl[i] - tl[j]) / T), _sig(sl[i] - sl[j])
        total += -(p * math.log(q) + (1 - p) * math.log(1 - q))
        count += 1
    per_list.append(total / count if count else 0.0)
    has.append(count > 0)
  return sum(per_list) / max(sum(has), 1)


def _case(seed=0, r=4, n=9):
  rng = np.random.default_rng(seed)
  s = rng.normal(size=(r, n))
  t = rng.normal(size=(r, n))
  t[0, 3] = t[0, 5]  # a teacher tie: no RankNet pair, ordered by index for soft pairs
  valid = np.ones((r, n), bool)
  valid[1, 6:] = False
  valid[2, 2] = False
  valid[3, 1:] = False  # a single valid candidate: no pair at all
  return s, t, valid


# --- closed forms ---------------------------------------------------------------------------


def test_ranknet_closed_form_all_weightings():
  s, t, T = [0.0, 1.0, -0.5], [2.0, 1.0, 0.0], 2.0
  pairs = [(0, 1), (0, 2), (1, 2)]
  ell = {p: math.log(1 + math.exp(-(s[p[0]] - s[p[1]]) / T)) for p in pairs}
  g = [_inv_log2(1), _inv_log2(2), _inv_log2(3)]          # teacher ranks 1, 2, 3
  d = [_inv_log2(2), _inv_log2(1), _inv_log2(3)]          # student ranks 2, 1, 3
  weights = {"uniform": {p: 1.0 for p in pairs},
             "teacher_gap": {(0, 1): 1.0, (0, 2): 2.0, (1, 2): 1.0},
             "delta_ndcg": {(i, j): abs(g[i] - g[j]) * abs(d[i] - d[j]) for i, j in pairs}}
  for name, w in weights.items():
    expected = sum(w[p] * ell[p] for p in pairs) / sum(w.values())
    got = ranknet_distill(jnp.array(s), jnp.array(t), where=jnp.ones(3, bool),
                          temperature=T, pairwise_weighting=name)
    assert float(got) == pytest.approx(expected, rel=1e-6), name


def test_soft_pairwise_closed_form():
  s, t, T = [0.0, 1.0, -0.5], [2.0, 1.0, 0.0], 0.5
  total = 0.0
  for i, j in [(0, 1), (0, 2), (1, 2)]:
    p, q = _sig((t[i] - t[j]) / T), _sig(s[i] - s[j])
    total += -(p * math.log(q) + (1 - p) * math.log(1 - q))
  got = soft_pairwise_distill(jnp.array(s), jnp.array(t), where=jnp.ones(3, bool),
                              temperature=T)
  assert float(got) == pytest.approx(total / 3, rel=1e-6)


def test_temperature_divides_only_the_student_difference_in_ranknet():
  s, t = jnp.array([0.3, -0.2]), jnp.array([5.0, 1.0])
  for T in (0.5, 3.0):
    got = ranknet_distill(s, t, where=jnp.ones(2, bool), temperature=T,
                          pairwise_weighting="teacher_gap")
    assert float(got) == pytest.approx(math.log1p(math.exp(-0.5 / T)), rel=1e-6)


# --- brute force: all pairs and top-P -------------------------------------------------------


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("top", [0, 1, 3, 8, 9, 20])
def test_ranknet_equals_brute_force_pair_loop(weighting, top):
  s, t, valid = _case()
  T = 0.7
  got = ranknet_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(valid),
                        temperature=T, pairwise_weighting=weighting, pairwise_top=top)
  expected = _brute_ranknet(s, t, valid, T=T, weighting=weighting, top=top)
  assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("top", [0, 1, 3, 8, 9, 20])
def test_soft_pairwise_equals_brute_force_pair_loop(top):
  s, t, valid = _case(1)
  got = soft_pairwise_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(valid),
                              temperature=2.5, pairwise_top=top)
  assert float(got) == pytest.approx(_brute_soft(s, t, valid, T=2.5, top=top), rel=1e-5)


def test_top_p_restricts_the_pairs():
  s, t, valid = _case(2)
  a = ranknet_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(valid), pairwise_top=2)
  b = ranknet_distill(jnp.asarray(s), jnp.asarray(t), where=jnp.asarray(valid))
  assert float(a) != pytest.approx(float(b), rel=1e-3)


# --- cross-checks against rax ---------------------------------------------------------------


def test_ranknet_uniform_matches_rax_pairwise_logistic_on_teacher_labels():
  # rax: mean over ALL valid pairs of the batch with labels_i > labels_j, no temperature.
  # Ours: per-list mean, then mean over lists. They agree when every list has the same
  # number of pairs (fully valid lists, distinct teacher scores); T is matched by s / T.
  rng = np.random.default_rng(3)
  s, t = jnp.asarray(rng.normal(size=(3, 6))), jnp.asarray(rng.normal(size=(3, 6)))
  where = jnp.ones((3, 6), bool)
  for T in (0.5, 2.0):
    ours = ranknet_distill(s, t, where=where, temperature=T)
    theirs = rax.pairwise_logistic_loss(s / T, t, where=where)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_ranknet_weighted_matches_rax_lambdaweights_on_one_list():
  # rax sums w·ℓ (reduce_fn=jnp.sum); ours divides by Σ w over the same pairs.
  # teacher_gap = rax.labeldiff_lambdaweight with labels = t.
  # delta_ndcg = rax.dcg_lambdaweight with labels = our teacher-rank gains 1/log2(1+ρ)
  # (identity gain_fn; same pairs since the gains decrease with t), discounts at the
  # student's ranks. rax scales its weights by the list size; the ratio cancels it.
  rng = np.random.default_rng(4)
  s, t = jnp.asarray(rng.normal(size=(1, 7))), jnp.asarray(rng.normal(size=(1, 7)))
  where = jnp.ones((1, 7), bool)
  gains = 1.0 / jnp.log2(1.0 + metrics.ranks(t).astype(jnp.float32))
  pair = (t[..., :, None] > t[..., None, :]).reshape(1, -1)  # rax flattens pairs to N·N
  cases = {"teacher_gap": (t, rax.labeldiff_lambdaweight),
           "delta_ndcg": (gains, lambda *a, **k: rax.dcg_lambdaweight(
               *a, gain_fn=lambda y: y, **k))}
  for name, (labels, lw) in cases.items():
    num = rax.pairwise_logistic_loss(s, labels, where=where, lambdaweight_fn=lw,
                                     reduce_fn=jnp.sum)
    den = jnp.sum(jnp.where(pair, lw(s, labels, where=where), 0.0))
    ours = ranknet_distill(s, t, where=where, pairwise_weighting=name)
    assert float(ours) == pytest.approx(float(num / den), rel=1e-5), name


# --- masking, invariances, numerics ---------------------------------------------------------

LOSSES = [(ranknet_distill, {"pairwise_weighting": w}) for w in WEIGHTINGS] + \
    [(soft_pairwise_distill, {})]
IDS = [f"ranknet-{w}" for w in WEIGHTINGS] + ["soft"]


@pytest.mark.parametrize("loss,kw", LOSSES, ids=IDS)
@pytest.mark.parametrize("top", [0, 2])
def test_padding_with_garbage_equals_slicing(loss, kw, top):
  rng = np.random.default_rng(5)
  s, t = jnp.asarray(rng.normal(size=(3, 5))), jnp.asarray(rng.normal(size=(3, 5)))
  pad_s = jnp.concatenate([s, jnp.full((3, 4), jnp.nan)], -1)
  pad_t = jnp.concatenate([t, jnp.array([[jnp.nan, jnp.inf, 1e30, -jnp.inf]] * 3)], -1)
  pad_w = jnp.concatenate([jnp.ones((3, 5), bool), jnp.zeros((3, 4), bool)], -1)
  f = lambda x: loss(x, t, where=jnp.ones((3, 5), bool), temperature=2.0,
                     pairwise_top=top, **kw)
  g = lambda x: loss(x, pad_t, where=pad_w, temperature=2.0, pairwise_top=top, **kw)
  np.testing.assert_allclose(f(s), g(pad_s), rtol=1e-6)
  grad_pad = jax.grad(g)(pad_s)
  np.testing.assert_allclose(jax.grad(f)(s), grad_pad[:, :5], rtol=1e-5, atol=1e-7)
  assert np.all(grad_pad[:, 5:] == 0)


@pytest.mark.parametrize("loss,kw", LOSSES, ids=IDS)
def test_permutation_invariance(loss, kw):
  rng = np.random.default_rng(6)
  s, t = jnp.asarray(rng.normal(size=8)), jnp.asarray(rng.normal(size=8))
  where = jnp.array([True] * 6 + [False] * 2)
  perm = jnp.asarray(rng.permutation(8))
  for top in (0, 3):
    a = loss(s, t, where=where, temperature=1.3, pairwise_top=top, **kw)
    b = loss(s[perm], t[perm], where=where[perm], temperature=1.3, pairwise_top=top, **kw)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


@pytest.mark.parametrize("loss,kw", LOSSES, ids=IDS)
def test_all_masked_gives_zero_and_finite_gradient(loss, kw):
  s, t = jnp.array([[1e4, -1e4, 3.0]]), jnp.array([[2.0, 1.0, 0.0]])
  for top in (0, 2):
    f = lambda x: loss(x, t, where=jnp.zeros((1, 3), bool), pairwise_top=top, **kw)
    assert float(f(s)) == 0.0
    assert np.all(np.isfinite(jax.grad(f)(s)))


@pytest.mark.parametrize("loss,kw", LOSSES, ids=IDS)
@pytest.mark.parametrize("T", [0.05, 1.0, 100.0])
def test_extreme_temperatures_and_logits_give_finite_grads(loss, kw, T):
  s = jnp.array([[1e4, -1e4, 3.0, 0.0]])
  t = jnp.array([[-1e4, 1e4, 0.0, 2.0]])
  where = jnp.array([[True, True, True, False]])
  value, grad = jax.value_and_grad(lambda x: loss(x, t, where=where, temperature=T, **kw))(s)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("loss,kw", LOSSES, ids=IDS)
def test_check_grads(loss, kw):
  with jax.enable_x64(True):
    # Well-separated scores, so the finite differences never cross a rank change.
    s = jnp.array([[0.3, -1.1, 2.0, 0.9, -0.4], [1.5, 0.2, -0.8, 0.0, 3.0]])
    t = jnp.array([[1.0, 0.0, -2.0, 0.5, 2.5], [-1.0, 0.7, 0.1, 2.0, 0.0]])
    where = jnp.array([[True] * 5, [True, True, True, True, False]])
    for top in (0, 2):
      check_grads(lambda x: loss(x, t, where=where, temperature=0.8, pairwise_top=top, **kw),
                  (s,), order=1, modes=("rev",))


def test_bad_options_are_errors():
  with pytest.raises(ValueError, match="pairwise_weighting"):
    ranknet_distill(jnp.zeros(3), jnp.zeros(3), where=jnp.ones(3, bool),
                    pairwise_weighting="lambda")
  with pytest.raises(ValueError, match="pairwise_top"):
    soft_pairwise_distill(jnp.zeros(3), jnp.zeros(3), where=jnp.ones(3, bool), pairwise_top=-1)


def test_top_p_keeps_memory_linear_in_the_list_size():
  n = 1000

  def temp_bytes(top):
    f = jax.jit(jax.grad(lambda x, y: ranknet_distill(
        x, y, where=jnp.ones((1, n), bool), pairwise_top=top)))
    spec = jax.ShapeDtypeStruct((1, n), jnp.float32)
    return f.lower(spec, spec).compile().memory_analysis().temp_size_in_bytes

  all_pairs, top10 = temp_bytes(0), temp_bytes(10)
  assert all_pairs >= n * n * 4          # at least one [N, N] float32 buffer
  assert top10 < n * n * 4 / 20          # nothing close to [N, N]


def test_registered():
  assert KD_LOSSES["ranknet_distill"].fn is ranknet_distill
  assert KD_LOSSES["ranknet_distill"].options == ("pairwise_weighting", "pairwise_top")
  assert KD_LOSSES["soft_pairwise_distill"].fn is soft_pairwise_distill
  assert KD_LOSSES["soft_pairwise_distill"].options == ("pairwise_top",)


# --- learning through the vmapped trainer -------------------------------------------------


@pytest.mark.parametrize("kd,options", [
    ("ranknet_distill", {"pairwise_weighting": "delta_ndcg"}),
    ("soft_pairwise_distill", {"pairwise_top": 5}),
])
def test_student_learns_from_the_teacher(tiny_splits, kd, options):
  from tests.conftest import load_config
  config = load_config()
  config.student.loss.kd = kd
  config.student.loss.options.update(options)
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
