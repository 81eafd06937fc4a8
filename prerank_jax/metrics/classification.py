"""Classification and rank-correlation metrics: AUC, GAUC and Kendall's τ-b.

Conventions (those of :mod:`prerank_jax.metrics.ranking`, plus):

* Pure ``jnp`` functions over the LAST axis (the list axis); inputs are ``[..., N]``.
  :func:`auc` pools every list into one scalar; the other metrics return PER-LIST values
  ``[...]`` (:func:`gauc` then averages them into a scalar).
* ``where`` is an optional bool ``[..., N]`` mask of the candidates that take part (e.g.
  ``valid & exposed`` for labelled candidates). Masked candidates never affect anything:
  they may hold any value (NaN, inf) and the result equals the one with them sliced out.
* Classes are explicit bool masks: ``positive`` among the candidates selected by
  ``where``; every other selected candidate is a negative.
* Scores are compared exactly (no tolerance); ``-0.0`` equals ``+0.0``. A selected NaN
  score counts as ``-inf`` (the lowest score, tied with ``-inf``), so no result is NaN.
* Never NaN: where a metric is undefined (one class only for AUC; fewer than two distinct
  values for τ-b) the value is 0 and a predicate (:func:`has_both_classes`,
  :func:`kendall_tau_defined`) tells the caller which lists to leave out.
* Counts are exact integers (int32); only the final ratios are float32.

References:
  Mann & Whitney. "On a test of whether one of two random variables is stochastically
  larger than the other." Ann. Math. Stat. 1947 (AUC as the U statistic).
  Zhu et al. "Optimized cost per click in Taobao display advertising." KDD 2017 (GAUC).
  Kendall. "The treatment of ties in ranking problems." Biometrika 1945 (τ-b).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from prerank_jax.metrics.ranking import _valid_mask

Array = jnp.ndarray


def _comparable(scores: Array, selected: Array) -> Array:
  """Scores that compare exactly and never NaN: NaN → -inf, -0.0 → +0.0, masked → 0."""
  scores = jnp.asarray(scores)
  if scores.dtype == jnp.bool_:
    scores = scores.astype(jnp.int8)
  if jnp.issubdtype(scores.dtype, jnp.inexact):
    scores = jnp.where(jnp.isnan(scores), jnp.asarray(-jnp.inf, scores.dtype), scores)
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # -0.0 → +0.0
  return jnp.where(selected, scores, jnp.zeros_like(scores))


def _class_masks(positive: Array, where: Optional[Array], shape) -> tuple[Array, Array, Array]:
  positive = jnp.asarray(positive)
  if positive.dtype != jnp.bool_:
    raise TypeError(f"positive must be a bool mask, got dtype {positive.dtype}")
  selected = _valid_mask(where, shape)
  positive = selected & jnp.broadcast_to(positive, shape)
  return selected, positive, selected & ~positive


def _twice_u(scores: Array, positive: Array, negative: Array) -> Array:
  """2·U per positive over the last axis: #{neg < s_i} + #{neg ≤ s_i}, 0 elsewhere.

  The negatives of each list are sorted (the others pushed to the end as the dtype's
  maximum), and every score is located by binary search, so ties count 1/2 exactly and
  the cost is O(N log N) per list, with no ``[N, N]`` intermediate.
  """
  size = scores.shape[-1]
  top = (jnp.inf if jnp.issubdtype(scores.dtype, jnp.inexact)
         else jnp.iinfo(scores.dtype).max)
  reference = jnp.sort(jnp.where(negative, scores, jnp.asarray(top, scores.dtype)), axis=-1)
  flat_ref, flat_scores = reference.reshape(-1, size), scores.reshape(-1, size)
  left = jax.vmap(lambda r, v: jnp.searchsorted(r, v, side="left"))(flat_ref, flat_scores)
  right = jax.vmap(lambda r, v: jnp.searchsorted(r, v, side="right"))(flat_ref, flat_scores)
  num_negative = jnp.sum(negative, axis=-1, dtype=jnp.int32)[..., None]
  # A +inf (or integer maximum) score also passes the padding: clip at the negative count.
  right = jnp.minimum(right.reshape(scores.shape).astype(jnp.int32), num_negative)
  left = jnp.minimum(left.reshape(scores.shape).astype(jnp.int32), num_negative)
  return jnp.where(positive, left + right, 0)


def has_both_classes(positive: Array, *, where: Optional[Array] = None) -> Array:
  """Whether a list has a selected positive AND a selected negative (AUC is defined).

  Definition:
    has_both = (∃ i selected : positive_i) ∧ (∃ i selected : ¬positive_i)

  Args:
    positive: bool ``[..., N]`` class labels.
    where: optional bool ``[..., N]`` mask of the candidates that take part.

  Returns:
    bool ``[...]``.
  """
  positive = jnp.asarray(positive)
  _, pos, neg = _class_masks(positive, where, positive.shape)
  return jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)


def auc(scores: Array, positive: Array, *, where: Optional[Array] = None) -> Array:
  """Area under the ROC curve, POOLED over every selected candidate of every list.

  Definition (Mann–Whitney U over the flattened selected candidates):
    AUC = ( Σ_{i ∈ P} Σ_{j ∈ Q} ([s_i > s_j] + ½·[s_i = s_j]) ) / (|P|·|Q|)
        = ( Σ_{i ∈ P} avgrank(s_i) − |P|(|P| + 1)/2 ) / (|P|·|Q|)

    with P = {selected ∧ positive}, Q = {selected ∧ ¬positive} over ALL leading axes,
    and avgrank the 1-based ascending rank among the selected candidates with tied
    scores sharing their average rank. Ties between a positive and a negative count 1/2
    (sklearn ``roc_auc_score``). 0 when P or Q is empty (check with
    ``has_both_classes(positive.ravel(), where=where.ravel())``). Pooling compares
    candidates of DIFFERENT lists, so it also rewards scores that are calibrated across
    requests; :func:`gauc` compares within lists only.

    Computed with one sort of the negatives and a binary search per candidate:
    O(n log n) time and O(n) memory for n = R·N. The U counts are exact int32 per candidate,
    summed in float32 per list and then over lists (relative error ~1e-6).

  Args:
    scores: ``[..., N]`` scores.
    positive: bool ``[..., N]`` class labels (e.g. ``label > 0``).
    where: optional bool ``[..., N]`` mask of the candidates that take part (e.g.
      ``valid & exposed``).

  Returns:
    A float32 scalar in [0, 1].

  References:
    Mann & Whitney 1947; Hanley & McNeil, Radiology 1982; ``sklearn.metrics.roc_auc_score``.
  """
  scores = jnp.asarray(scores)
  selected, pos, neg = _class_masks(positive, where, scores.shape)
  clean = _comparable(scores, selected)
  flat = lambda x: x.reshape(1, -1)
  twice_u = _twice_u(flat(clean), flat(pos), flat(neg))
  num_pos = jnp.sum(pos, dtype=jnp.int32).astype(jnp.float32)
  num_neg = jnp.sum(neg, dtype=jnp.int32).astype(jnp.float32)
  # Exact int32 counts per candidate; float32 sums per list, then across lists.
  per_list = jnp.sum(twice_u.reshape(scores.shape).astype(jnp.float32), axis=-1)
  u = jnp.sum(per_list) / 2.0
  defined = (num_pos > 0) & (num_neg > 0)
  return jnp.where(defined, u / jnp.where(defined, num_pos * num_neg, 1.0), 0.0)


def per_list_auc(scores: Array, positive: Array, *, where: Optional[Array] = None) -> Array:
  """AUC within each list, over its selected candidates.

  Definition:
    AUC_l = Σ_{i ∈ P_l} Σ_{j ∈ Q_l} ([s_i > s_j] + ½·[s_i = s_j]) / (|P_l|·|Q_l|)

    with P_l, Q_l the selected positives and negatives of list l; 0 when either is empty
    (see :func:`has_both_classes`). O(N log N) per list (sort and binary search), no
    ``[N, N]`` intermediate.

  Args:
    scores: ``[..., N]`` scores.
    positive: bool ``[..., N]`` class labels.
    where: optional bool ``[..., N]`` mask of the candidates that take part.

  Returns:
    ``[...]`` float32 AUC per list in [0, 1].

  References:
    Mann & Whitney 1947; ``sklearn.metrics.roc_auc_score`` on one list.
  """
  scores = jnp.asarray(scores)
  selected, pos, neg = _class_masks(positive, where, scores.shape)
  twice_u = _twice_u(_comparable(scores, selected), pos, neg)
  u = jnp.sum(twice_u, axis=-1).astype(jnp.float32) / 2.0
  pairs = (jnp.sum(pos, axis=-1, dtype=jnp.int32).astype(jnp.float32)
           * jnp.sum(neg, axis=-1, dtype=jnp.int32).astype(jnp.float32))
  return jnp.where(pairs > 0, u / jnp.maximum(pairs, 1.0), 0.0)


def gauc(
    scores: Array,
    positive: Array,
    *,
    where: Optional[Array] = None,
    weights: Optional[Array] = None,
) -> Array:
  """Group AUC: the per-list AUC averaged over lists with both classes, weighted.

  Definition:
    GAUC = Σ_{l ∈ D} w_l·AUC_l / Σ_{l ∈ D} w_l,   D = {l : has_both_classes_l}

    with AUC_l from :func:`per_list_auc` and, by default, w_l = |{i : where_i}| the
    number of selected (labelled) candidates of the list, positives and negatives
    together. Lists with one class only are excluded (count them with
    ``~has_both_classes``); 0 when no list has both classes.

  Args:
    scores: ``[..., N]`` scores.
    positive: bool ``[..., N]`` class labels (e.g. ``label > 0``).
    where: optional bool ``[..., N]`` mask of the candidates that take part (e.g.
      ``valid & exposed``).
    weights: optional ``[...]`` non-negative list weights, replacing the default count
      (e.g. ``jnp.ones`` for an unweighted mean over lists).

  Returns:
    A float32 scalar in [0, 1].

  References:
    Zhu et al., KDD 2017 (GAUC weighted by impressions or clicks; here by labelled count).
  """
  scores = jnp.asarray(scores)
  selected, _, _ = _class_masks(positive, where, scores.shape)
  values = per_list_auc(scores, positive, where=selected)
  defined = has_both_classes(positive, where=selected)
  if weights is None:
    weights = jnp.sum(selected, axis=-1, dtype=jnp.int32)
  weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), values.shape)
  weights = jnp.where(defined, weights, 0.0)
  total = jnp.sum(weights)
  return jnp.where(total > 0, jnp.sum(weights * values) / jnp.where(total > 0, total, 1.0),
                   0.0)


def _signs(a: Array, b: Array) -> Array:
  """int8 sign(a − b), exact for any dtype (no subtraction, so no overflow or inf − inf)."""
  return (a > b).astype(jnp.int8) - (a < b).astype(jnp.int8)


def kendall_tau_defined(x: Array, y: Array, *, where: Optional[Array] = None) -> Array:
  """Whether τ-b is defined: both x and y take at least two distinct values.

  Definition:
    defined = (∃ i, j selected : x_i ≠ x_j) ∧ (∃ i, j selected : y_i ≠ y_j)

    (which implies at least 2 selected candidates), with the comparisons of
    :func:`kendall_tau_b` (NaN counts as -inf). O(N).

  Args:
    x, y: ``[..., N]`` scores.
    where: optional bool ``[..., N]`` mask of the candidates that take part.

  Returns:
    bool ``[...]``.
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  selected = _valid_mask(where, x.shape)

  def varies(v):
    v = _comparable(v, selected)
    lo = jnp.min(jnp.where(selected, v, jnp.max(v, axis=-1, keepdims=True)), axis=-1)
    hi = jnp.max(jnp.where(selected, v, jnp.min(v, axis=-1, keepdims=True)), axis=-1)
    return hi > lo

  return varies(x) & varies(jnp.broadcast_to(y, x.shape))


