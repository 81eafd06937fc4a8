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

def _rankflow_reference(s, t, k, alpha, use_logit):
  """RankFlow's student loss per the released code (github.com/qinjr/RankFlow):
  ``alpha·TopKLoss + (1 − alpha)·MSELoss``, on σ outputs, or, with ``use_logit``, on
  ``torch.logit(p, eps=1e-6)`` = log(p/(1 − p)) of p clamped to [1e-6, 1 − 1e-6].
  TopKLoss: sort by teacher descending, Δ = mean(top k) − mean(rest),
  −log(1e-10 + σ(Δ)), mean over lists; MSELoss: mean over every item."""
  pred_s = 1.0 / (1.0 + np.exp(-np.asarray(s, np.float64)))
  pred_t = 1.0 / (1.0 + np.exp(-np.asarray(t, np.float64)))
  if use_logit:
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
def test_rankflow_matches_the_released_code(space):
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


def _lcron_single_reference(s, t, *, k, m, tau):
  """LCRON's LsingleLoss (= ARF-v2 L_relax) for full lists, from lcron.py."""
  p = _neuralsort_reference(s, tau)
  lab = _label_matrix(t, k)
  colsum = p.sum(-2)                                        # detached in the reference
  up = p[:, :m, :].sum(-2) / (colsum + 1e-6)
  up_label = lab[:, :k, :].sum(-2)
  up_loss = np.mean(-np.log(up + 1e-6) * up_label, axis=-1)
  down = p[:, m:, :].sum(-2) / (colsum + 1e-6)
  down_label = lab[:, k:, :].sum(-2)
  down_loss = np.mean(-np.log(down + 1e-6) * down_label, axis=-1)
  count = s.shape[1]
  return float(np.mean((up_loss + down_loss) * float(count > m)))


def _arf_reference(s, t, *, k, m, tau):
  """ARF's LRelaxLoss for full lists, from arf.py: mean of the first m rows."""
  p = _neuralsort_reference(s, tau)
  lab = _label_matrix(t, k)
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
def test_soft_recall_lcron_and_arf_match_the_released_code(k, ratio, tau):
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neuralsort_blocks_equal_the_n_by_n_form(dtype, request):
  """The O(R·128·N) blocked rows (b from one sort + prefix sums) equal the N×N form:
  to 1e-9 in float64; in float32 both are roundings of it (logits of size n·Δs/τ lose
  ~1e-5 relative), so the float32 check is looser."""
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
  s, where = jnp.asarray(s), jnp.asarray(where)
  assert s.dtype == dtype
  a = np.asarray(s, np.float64)
  b_ref = np.where(where, np.sum(np.abs(a[..., :, None] - a[..., None, :])
                                 * np.asarray(where)[..., None, :], -1), 0.0)
  np.testing.assert_allclose(neuralsort_row_term(s, where=where), b_ref,
                             rtol=tol["rtol"] * 10, atol=tol["atol"] * 100)
  p_hat = neuralsort(s, where=where, tau=5.0)
  n = np.asarray(where).sum(-1)
  m = jnp.asarray([17, 120, 3])
  place = np.arange(1, 301)
  rows_up = (place[None, :] <= np.asarray(m)[:, None]) & (place[None, :] <= n[:, None])
  rows_down = (place[None, :] > np.asarray(m)[:, None]) & (place[None, :] <= n[:, None])
  up_ref = np.sum(np.asarray(p_hat) * rows_up[..., None], -2)
  down_ref = np.sum(np.asarray(p_hat) * rows_down[..., None], -2)
  up, down = neuralsort_split_columns(s, where=where, m=m, tau=5.0)
  np.testing.assert_allclose(up, up_ref, **tol)
  np.testing.assert_allclose(down, down_ref, **tol)
  g = lambda f: jax.grad(lambda x: jnp.sum(f(x) * jnp.arange(300.0, dtype=s.dtype)))(s)
  g_blocks = g(lambda x: neuralsort_split_columns(x, where=where, m=m, tau=5.0)[0])
  g_full = g(lambda x: jnp.sum(neuralsort(x, where=where, tau=5.0)
                               * jnp.asarray(rows_up)[..., None], -2))
  gtol = tol if dtype == "float64" else dict(rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(g_blocks, g_full, **gtol)
