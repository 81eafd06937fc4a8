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
    gt_list_reduction: str = "mean",
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
           (``gt_list_reduction="mean"``), or divided by the number of lists
           (``"sum_per_list"``: a sum over targets and negatives per instance, averaged
           over instances, the scale of Ranking Distillation's released
           ``sigmoid_log_loss``/``weighted_sigmoid_log_loss``)

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
    gt_list_reduction: static, ``"mean"`` (per candidate) or ``"sum_per_list"``; only
      applies with ``reduce_fn=jnp.mean``.
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
  if gt_list_reduction not in GT_LIST_REDUCTIONS:
    raise ValueError(f"loss.options.gt_list_reduction: must be one of "
                     f"{list(GT_LIST_REDUCTIONS)}, got {gt_list_reduction!r}")
  if gt_list_reduction == "sum_per_list" and reduce_fn is jnp.mean:
    per_list = jnp.sum(safe_reduce(per_item, where=involved, weights=w, reduce_fn=None), -1)
    return safe_reduce(per_list, where=jnp.any(valid, axis=-1), reduce_fn=jnp.mean)
  return safe_reduce(per_item, where=involved, weights=w, reduce_fn=reduce_fn)


GT_LIST_REDUCTIONS = ("mean", "sum_per_list")


# --- unbiased (inverse-propensity-scored) estimators ---------------------------------------
#
# Clicks c_i ∈ {0, 1} are observed with probability q_i (the propensity: examination θ of the
# shown position, the exposure probability π of the logging policy, or their product), and a
# candidate observed is clicked with probability r_i (its relevance). Then E[c_i / q_i] = r_i,
# so a loss that is *linear in the clicks* becomes unbiased for the same loss on r when each
# click is divided by its propensity: the functions below are the "full-information" losses
# with targets c/q in place of r. Every function takes the clipped propensities (see
# :func:`clipped_propensity`); clipping trades a bias on rarely observed candidates for a
# bounded variance (Joachims et al. 2017, Section 5; Saito et al. 2020, Section 4.3).


def clipped_propensity(
    propensity: jnp.ndarray, *, where: jnp.ndarray, clip: float | jnp.ndarray
) -> jnp.ndarray:
  """``max(q, clip)`` where selected and 1 elsewhere (so nothing divides by 0).

  Args:
    propensity: ``[..., N]`` observation propensities in [0, 1].
    where: ``[..., N]`` bool, the candidates the loss runs over.
    clip: the floor, in (0, 1].

  Returns:
    ``[..., N]`` propensities in [clip, 1].
  """
  return jnp.where(where, jnp.maximum(masked(propensity, where, 1.0), clip), 1.0)


def _click_targets(labels, where, propensity, dtype):
  clicks = (masked(labels, where) > 0).astype(dtype)
  return clicks / masked(propensity, where, 1.0).astype(dtype)