def kendall_tau_b(x: Array, y: Array, *, where: Optional[Array] = None) -> Array:
  """Kendall's τ-b rank correlation between two scorings of each list.

  Definition (over the pairs i < j of selected candidates of a list):
    τ_b = (C − D) / sqrt((n₀ − n_x)·(n₀ − n_y))

    C / D: pairs ordered the same / the opposite way by x and y (pairs tied in x or in y
    count in neither), n₀ = n(n−1)/2, n_x / n_y: pairs tied in x / in y. So n₀ − n_x is
    the number of pairs that x orders. τ_b is in [−1, 1] and 1 iff x and y induce the
    same weak order. Undefined, and 0 here, when x or y is constant over the list (or
    fewer than 2 candidates are selected): see :func:`kendall_tau_defined`.

    Cost: O(N²) time per list, but O(N) memory per list: a ``lax.fori_loop`` over the
    N candidates compares one candidate with its whole list per step (``[..., N]``
    temporaries, never ``[..., N, N]``; e.g. 13 models × 2000 lists × N = 200 need
    ~5 M-element temporaries instead of ~1 G). Counts are exact int32 (N ≤ 46340);
    only the final ratio is float32.

  Args:
    x: ``[..., N]`` scores (e.g. the student's).
    y: ``[..., N]`` scores (e.g. the teacher's).
    where: optional bool ``[..., N]`` mask of the candidates that take part.

  Returns:
    ``[...]`` float32 τ-b per list in [−1, 1].

  References:
    Kendall, Biometrika 1945; ``scipy.stats.kendalltau`` (``variant="b"``).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  selected = _valid_mask(where, x.shape)
  x = _comparable(x, selected)
  y = _comparable(jnp.broadcast_to(y, x.shape), selected)
  zeros = jnp.zeros(x.shape[:-1], jnp.int32)

  def row(i, counts):
    # Candidate i against every candidate j of its list: one [..., N] slice per step.
    s, ordered_x, ordered_y = counts
    take = lambda a: lax.dynamic_index_in_dim(a, i, axis=-1, keepdims=True)
    pair = take(selected) & selected
    sx, sy = _signs(take(x), x), _signs(take(y), y)
    s = s + jnp.sum(jnp.where(pair, sx * sy, 0), axis=-1, dtype=jnp.int32)
    ordered_x = ordered_x + jnp.sum(pair & (sx != 0), axis=-1, dtype=jnp.int32)
    ordered_y = ordered_y + jnp.sum(pair & (sy != 0), axis=-1, dtype=jnp.int32)
    return s, ordered_x, ordered_y

  # Every ordered pair (i, j) and (j, i) is counted: the factors of 2 cancel in the ratio.
  s, ordered_x, ordered_y = lax.fori_loop(0, x.shape[-1], row, (zeros, zeros, zeros))
  defined = (ordered_x > 0) & (ordered_y > 0)
  denom = (jnp.sqrt(ordered_x.astype(jnp.float32))
           * jnp.sqrt(ordered_y.astype(jnp.float32)))
  tau = s.astype(jnp.float32) / jnp.where(defined, denom, 1.0)
  return jnp.where(defined, jnp.clip(tau, -1.0, 1.0), 0.0)
