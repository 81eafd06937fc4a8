"""FS-LambdaLoss against a NumPy transcription of kwai/LCRON's ``compute_lambda_loss``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import Batch
from prerank_jax.losses.lambdaloss import fs_lambdaloss, lambdaloss
from prerank_jax.losses.registry import HPARAMS, KD_LOSSES, make_objective


def lcron_lambda_loss(labels, pred, smooth_fraction=1.0, topn=20):
  """kwai/LCRON deep_components/loss/two_stage/fs_lambdaloss.py::compute_lambda_loss,
  line by line in NumPy (use_rank_idx=True: the gain is the label). Ties in ``pred`` are
  ranked by position (a stable sort; torch's argsort leaves their order unspecified).
  Returns the per-list losses (their code then takes the mean over lists)."""
  labels = np.asarray(labels, np.float64)
  pred = np.asarray(pred, np.float64)
  disc = lambda r: 1.0 / np.log(r + 1.0)
  order = np.argsort(-pred, axis=1, kind="stable")
  ranks = np.argsort(order, axis=1, kind="stable") + 1
  gain = labels.copy()
  ideal = np.take_along_axis(labels, np.argsort(-labels, axis=1, kind="stable"), axis=1)
  rank = np.arange(ideal.shape[1]) + 1
  dg = (ideal * disc(rank.astype(float))).sum(axis=1, keepdims=True)
  inv_idcg = np.where(dg > 0, 1.0 / np.where(dg > 0, dg, 1.0), 0.0)
  gain = gain * inv_idcg
  pair_gain = gain[:, :, None] - gain[:, None, :]
  topn = topn or labels.shape[1]
  rank_diff = np.abs(ranks[:, :, None] - ranks[:, None, :]).astype(float)
  valid_rank = (ranks[:, :, None] <= topn) | (ranks[:, None, :] <= topn)
  with np.errstate(divide="ignore"):
    u = np.where((rank_diff > 0) & valid_rank,
                 np.abs(disc(rank_diff) - disc(rank_diff + 1)), 0.0)
  if smooth_fraction > 0.001:
    rd = np.where((ranks > topn) | (ranks <= 0), 0.0, disc(ranks.astype(float)))
    v = np.abs(rd[:, :, None] - rd[:, None, :])
    pair_discount = (1.0 - smooth_fraction) * u + smooth_fraction * v
  else:
    pair_discount = u
  pair_weight = np.abs(pair_gain) * pair_discount
  logits = pred[:, :, None] - pred[:, None, :]
  pair_labels = (labels[:, :, None] > labels[:, None, :]).astype(float)
  # F.binary_cross_entropy_with_logits(x, z) = max(x, 0) − x·z + log(1 + exp(−|x|))
  bce = np.maximum(logits, 0) - logits * pair_labels + np.log1p(np.exp(-np.abs(logits)))
  return (bce * pair_weight).sum(axis=(-2, -1))


def test_registered():
  spec = KD_LOSSES["fs_lambdaloss"]
  assert spec.fn is fs_lambdaloss
  assert spec.hparams == ("lambdaloss_topn", "lambdaloss_smooth_fraction")
  assert spec.needs == ("relevance",)
  assert HPARAMS["lambdaloss_topn"].default == 30.0  # LCRON's run_train2.py call
  assert HPARAMS["lambdaloss_smooth_fraction"].default == 0.8
  assert not HPARAMS["lambdaloss_topn"].contains(0.5)
  assert not HPARAMS["lambdaloss_smooth_fraction"].contains(1.5)


def test_closed_form_two_items():
  # Two items, labels (2, 0), scores (0, 1): ranks (2, 1); IDCG = 2/ln 2, g = (ln 2, 0);
  # u = |1/ln 2 − 1/ln 3|, v = |1/ln 3 − 1/ln 2| (both ranks ≤ n), so δ = u for every f;
  # the ordered pairs (0, 1) and (1, 0) each cost softplus(1).
  got = lambdaloss(jnp.array([[0.0, 1.0]]), jnp.array([[2.0, 0.0]]),
                   lambdaloss_topn=30.0, lambdaloss_smooth_fraction=0.8)
  delta = abs(1 / math.log(2) - 1 / math.log(3))
  want = 2 * math.log(2) * delta * math.log1p(math.exp(1.0))
  np.testing.assert_allclose(float(got), want, rtol=1e-6)


@pytest.mark.parametrize("topn,smooth", [(30, 0.8), (20, 1.0), (3, 0.8), (4, 0.0),
                                         (2, 0.0005)])
def test_matches_lcron_transcription(topn, smooth):
  rng = np.random.default_rng(topn)
  scores = rng.normal(size=(6, 12)).astype(np.float32)
  labels = rng.integers(0, 7, size=(6, 12)).astype(np.float32)
  labels[0] = 0.0           # no gain: IDCG = 0, loss 0
  labels[1] = 3.0           # all tied labels: no pair weighs
  scores[2, :6] = 0.25      # tied scores: ranked by position
  want = lcron_lambda_loss(labels, scores, smooth_fraction=smooth, topn=topn)
  got = lambdaloss(jnp.asarray(scores), jnp.asarray(labels), reduce_fn=None,
                   lambdaloss_topn=float(topn), lambdaloss_smooth_fraction=smooth)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-7)
  assert want[0] == 0.0 and want[1] == 0.0 and want[2:].min() > 0
  mean = lambdaloss(jnp.asarray(scores), jnp.asarray(labels),
                    lambdaloss_topn=float(topn), lambdaloss_smooth_fraction=smooth)
  np.testing.assert_allclose(float(mean), want.mean(), rtol=2e-5)  # LCRON's .mean(dim=0)


def test_padded_lists_equal_sliced():
  """Padding anywhere in the list (not only at the end), with tied scores: each list's
  loss equals LCRON's on the list sliced to its valid candidates."""
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(5, 10)).astype(np.float32)
  scores[:, 2:5] = 0.5  # ties among valid and padded candidates
  labels = rng.integers(0, 6, size=(5, 10)).astype(np.float32)
  where = rng.random((5, 10)) < 0.7
  where[0] = False  # an all-padded list: left out of the mean
  where[1] = False
  where[1, 3] = True  # a single candidate: no pair, loss 0, counted
  padded_scores = np.where(where, scores, rng.normal(size=scores.shape) * 50)
  padded_labels = np.where(where, labels, 9.0)
  got = lambdaloss(jnp.asarray(padded_scores), jnp.asarray(padded_labels),
                   where=jnp.asarray(where), reduce_fn=None,
                   lambdaloss_topn=4.0, lambdaloss_smooth_fraction=0.8)
  for i in range(5):
    if not where[i].any():
      assert float(got[i]) == 0.0
      continue
    want = lcron_lambda_loss(labels[i][where[i]][None], scores[i][where[i]][None],
                             smooth_fraction=0.8, topn=4)[0]
    np.testing.assert_allclose(float(got[i]), want, rtol=2e-5, atol=1e-7)
  mean = lambdaloss(jnp.asarray(padded_scores), jnp.asarray(padded_labels),
                    where=jnp.asarray(where), lambdaloss_topn=4.0)
  np.testing.assert_allclose(float(mean), float(jnp.mean(got[1:])), rtol=1e-6)