def ips_pointwise_bce(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    propensity: jnp.ndarray,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """The unbiased IPS cross-entropy of Saito et al. (2020).

  Definition:
    c_i = [label_i > 0],  w_i = c_i / q_i
    ℓ_i = −w_i·log σ(s_i) − (1 − w_i)·log(1 − σ(s_i))
        =  w_i·softplus(−s_i) + (1 − w_i)·softplus(s_i)
    loss = Σ_{i: where_i} ℓ_i / |{i: where_i}|                  (``jnp.mean``)

  Since ℓ_i is linear in c_i, E_c[ℓ_i] = −r_i·log σ(s_i) − (1 − r_i)·log(1 − σ(s_i)), the
  cross-entropy against the relevance r_i = E[c_i]/q_i: the estimator is unbiased for the
  full-information loss whenever q_i > 0 is the true observation probability and no clip
  binds. Note 1 − w_i < 0 for a clicked candidate with q_i < 1, so a single term is not
  bounded below in s_i (the estimator's known weakness; clipping bounds w_i ≤ 1/clip).

  ``where`` is the set the full-information loss runs over: the exposed candidates when
  ``q`` is the examination propensity (position bias only), every valid candidate when
  ``q`` includes the exposure probability (selection bias): unexposed candidates then
  enter with c_i = 0.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` logged labels (0 where not observed); clicks are label > 0.
    where: ``[..., N]`` bool, the candidates the loss runs over.
    propensity: ``[..., N]`` clipped observation propensities q (see
      :func:`clipped_propensity`).
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per candidate).

  Returns:
    The reduced loss or per-candidate losses ``[..., N]``.

  Reference:
    Saito, Yaginuma, Nishino, Sakata, Nakata. "Unbiased Recommender Learning from
    Missing-Not-At-Random Implicit Feedback", WSDM 2020, Eq. (5) (the relevance-IPS loss
    with the log-loss as the local loss).
  """
  w = _click_targets(labels, where, propensity, scores.dtype)
  s = masked(scores, where)
  per_item = w * jax.nn.softplus(-s) + (1.0 - w) * jax.nn.softplus(s)
  return safe_reduce(per_item, where=where, reduce_fn=reduce_fn)


def ips_softmax_ce(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    propensity: jnp.ndarray,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Listwise softmax cross-entropy with propensity weights on clicked candidates only.

  Definition:
    log q_i = log softmax(s)_i over the candidates with ``where``
    ℓ_list = −Σ_{i: where_i} (c_i / q_i) · log q_i
    loss = mean of ℓ_list over lists with a ``where`` candidate   (``jnp.mean``)

  Linear in the clicks, so E_c[ℓ_list] = −Σ_i r_i·log q_i: the softmax cross-entropy
  against the (unnormalised) relevances. Unlike :func:`softmax_ce` the targets are *not*
  divided by the list's click count, and lists without clicks count in the mean (with 0):
  both would make the estimate a ratio of random sums and break unbiasedness.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` logged labels; clicks are label > 0.
    where: ``[..., N]`` bool, the candidates the softmax runs over.
    propensity: ``[..., N]`` clipped observation propensities.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list, ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Joachims, Swaminathan, Schnabel. "Unbiased Learning-to-Rank with Biased Feedback",
    WSDM 2017, Eq. (6) (IPS over clicked documents, for any loss additive over relevant
    documents); Wang, Bendersky, Metzler, Najork. "Learning to Rank with Selection Bias
    in Personal Search", SIGIR 2016 (the weights on clicked documents of the softmax).
  """
  w = _click_targets(labels, where, propensity, scores.dtype)
  log_q = jax.nn.log_softmax(jnp.where(where, masked(scores, where), -1e30), axis=-1)
  per_list = -jnp.sum(jnp.where(where, w * log_q, 0.0), axis=-1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)


def _pair_terms(scores, where):
  """``softplus(s_j − s_i)`` ``[..., N(i), N(j)]`` over valid pairs i ≠ j (0 elsewhere)."""
  s = masked(scores, where)
  n = s.shape[-1]
  pairs = where[..., :, None] & where[..., None, :] & ~jnp.eye(n, dtype=bool)
  diff = jnp.where(pairs, s[..., None, :] - s[..., :, None], 0.0)
  return jnp.where(pairs, jax.nn.softplus(diff), 0.0), pairs


def pairwise_logistic(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    weights: Optional[jnp.ndarray] = None,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """RankNet on the logged labels: every observed pair with different labels.

  Definition:
    ℓ_list = Σ_{i, j observed: y_i > y_j} w_i·softplus(s_j − s_i)
    loss = Σ_lists ℓ_list / Σ_lists #pairs                          (``jnp.mean``)

  The naive (biased) counterpart of :func:`ips_pairwise_logistic`. Memory O(N²) per list
  over the observed candidates.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` graded labels.
    where: ``[..., N]`` bool, observed candidates.
    weights: optional ``[..., N]`` weights of the preferred candidate i of each pair.
    reduce_fn: ``jnp.mean`` (over pairs of the batch), ``jnp.sum`` or ``None`` (per list).

  Returns:
    The reduced loss or per-list sums ``[...]``.

  Reference:
    Burges et al. "Learning to Rank using Gradient Descent" (RankNet), ICML 2005.
  """
  y = masked(labels, where)
  terms, pairs = _pair_terms(scores, where)
  preferred = pairs & (y[..., :, None] > y[..., None, :])
  if weights is not None:
    terms = terms * masked(weights, where)[..., :, None]
  per_list = jnp.sum(jnp.where(preferred, terms, 0.0), axis=(-2, -1))
  if reduce_fn is None:
    return per_list
  total = jnp.sum(per_list)
  if reduce_fn is jnp.sum:
    return total
  return total / jnp.maximum(jnp.sum(preferred), 1)


def ips_pairwise_logistic(
    scores: jnp.ndarray,
    labels: jnp.ndarray,
    *,
    where: jnp.ndarray,
    propensity: jnp.ndarray,
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """Propensity-weighted pairwise logistic loss: the smooth rank of each clicked candidate.

  Definition:
    ℓ_list = Σ_{i: where_i} (c_i / q_i) · Σ_{j ≠ i, where_j} softplus(s_j − s_i)
    loss = mean of ℓ_list over lists with a ``where`` candidate      (``jnp.mean``)

  Σ_j softplus(s_j − s_i) is a smooth upper bound on the rank of i (Joachims et al.
  2017's Propensity SVM-Rank uses the hinge); linear in the clicks, so unbiased for
  Σ_i r_i·Σ_j softplus(s_j − s_i). Every other candidate j counts, clicked or not, as in
  the reference: the estimator sums over *relevant* i, not over click pairs.

  Args:
    scores: ``[..., N]`` student logits.
    labels: ``[..., N]`` logged labels; clicks are label > 0.
    where: ``[..., N]`` bool, the candidates the rank runs over.
    propensity: ``[..., N]`` clipped observation propensities.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list, ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Joachims, Swaminathan, Schnabel. "Unbiased Learning-to-Rank with Biased Feedback",
    WSDM 2017, Section 4 (Propensity-weighted SVM-Rank), with the logistic surrogate.
  """
  w = _click_targets(labels, where, propensity, scores.dtype)
  terms, _ = _pair_terms(scores, where)
  per_list = jnp.sum(w * jnp.sum(terms, axis=-1), axis=-1)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)
