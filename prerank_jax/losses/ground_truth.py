"""Ground-truth terms: losses on the labels the cascade actually observed."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

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
