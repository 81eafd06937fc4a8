"""Ground-truth terms: losses on the labels the cascade actually observed."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from prerank_jax.metrics.ranking import top_m_mask
from prerank_jax.reduce import ReduceFn, masked, safe_reduce


def pointwise_bce(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    weights: Optional[jnp.ndarray] = None,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Pointwise sigmoid cross-entropy on observed (exposed) candidates.

  Definition:
    y_i = [label_i > 0]   (any positive grade is a positive, e.g. a click)
    ℓ_i = w_i · ( softplus(s_i) − y_i·s_i )  = w_i · BCE(y_i, σ(s_i))
    loss = Σ_{i: where_i} ℓ_i / |{i: where_i}|      (``reduce_fn=jnp.mean``)

  Importance weights ``w`` (e.g. clipped inverse propensities, see
  :func:`inverse_propensity_weights`) rescale candidates; the mean still divides by the
  candidate count, so weights are not normalised away.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` graded labels (≥ 0); only their sign matters here.
    where: ``[..., N]`` bool, candidates whose label was observed (``valid & exposed``).
    weights: optional ``[..., N]`` per-candidate importance weights.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss (a scalar) or per-candidate losses ``[..., N]``.

  Example:
    >>> import jax.numpy as jnp
    >>> float(pointwise_bce(jnp.zeros(2), jnp.array([1., 0.]), where=jnp.array([True, True])))
    0.6931...
  """
  targets = (labels > 0).astype(scores.dtype)
  scores = masked(scores, where)
  per_item = jax.nn.softplus(scores) - targets * scores
  return safe_reduce(per_item, where=where, weights=weights, reduce_fn=reduce_fn)


def inverse_propensity_weights(
    propensity: jnp.ndarray, *, where: jnp.ndarray, clip: float | jnp.ndarray
) -> jnp.ndarray:
  """Clipped inverse-propensity weights for exposed candidates.

  Definition:
    w_i = 1 / max(p_i, clip) where selected, else 0.

  Clipping bounds the variance that tiny propensities would cause (Joachims et al.,
  "Unbiased Learning-to-Rank with Biased Feedback", WSDM 2017).

  Args:
    propensity: ``[..., N]`` examination propensities in (0, 1].
    where: ``[..., N]`` bool, candidates with an observed label.
    clip: lower bound on the propensity, in (0, 1].

  Returns:
    ``[..., N]`` weights, 0 where not selected.
  """
  safe = jnp.where(where, propensity, 1.0)
  return jnp.where(where, 1.0 / jnp.maximum(safe, clip), 0.0)


def grade_weights(labels: jnp.ndarray, *, where: jnp.ndarray) -> jnp.ndarray:
  """Importance weights that grow with the label grade.

  Definition:
    w_i = 1 + y_i where selected, else 0.

  A grade-2 purchase then counts three times as much as an unclicked exposure and 1.5
  times a grade-1 click, without any extra hyperparameter; unclicked exposures keep
  weight 1, so negatives are not dropped. (For the pointwise loss this emphasises the
  graded positives; for :func:`softmax_ce`, whose targets already grow with y, it
  sharpens the emphasis further, w·y = y + y².)

  Args:
    labels: ``[..., N]`` graded labels (≥ 0).
    where: ``[..., N]`` bool, candidates with an observed label.

  Returns:
    ``[..., N]`` weights, 0 where not selected.
  """
  return jnp.where(where, 1.0 + masked(labels, where), 0.0)