def test_gradient_finite_and_zero_when_masked():
  rng = np.random.default_rng(1)
  s = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 6, size=(3, 8)), jnp.float32)
  where = jnp.asarray(rng.random((3, 8)) < 0.6).at[2].set(False)
  g = jax.grad(lambda x: lambdaloss(x, y, where=where))(s)
  assert np.isfinite(np.asarray(g)).all()
  assert np.all(np.asarray(g)[~np.asarray(where)] == 0.0)
  g0 = jax.grad(lambda x: lambdaloss(x, y, where=jnp.zeros_like(where)))(s)
  assert np.isfinite(np.asarray(g0)).all() and float(lambdaloss(
      s, y, where=jnp.zeros_like(where))) == 0.0


def test_descending_scores_lower_the_loss():
  # The loss is smaller when the scores order the candidates as the labels do.
  y = jnp.array([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
  good = lambdaloss(y, y)
  bad = lambdaloss(-y, y)
  assert float(good) < float(bad)


def test_objective_reads_true_relevance():
  rng = np.random.default_rng(2)
  r, n = 4, 6
  valid = jnp.asarray(rng.random((r, n)) < 0.8).at[:, 0].set(True)
  rel = jnp.asarray(rng.integers(0, 7, size=(r, n)), jnp.float32)
  batch = Batch(context=jnp.zeros((r, 1)), items=jnp.zeros((r, n, 1)), cross=None,
                label=jnp.zeros((r, n)), valid=valid, exposed=valid,
                true_relevance=rel, teacher_scores=jnp.zeros((r, n, 1)))
  s = jnp.asarray(rng.normal(size=(r, n)), jnp.float32)
  objective = make_objective(kd="fs_lambdaloss", gt="bce")
  hp = {"alpha": jnp.float32(1.0), "learning_rate": jnp.float32(1e-3),
        "lambdaloss_topn": jnp.float32(3.0), "lambdaloss_smooth_fraction": jnp.float32(0.5)}
  got = objective(s, batch, hp)
  want = lambdaloss(s, rel, where=valid, lambdaloss_topn=3.0,
                    lambdaloss_smooth_fraction=0.5)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  with pytest.raises(ValueError, match="batch.true_relevance"):
    objective(s, batch._replace(true_relevance=None), hp)
