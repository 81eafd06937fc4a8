"""Reference-exact loss forms against independent NumPy implementations.

Each reference below is written here from the paper's or the released code's formula
(cited per test), in float64 NumPy, never by calling the code under test; inputs are
fixed, and values agree to 1e-6 relative unless a test says why not.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.losses import KD_LOSSES, STATIC_OPTIONS
from prerank_jax.losses.distill import hinton_listwise_kd, hinton_pointwise_kd
from prerank_jax.losses.listnet import listnet_distill


# --- Hinton KD (distill.py): accurate and non-negative in float32 up to T = 100 -------

def _kl_float64(s: np.ndarray, t: np.ndarray, T: float) -> np.ndarray:
  """T²·KL(softmax(t/T) ‖ softmax(s/T)) per row in float64 (Hinton et al. 2015).

  log p − log q = −δ + log(Z_s/Z_t) with δ = (s − t)/T and Z_s/Z_t = Σ_j p_j e^{δ_j};
  the log-ratio is taken as log1p(Σ p·expm1(δ)) so that the float64 reference itself
  does not lose the tiny KL of T = 100 to cancellation between two log-normalisers.
  """
  s, t = s.astype(np.float64), t.astype(np.float64)
  z = t / T - np.max(t / T, axis=-1, keepdims=True)
  p = np.exp(z) / np.sum(np.exp(z), axis=-1, keepdims=True)
  delta = (s - t) / T
  log_ratio = np.log1p(np.sum(p * np.expm1(delta), axis=-1, keepdims=True))
  return T * T * np.sum(p * (log_ratio - delta), axis=-1)


@pytest.mark.parametrize("T", [1.0, 10.0, 50.0, 100.0])
@pytest.mark.parametrize("gap", [1e-3, 1e-1, 1.0, 5.0])
def test_hinton_listwise_is_accurate_and_nonnegative_in_float32(T, gap):
  rng = np.random.default_rng(int(T) * 7 + int(gap * 1000))
  t = (3.0 * rng.normal(size=(8, 50))).astype(np.float32)
  s = (t + gap * rng.normal(size=(8, 50))).astype(np.float32)
  got = np.asarray(hinton_listwise_kd(jnp.asarray(s), jnp.asarray(t),
                                      where=jnp.ones((8, 50), bool), temperature=T,
                                      reduce_fn=None))
  assert got.dtype == np.float32
  assert np.all(got >= 0.0)
  np.testing.assert_allclose(got, _kl_float64(s, t, T), rtol=1e-6)


def test_hinton_listwise_near_zero_kl_is_never_negative():
  # The textbook Σ p (log p − log q) in float32 gives about −2e-3 here at T = 100.
  rng = np.random.default_rng(0)
  t = (3.0 * rng.normal(size=(64, 50))).astype(np.float32)
  s = (t + 1e-3 * rng.normal(size=(64, 50))).astype(np.float32)
  for T in (10.0, 50.0, 100.0):
    got = np.asarray(hinton_listwise_kd(jnp.asarray(s), jnp.asarray(t),
                                        where=jnp.ones(s.shape, bool), temperature=T,
                                        reduce_fn=None))
    assert np.all(got >= 0.0) and np.all(np.isfinite(got))
  same = hinton_listwise_kd(jnp.asarray(t), jnp.asarray(t), where=jnp.ones(t.shape, bool),
                            temperature=100.0, reduce_fn=None)
  assert np.all(np.asarray(same) == 0.0)


def test_hinton_listwise_extreme_logits_match_float64_and_gradient_is_q_minus_p():
  where = jnp.ones(3, bool)
  for s, t in [([0.0, 200.0, 1.0], [0.0, -200.0, 1.0]), ([1e4, -1e4, 3.0], [2.0, 1.0, 0.0]),
               ([-300.0, 0.0, 0.0], [300.0, 0.0, 0.0]), ([5.0, 0.0, 0.0], [0.0, 0.0, 0.0])]:
    s32, t32 = np.asarray(s, np.float32), np.asarray(t, np.float32)
    f = lambda x: hinton_listwise_kd(x, jnp.asarray(t32), where=where, temperature=2.0)
    # Large KL: the textbook float64 form has no cancellation problem here.
    z_t, z_s = t32.astype(np.float64) / 2.0, s32.astype(np.float64) / 2.0
    log_p = z_t - z_t.max() - np.log(np.sum(np.exp(z_t - z_t.max())))
    log_q = z_s - z_s.max() - np.log(np.sum(np.exp(z_s - z_s.max())))
    p, q = np.exp(log_p), np.exp(log_q)
    ref = 4.0 * np.sum(p * (log_p - log_q))
    assert float(f(jnp.asarray(s32))) == pytest.approx(ref, rel=1e-6)
    grad = np.asarray(jax.grad(f)(jnp.asarray(s32)), np.float64)
    np.testing.assert_allclose(grad, 2.0 * (q - p), atol=1e-6)  # T²·(q − p)/T


@pytest.mark.parametrize("loss", ["hinton_listwise", "hinton_pointwise", "listnet_distill"])
def test_kd_temperature_squared_option_drops_exactly_the_t_squared_factor(loss):
  assert STATIC_OPTIONS["kd_temperature_squared"].default is True
  spec = KD_LOSSES[loss]
  assert "kd_temperature_squared" in spec.options
  rng = np.random.default_rng(5)
  s = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  where = jnp.ones((3, 6), bool)
  for T in (0.5, 4.0):
    with_t2 = spec.fn(s, t, where=where, temperature=T)
    without = spec.fn(s, t, where=where, temperature=T, kd_temperature_squared=False)
    assert float(with_t2) == pytest.approx(T * T * float(without), rel=1e-6)
  with pytest.raises(ValueError, match="kd_temperature_squared"):
    spec.fn(s, t, where=where, temperature=2.0, kd_temperature_squared="no")
  with pytest.raises(ValueError, match="kd_temperature_squared"):
    STATIC_OPTIONS["kd_temperature_squared"].check("yes", "loss.options.kd_temperature_squared")


def test_pointwise_and_listnet_without_t_squared_match_numpy():
  s = np.array([[0.5, -1.0, 2.0]], np.float32)
  t = np.array([[1.0, 0.0, -0.5]], np.float32)
  where = jnp.ones((1, 3), bool)
  T = 3.0
  p = 1.0 / (1.0 + np.exp(-t.astype(np.float64) / T))
  x = s.astype(np.float64) / T
  bce = np.mean(np.logaddexp(0.0, x) - p * x)
  got = hinton_pointwise_kd(jnp.asarray(s), jnp.asarray(t), where=where, temperature=T,
                            kd_temperature_squared=False)
  assert float(got) == pytest.approx(bce, rel=1e-6)
  pl = np.exp(t / T) / np.sum(np.exp(t / T))
  log_q = x - np.log(np.sum(np.exp(x)))
  ce = -np.sum(pl * log_q)
  got = listnet_distill(jnp.asarray(s), jnp.asarray(t), where=where, temperature=T,
                        kd_temperature_squared=False)
  assert float(got) == pytest.approx(ce, rel=1e-6)


# --- RankFlow (cascade.py): the released code's clipping and log guard ----------------

def _release_logit_float32(x):
  """``torch.logit(torch.sigmoid(x), eps=1e-6)`` as the released code evaluates it on
  float32 tensors, emulated in NumPy float32: p = σ(x) rounded to float32, clamped to
  [fl32(1e-6), fl32(1 − 1e-6)], then log(p/(1 − p)) in float32. Near p = 1 the float32
  grid (spacing 6e-8) is coarse: the upper clip lands at log(u/(1 − u)) ≈ 13.8023 for
  u = fl32(1 − 1e-6), and large logits come back rounded."""
  x = np.asarray(x, np.float32)
  one = np.float32(1.0)
  p = (one / (one + np.exp(-x))).astype(np.float32)
  p = np.clip(p, np.float32(1e-6), np.float32(1.0 - 1e-6))
  return np.log(p / (one - p)).astype(np.float32)


def _rankflow_reference(s, t, k, alpha, use_logit, *, release_float32=False):
  """RankFlow's student loss per the released code (github.com/qinjr/RankFlow):
  ``alpha·TopKLoss + (1 − alpha)·MSELoss``, on σ outputs, or, with ``use_logit``, on
  ``torch.logit(p, eps=1e-6)`` = log(p/(1 − p)) of p clamped to [1e-6, 1 − 1e-6].
  TopKLoss: sort by teacher descending, Δ = mean(top k) − mean(rest),
  −log(1e-10 + σ(Δ)), mean over lists; MSELoss: mean over every item.

  The clamp and the logit are evaluated in float64 (our variant: a symmetric clip at
  ±13.8155), or with ``release_float32`` in float32 as the release does
  (:func:`_release_logit_float32`); everything after them is float64."""
  pred_s = 1.0 / (1.0 + np.exp(-np.asarray(s, np.float64)))
  pred_t = 1.0 / (1.0 + np.exp(-np.asarray(t, np.float64)))
  if use_logit and release_float32:
    pred_s = _release_logit_float32(s).astype(np.float64)
    pred_t = _release_logit_float32(t).astype(np.float64)
  elif use_logit:
    pred_s = np.clip(pred_s, 1e-6, 1.0 - 1e-6)
    pred_t = np.clip(pred_t, 1e-6, 1.0 - 1e-6)
    pred_s, pred_t = np.log(pred_s / (1 - pred_s)), np.log(pred_t / (1 - pred_t))
  idx = np.argsort(-pred_t, axis=1, kind="stable")
  sorted_s = np.take_along_axis(pred_s, idx, axis=1)
  delta = sorted_s[:, :k].mean(1) - sorted_s[:, k:].mean(1)
  topk = np.mean(-np.log(1e-10 + 1.0 / (1.0 + np.exp(-delta))))
  mse = np.mean((pred_s - pred_t) ** 2)
  return alpha * topk + (1 - alpha) * mse


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_rankflow_matches_the_released_formula_clipped_in_float64(space):
  """Our variant: the released formula with the logit clip evaluated exactly (float64);
  its difference from the release's float32 clip is the next test's."""
  from prerank_jax.losses.cascade import rankflow_loss
  rng = np.random.default_rng(11)
  # Logits far beyond the clip (±40) as well as ordinary ones; distinct teacher scores.
  s = np.concatenate([rng.normal(size=(4, 6)) * 3, rng.choice([-40.0, 40.0], (4, 2))], 1)
  t = np.concatenate([rng.normal(size=(4, 6)) * 3, np.array([[30.0, -25.0]] * 4)], 1)
  s, t = s.astype(np.float32), t.astype(np.float32)
  for k, alpha in [(2, 0.5), (3, 0.3), (5, 1.0)]:
    got = rankflow_loss(jnp.asarray(s), jnp.asarray(t), where=jnp.ones(s.shape, bool),
                        rankflow_topk=float(k), rankflow_beta=alpha, rankflow_space=space)
    ref = _rankflow_reference(s, t, k, alpha, space == "logit")
    assert float(got) == pytest.approx(ref, rel=1e-6)


def test_rankflow_logit_mode_differs_from_the_float32_release_only_as_listed():
  """Our ``"logit"`` mode clips exactly at ±L (L = 13.8155, float64 reference above); the
  released code clamps σ(x) in float32, whose grid near 1 is coarse. The differences
  listed in docs/reference/references.md, against the float32 emulation
  :func:`_release_logit_float32`:

  1. per logit: equal up to float32 rounding for x ≤ 0; within 1e-3 for 0 < x ≤ 9;
     within 0.06 for 9 < x ≤ L (σ(x) rounded to the float32 grid);
  2. beyond the clip: the release's upper bound is 13.8023 (ours 13.8155); the lower bound
     is −13.8155 in both;
  3. the loss: for logits within ±9 both agree to 5e-5 relative; with logits beyond the
     clip they differ (about 0.1 % in the case here), and the upper bound alone explains
     it: our loss with its upper clip moved to 13.8023 agrees with the release to 5e-5.
  """
  from prerank_jax.losses.cascade import RANKFLOW_LOGIT_CLIP, rankflow_loss
  big_l = RANKFLOW_LOGIT_CLIP
  x = np.linspace(-40.0, 40.0, 16001).astype(np.float32)
  ours = np.clip(x.astype(np.float64), -big_l, big_l)
  release = _release_logit_float32(x).astype(np.float64)
  diff = np.abs(release - ours)
  assert diff[x <= 0].max() < 2e-6
  assert diff[(x > 0) & (x <= 9)].max() < 1e-3
  assert 1e-3 < diff[(x > 9) & (x <= big_l)].max() < 0.06
  u = np.float64(np.float32(1.0 - 1e-6))
  upper = float(np.log(u / (1.0 - u)))
  assert upper == pytest.approx(13.8023, abs=1e-4) and big_l == pytest.approx(13.8155,
                                                                              abs=1e-4)
  np.testing.assert_allclose(release[x > 14], upper, atol=1e-5)
  np.testing.assert_allclose(release[x < -14], -big_l, atol=1e-5)

  rng = np.random.default_rng(11)
  s = np.concatenate([rng.normal(size=(4, 6)) * 3, rng.choice([-40.0, 40.0], (4, 2))], 1)
  t = np.concatenate([rng.normal(size=(4, 6)) * 3, np.array([[30.0, -25.0]] * 4)], 1)
  s, t = s.astype(np.float32), t.astype(np.float32)
  within = lambda a: np.clip(a, -9.0, 9.0)
  for k, alpha in [(2, 0.5), (3, 0.3), (5, 1.0), (3, 0.0)]:
    loss = lambda a, b: float(rankflow_loss(
        jnp.asarray(a), jnp.asarray(b), where=jnp.ones(a.shape, bool),
        rankflow_topk=float(k), rankflow_beta=alpha, rankflow_space="logit"))
    release_ref = lambda a, b: _rankflow_reference(a, b, k, alpha, True,
                                                   release_float32=True)
    assert loss(within(s), within(t)) == pytest.approx(
        release_ref(within(s), within(t)), rel=5e-5)
    got, want = loss(s, t), release_ref(s, t)
    assert 3e-4 < abs(got - want) / want < 2e-3, (got, want)
    moved = lambda a: np.clip(a.astype(np.float64), -big_l, upper)
    assert _rankflow_reference(moved(s), moved(t), k, alpha, True) == pytest.approx(
        want, rel=5e-5)


def test_rankflow_logit_mode_clips_and_keeps_the_log_guard():
  from prerank_jax.losses.cascade import rankflow_loss
  # Teacher top-2 get student logits −30, the rest +30: both clip to ∓13.8155, so
  # Δ = −27.631 and σ(Δ) = 1e-12; the released guard gives −log(1e-10 + 1e-12) ≈ 23.0,
  # not −log σ(Δ) ≈ 27.6.
  s = jnp.array([[-30.0, -30.0, 30.0, 30.0]])
  t = jnp.array([[3.0, 2.0, 1.0, 0.0]])
  f = lambda x: rankflow_loss(x, t, where=jnp.ones((1, 4), bool), rankflow_topk=2.0,
                              rankflow_beta=1.0, rankflow_space="logit")
  ref = _rankflow_reference(np.asarray(s), np.asarray(t), 2, 1.0, True)
  assert float(f(s)) == pytest.approx(ref, rel=1e-6)
  assert float(f(s)) == pytest.approx(-math.log(1e-10 + 1e-12), rel=1e-3)
  # Beyond the clip the student gets no gradient (torch.logit(eps) has none there).
  np.testing.assert_array_equal(np.asarray(jax.grad(f)(s)), 0.0)
  inside = jnp.array([[-3.0, -1.0, 2.0, 1.0]])
  assert np.all(np.asarray(jax.grad(f)(inside)) != 0.0)


# --- RankDistil (rankdistil.py): where T goes --------------------------------------

def _coupled_rankdistil_reference(s, t, noise, *, temperature, k):
  """TF-Ranking ``CoupledRankDistilLoss`` (Reddi et al. 2021's reference code), for
  full lists and a given Gumbel noise [S, R, N]: permutations sort t + g (raw teacher),
  the student's logits are divided by T (``_RankingLoss.get_logits``), and the loss is
  the mean over samples of −Σ_{r<k} [s_π(r)/T − logsumexp_{j≥r} s_π(j)/T], averaged
  over lists."""
  s = np.asarray(s, np.float64) / temperature
  t = np.asarray(t, np.float64)
  per_list = []
  for l in range(t.shape[0]):
    nll = []
    for g in noise[:, l]:
      pi = np.argsort(-(t[l] + g), kind="stable")
      z = s[l, pi]
      lse = np.array([np.log(np.sum(np.exp(z[r:]))) for r in range(len(z))])
      nll.append(-np.sum((z - lse)[:k]))
    per_list.append(np.mean(nll))
  return float(np.mean(per_list))


@pytest.mark.parametrize("temperature, k", [(1.0, 3), (0.5, 2), (4.0, 8)])
def test_rankdistil_student_placement_matches_tf_ranking(temperature, k):
  from prerank_jax.losses.rankdistil import rankdistil_loss
  assert STATIC_OPTIONS["rankdistil_temperature_on"].default == "teacher"
  assert "rankdistil_temperature_on" in KD_LOSSES["rankdistil"].options
  rng = np.random.default_rng(21)
  s = rng.normal(size=(3, 8)).astype(np.float32)
  t = (2 * rng.normal(size=(3, 8))).astype(np.float32)
  key = jax.random.key(3)
  # The loss draws its Gumbel noise as jax.random.gumbel(rng, (S, R, N)).
  noise = np.asarray(jax.random.gumbel(key, (6, 3, 8), jnp.float32), np.float64)
  got = rankdistil_loss(jnp.asarray(s), jnp.asarray(t), where=jnp.ones((3, 8), bool),
                        rng=key, temperature=temperature, rankdistil_topk=float(k),
                        rankdistil_num_samples=6, rankdistil_temperature_on="student")
  ref = _coupled_rankdistil_reference(s, t, noise, temperature=temperature, k=k)
  assert float(got) == pytest.approx(ref, rel=1e-6)
  # At T = 1 the two placements are the same loss.
  kw = dict(where=jnp.ones((3, 8), bool), rng=key, temperature=1.0,
            rankdistil_topk=float(k), rankdistil_num_samples=6)
  a = rankdistil_loss(jnp.asarray(s), jnp.asarray(t), rankdistil_temperature_on="student",
                      **kw)
  b = rankdistil_loss(jnp.asarray(s), jnp.asarray(t), **kw)
  assert float(a) == pytest.approx(float(b), rel=1e-6)
  with pytest.raises(ValueError, match="rankdistil_temperature_on"):
    rankdistil_loss(jnp.asarray(s), jnp.asarray(t), rankdistil_temperature_on="both", **kw)


def test_rankdistil_student_placement_ignores_garbage_padding():
  from prerank_jax.losses.rankdistil import rankdistil_loss
  rng = np.random.default_rng(22)
  s = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  t = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  where = jnp.ones((2, 5), bool).at[:, 3:].set(False)
  pad_s = s.at[:, 3:].set(jnp.nan)
  pad_t = t.at[:, 3:].set(1e30)
  key = jax.random.key(1)
  f = lambda x, tt: rankdistil_loss(x, tt, where=where, rng=key, temperature=0.7,
                                    rankdistil_topk=2.0, rankdistil_num_samples=4,
                                    rankdistil_temperature_on="student")
  assert float(f(pad_s, pad_t)) == pytest.approx(float(f(s, t)), rel=1e-6)
  grad = np.asarray(jax.grad(f)(pad_s, pad_t))
  assert np.all(np.isfinite(grad)) and np.all(grad[:, 3:] == 0.0)


# --- soft Recall@(k, m) (cascade.py): LCRON / ARF as released -----------------------

def _neuralsort_reference(s, tau):
  """NeuralSort as in LCRON's ``sorting.py`` (Grover et al. 2019), float64, [R, N, N]:
  A = |s_i − s_j|, B = A·1, C[:, k] = (n + 1 − 2k)·s, P = softmax((C − B)ᵀ / τ)."""
  s = np.asarray(s, np.float64)[..., None]                  # [R, N, 1]
  n = s.shape[1]
  a = np.abs(s - np.swapaxes(s, 1, 2))
  b = a @ np.ones((n, n))
  c = s @ (n + 1 - 2 * (np.arange(n) + 1.0))[None, :]
  z = np.swapaxes(c - b, 1, 2) / tau
  z = z - z.max(-1, keepdims=True)
  return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def _label_matrix(t, k):
  """The hard permutation matrix of the teacher's order (the reference's
  neuralsort(rank_index, 1e-4) for distinct scores): L[r, i] = [place of i = r]."""
  order = np.argsort(-np.asarray(t, np.float64), axis=1, kind="stable")
  eye = np.zeros((t.shape[0], t.shape[1], t.shape[1]))
  for l in range(t.shape[0]):
    eye[l, np.arange(t.shape[1]), order[l]] = 1.0
  return eye


def _release_label_matrix(t):
  """The released code's label matrix: NeuralSort of the ground-truth order at τ = 1e-4
  (``neuralsort(rank_index, 1e-4)``), here of the teacher's scores. For distinct,
  well-separated scores it is :func:`_label_matrix`; two scores g apart at places r and
  r + 1 share rows r and r + 1 as σ(g/τ) : 1 − σ(g/τ) (a tie: ½ : ½)."""
  return _neuralsort_reference(t, 1e-4)


def _lcron_single_reference(s, t, *, k, m, tau, lab=None):
  """LCRON's LsingleLoss (= ARF-v2 L_relax) for full lists, from lcron.py; ``lab`` the
  label matrix [R, N, N] (default: the teacher's hard order, :func:`_label_matrix`)."""
  p = _neuralsort_reference(s, tau)
  lab = _label_matrix(t, k) if lab is None else lab
  colsum = p.sum(-2)                                        # detached in the reference
  up = p[:, :m, :].sum(-2) / (colsum + 1e-6)
  up_label = lab[:, :k, :].sum(-2)
  up_loss = np.mean(-np.log(up + 1e-6) * up_label, axis=-1)
  down = p[:, m:, :].sum(-2) / (colsum + 1e-6)
  down_label = lab[:, k:, :].sum(-2)
  down_loss = np.mean(-np.log(down + 1e-6) * down_label, axis=-1)
  count = s.shape[1]
  return float(np.mean((up_loss + down_loss) * float(count > m)))


def _arf_reference(s, t, *, k, m, tau, lab=None):
  """ARF's LRelaxLoss for full lists, from arf.py: mean of the first m rows; ``lab`` as
  in :func:`_lcron_single_reference`."""
  p = _neuralsort_reference(s, tau)
  lab = _label_matrix(t, k) if lab is None else lab
  target = p[:, :m, :].mean(-2)
  loss = np.mean(-np.log(target + 1e-6) * lab[:, :k, :].sum(-2), axis=-1)
  return float(np.mean(loss * float(s.shape[1] > m)))


def _soft_recall_case(seed, r=4, n=20, scale=3.0):
  rng = np.random.default_rng(seed)
  s = (scale * rng.normal(size=(r, n))).astype(np.float32)
  t = rng.normal(size=(r, n)).astype(np.float32)
  return s, t


@pytest.mark.parametrize("k, ratio, tau", [(5, 0.25, 50.0), (3, 0.5, 1.0), (8, 0.4, 200.0),
                                           (4, 0.2, 5.0)])
def test_soft_recall_lcron_and_arf_match_the_released_code_with_hard_labels(k, ratio, tau):
  """Our variant: the released losses with the teacher's hard top-k as labels; the
  release's NeuralSort labels (τ = 1e-4) are the next test's."""
  from prerank_jax.losses.cascade import soft_recall_loss
  s, t = _soft_recall_case(k)
  n = s.shape[1]
  m = math.ceil(ratio * n - 1e-9)
  kw = dict(where=jnp.ones(s.shape, bool), recall_k=float(k), recall_keep_ratio=ratio,
            neuralsort_tau=tau)
  got = soft_recall_loss(jnp.asarray(s), jnp.asarray(t), soft_recall_form="lcron", **kw)
  assert float(got) == pytest.approx(_lcron_single_reference(s, t, k=k, m=m, tau=tau),
                                     rel=1e-5)
  got = soft_recall_loss(jnp.asarray(s), jnp.asarray(t), soft_recall_form="arf", **kw)
  assert float(got) == pytest.approx(_arf_reference(s, t, k=k, m=m, tau=tau), rel=1e-5)


def test_soft_recall_release_labels_differ_from_ours_only_at_near_ties():
  """The release labels the ground truth by NeuralSort at τ = 1e-4, we by the teacher's
  hard top-k (docs/reference/references.md lists it). Asserted here:

  1. teacher scores at least 0.1 apart: the release's labels are the hard permutation to
     1e-12, and our loss equals the LCRON and ARF references with the release's labels;
  2. two teacher scores g apart at places k and k + 1: the release gives the upper one the
     label σ(g/τ) (g = 1e-3: 1 − 4.5e-5; 1e-4: 0.73; a tie: ½), ours gives it 1;
  3. at a tie across the k boundary, the release's loss is the mean of the losses of the
     two hard tie-breaks (the loss is linear in the labels); ours is the lower-index one.
  """
  from prerank_jax.losses.cascade import soft_recall_loss
  rng = np.random.default_rng(31)
  r, n = 3, 20
  s = (3.0 * rng.normal(size=(r, n))).astype(np.float32)
  t = np.stack([rng.permutation(np.linspace(-1.0, 1.0, n)) for _ in range(r)])
  t = t.astype(np.float32)
  np.testing.assert_allclose(_release_label_matrix(t), _label_matrix(t, 0), atol=1e-12)
  for k, ratio, tau in [(5, 0.25, 50.0), (3, 0.5, 1.0)]:
    m = math.ceil(ratio * n - 1e-9)
    kw = dict(where=jnp.ones(s.shape, bool), recall_k=float(k), recall_keep_ratio=ratio,
              neuralsort_tau=tau)
    lab = _release_label_matrix(t)
    got = soft_recall_loss(jnp.asarray(s), jnp.asarray(t), soft_recall_form="lcron", **kw)
    assert float(got) == pytest.approx(
        _lcron_single_reference(s, t, k=k, m=m, tau=tau, lab=lab), rel=1e-5)
    got = soft_recall_loss(jnp.asarray(s), jnp.asarray(t), soft_recall_form="arf", **kw)
    assert float(got) == pytest.approx(_arf_reference(s, t, k=k, m=m, tau=tau, lab=lab),
                                       rel=1e-5)

  k, ratio, tau = 5, 0.25, 50.0
  m = math.ceil(ratio * n - 1e-9)
  order = np.argsort(-t.astype(np.float64), axis=1, kind="stable")
  upper, lower = order[:, k - 1], order[:, k]             # places k and k + 1
  rows = np.arange(r)
  for g in (1e-3, 1e-4, 1e-5, 0.0):
    near = t.astype(np.float64)
    near[rows, lower] = near[rows, upper] - g
    up_label = _release_label_matrix(near)[:, :k, :].sum(-2)
    np.testing.assert_allclose(up_label[rows, upper], 1.0 / (1.0 + math.exp(-g / 1e-4)),
                               atol=1e-9)
    if g > 0:  # ours: the upper one is in the top k, whatever g (a tie: see below)
      np.testing.assert_array_equal(_label_matrix(near, k)[:, :k, :].sum(-2)[rows, upper],
                                    1.0)

  # A tie across the boundary: the lower index is ours; both tie-breaks as hard labels.
  tied = t.astype(np.float64)
  first, second = np.minimum(upper, lower), np.maximum(upper, lower)
  tied[rows, second] = tied[rows, first]
  swapped = tied.copy()
  swapped[rows, second] += 1e-9                         # the other tie-break, hard
  kw = dict(where=jnp.ones(s.shape, bool), recall_k=float(k), recall_keep_ratio=ratio,
            neuralsort_tau=tau)
  for form, ref in (("lcron", _lcron_single_reference), ("arf", _arf_reference)):
    ours_ref = ref(s, tied, k=k, m=m, tau=tau)
    other = ref(s, tied, k=k, m=m, tau=tau, lab=_label_matrix(swapped, k))
    release = ref(s, tied, k=k, m=m, tau=tau, lab=_release_label_matrix(tied))
    got = float(soft_recall_loss(jnp.asarray(s), jnp.asarray(tied, jnp.float32),
                                 soft_recall_form=form, **kw))
    assert got == pytest.approx(ours_ref, rel=1e-5), form
    assert release == pytest.approx((ours_ref + other) / 2, rel=1e-9), form
    assert abs(release - ours_ref) > 1e-3 * abs(ours_ref), form


def test_soft_recall_defaults_are_the_lcron_reference():
  from prerank_jax.losses import HPARAMS
  assert STATIC_OPTIONS["soft_recall_form"].default == "lcron"
  assert HPARAMS["neuralsort_tau"].default == 50.0
  assert KD_LOSSES["soft_recall"].options == ("soft_recall_form",)


@pytest.fixture
def x64():
  """float64 inside one test only; restores the previous setting."""
  previous = bool(jax.config.jax_enable_x64)
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


def _neuralsort_columns_reference(s, where, m, tau):
  """``(up, down)`` column sums of :func:`_neuralsort_reference` over each list's valid
  candidates alone (the valid entries sliced out, n of them): up = rows 1..min(m, n),
  down = rows m+1..n, scattered back to the valid slots (0 elsewhere); float64."""
  s, where = np.asarray(s, np.float64), np.asarray(where)
  up, down = np.zeros_like(s), np.zeros_like(s)
  for l in range(s.shape[0]):
    valid = np.flatnonzero(where[l])
    p = _neuralsort_reference(s[l, valid][None], tau)[0]      # [n, n]: places × candidates
    up[l, valid] = p[:int(m[l])].sum(0)
    down[l, valid] = p[int(m[l]):].sum(0)
  return up, down


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neuralsort_blocks_match_the_independent_reference(dtype, request):
  """The O(R·128·N) blocked rows (b from one sort + prefix sums) against the float64
  NumPy NeuralSort written from LCRON's ``sorting.py`` (:func:`_neuralsort_reference`, on
  each list's valid candidates sliced out): to 1e-9 in float64; in float32 the blocks are
  a rounding of it (logits of size n·Δs/τ lose ~1e-5 relative), so that check is looser.
  The gradient is checked against central differences of the same reference (float64)
  and against autodiff of the readable N×N form :func:`neuralsort` (both dtypes)."""
  if dtype == "float64":
    request.getfixturevalue("x64")
  tol = dict(rtol=1e-9, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
  from prerank_jax.losses.cascade import (neuralsort, neuralsort_row_term,
                                          neuralsort_split_columns)
  rng = np.random.default_rng(9)
  # N = 300 > one 128-row block, with padding, ties and a list with few valid entries.
  s = rng.normal(size=(3, 300)).astype(dtype)
  s[0, 10:20] = s[0, 5]
  where = np.ones((3, 300), bool)
  where[1, 250:] = False
  where[2, 7:] = False
  m = np.array([17, 120, 3])
  s_np = s.copy()
  s, where = jnp.asarray(s), jnp.asarray(where)
  assert s.dtype == dtype
  a = np.asarray(s, np.float64)
  b_ref = np.where(where, np.sum(np.abs(a[..., :, None] - a[..., None, :])
                                 * np.asarray(where)[..., None, :], -1), 0.0)
  np.testing.assert_allclose(neuralsort_row_term(s, where=where), b_ref,
                             rtol=tol["rtol"] * 10, atol=tol["atol"] * 100)
  up_ref, down_ref = _neuralsort_columns_reference(s_np, where, m, 5.0)
  up, down = neuralsort_split_columns(s, where=where, m=jnp.asarray(m), tau=5.0)
  np.testing.assert_allclose(up, up_ref, **tol)
  np.testing.assert_allclose(down, down_ref, **tol)
  # The readable N×N form against the same reference, on the valid rows and columns.
  p_hat = np.asarray(neuralsort(s, where=where, tau=5.0), np.float64)
  for l in range(3):
    valid = np.flatnonzero(np.asarray(where[l]))
    np.testing.assert_allclose(p_hat[l][:len(valid)][:, valid],
                               _neuralsort_reference(s_np[l, valid][None], 5.0)[0], **tol)
  weights = np.arange(300.0)
  g = lambda f: jax.grad(lambda x: jnp.sum(f(x) * jnp.asarray(weights, s.dtype)))(s)
  g_blocks = np.asarray(g(lambda x: neuralsort_split_columns(x, where=where,
                                                              m=jnp.asarray(m), tau=5.0)[0]))
  rows_up = np.arange(1, 301)[None, :] <= np.minimum(m, np.asarray(where).sum(-1))[:, None]
  g_full = g(lambda x: jnp.sum(neuralsort(x, where=where, tau=5.0)
                               * jnp.asarray(rows_up)[..., None], -2))
  gtol = tol if dtype == "float64" else dict(rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(g_blocks, g_full, **gtol)
  # Central differences of the float64 reference at candidates placed around each list's
  # split m (elsewhere the gradient is ~0), each at least 1e-3 from every other score
  # (|s_i − s_j| has a kink where two scores meet: a step h across it is no derivative).
  h = 1e-5
  order = np.argsort(-np.where(np.asarray(where), s_np, -np.inf), axis=1, kind="stable")
  checked = 0
  for l, place in [(0, p) for p in range(14, 20)] + [(1, p) for p in range(117, 123)] + [
      (2, 1), (2, 2), (2, 3)]:
    i = order[l, place]
    n = int(np.asarray(where[l]).sum())
    others = np.delete(s_np[l, order[l, :n]].astype(np.float64), place)
    if np.min(np.abs(others - float(s_np[l, i]))) < 1e-3:
      continue
    plus, minus = s_np.astype(np.float64), s_np.astype(np.float64)
    plus[l, i] += h
    minus[l, i] -= h
    fd = (np.sum(_neuralsort_columns_reference(plus, where, m, 5.0)[0] * weights)
          - np.sum(_neuralsort_columns_reference(minus, where, m, 5.0)[0] * weights)) / (2 * h)
    assert abs(fd) > 1e-2, (l, place, fd)  # a coordinate that carries gradient
    assert g_blocks[l, i] == pytest.approx(fd, rel=1e-6 if dtype == "float64" else 1e-2,
                                           abs=1e-4), (l, place)
    checked += 1
  assert checked >= 8, checked