def softmax_ce(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    weights: Optional[jnp.ndarray] = None,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Graded listwise softmax cross-entropy over the observed (exposed) candidates.

  Definition:
    q = softmax(s) over the candidates with ``where``
    ℓ_list = −Σ_i w_i · (y_i / Σ_j y_j) · log q_i     (Σ over ``where``; w = 1 by default)
    loss = mean of ℓ_list over lists with Σ_j y_j > 0  (``jnp.mean``)

  Lists without a positive label have no target distribution: they contribute 0 and are
  not counted in the mean. Weights multiply the per-candidate terms *after* the target
  is normalised by the label sum (not by the weighted sum), so, as in
  :func:`pointwise_bce`, importance weights rescale instead of being normalised away.
  Without weights this is ``rax.softmax_loss(..., label_fn=normalize_probabilities)``
  on lists with a positive label.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` graded labels (≥ 0).
    where: ``[..., N]`` bool, candidates whose label was observed (``valid & exposed``).
    weights: optional ``[..., N]`` per-candidate importance weights.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list, ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Cao et al. "Learning to Rank: From Pairwise Approach to Listwise Approach" (ListNet),
    ICML 2007; Bruch et al. "An Analysis of the Softmax Cross Entropy Loss for
    Learning-to-Rank with Binary Relevance", ICTIR 2019.
  """
  labels = jnp.maximum(masked(labels, where), 0.0).astype(scores.dtype)
  total = jnp.sum(labels, axis=-1, keepdims=True)
  has_positive = total[..., 0] > 0
  target = labels / jnp.where(total > 0, total, 1.0)
  if weights is not None:
    target = target * masked(weights, where)
  log_q = jax.nn.log_softmax(jnp.where(where, masked(scores, where), -1e30), axis=-1)
  per_list = -jnp.sum(jnp.where(where, target * log_q, 0.0), axis=-1)
  return safe_reduce(per_list, where=has_positive, reduce_fn=reduce_fn)


def extra_positives_loss(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    valid: jnp.ndarray,
    weights: Optional[jnp.ndarray] = None,
    gt_negative_weight: float | jnp.ndarray = 1.0,
    gt_num_negatives: int = 10,
    rng: Optional[jax.Array] = None,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Ground truth as positives over the whole candidate list, unexposed as negatives.

  In the spirit of Ranking Distillation (Tang & Wang, KDD 2018), where the observed
  positives are trained with a pointwise log-loss against sampled unobserved items, this
  term brings the labels into the pre-ranker's *full* candidate space (the space it is
  evaluated on) instead of only the exposed candidates:

  Definition:
    P = {i exposed : y_i > 0}                     positives, weight w_i (1, or from
                                                  ``gt_weighting``)
    E = {i exposed : y_i = 0}                     observed negatives, weight w_i
    U = {i valid, not exposed}, or a uniform sample without replacement of
        ``gt_num_negatives`` of them per list     unobserved negatives, weight λ
    ℓ_i = softplus(−s_i) on P,  softplus(s_i) on E ∪ U       (= BCE with target [i ∈ P])
    loss = Σ_{P ∪ E} w_i ℓ_i + λ Σ_U ℓ_i,  divided by |P ∪ E ∪ U| (count over the batch)

  ``gt_num_negatives = 0`` takes every unexposed candidate (no sampling, no rng needed).
  λ = ``gt_negative_weight`` (traced) down-weights unobserved negatives, which are only
  *probably* negative: some are relevant items the logging policy never showed.
  λ = 0 gives :func:`pointwise_bce` with the count also including U.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` graded labels (0 where not exposed).
    where: ``[..., N]`` bool, observed candidates (``valid & exposed``).
    valid: ``[..., N]`` bool, every real candidate (not padding).
    weights: optional ``[..., N]`` weights for the observed candidates.
    gt_negative_weight: λ ≥ 0, traced.
    gt_num_negatives: static int ≥ 0; sampled unexposed negatives per list (0 = all).
    rng: a PRNG key; required when ``gt_num_negatives > 0``.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss or per-candidate losses ``[..., N]``.
  """
  valid = jnp.broadcast_to(valid, scores.shape) | where
  unexposed = valid & ~where
  if gt_num_negatives > 0:
    if rng is None:
      raise ValueError("loss.options.gt_num_negatives: sampling negatives needs an rng; "
                       "pass rng= or set gt_num_negatives=0 (all unexposed)")
    keys = jax.random.uniform(rng, scores.shape)
    unexposed = top_m_mask(keys, where=unexposed, m=gt_num_negatives)
  involved = where | unexposed
  s = masked(scores, involved)
  positive = where & (masked(labels, where) > 0)
  per_item = jnp.where(positive, jax.nn.softplus(-s), jax.nn.softplus(s))
  w_obs = jnp.ones_like(s) if weights is None else masked(weights, where)
  w = jnp.where(where, w_obs, jnp.asarray(gt_negative_weight, s.dtype))
  return safe_reduce(per_item, where=involved, weights=w, reduce_fn=reduce_fn)
