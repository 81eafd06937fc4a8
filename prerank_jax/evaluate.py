"""Evaluation over full candidate lists: every sweep point, the teacher and references.

The pre-ranker's job is to keep, out of all N candidates, what the heavy ranker or the
truth would put on top. So every metric here ranks the *whole* valid list of held-out
requests, not just the exposed slice that the logs contain.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from prerank_jax import metrics
from prerank_jax.batch import Batch


def keep_label(ratio: float) -> str:
  return f"{100 * ratio:g}%"


def metric_names(*, k: int, keep_ratios: Sequence[float], has_truth: bool = True) -> list[str]:
  """Column names produced by :func:`evaluate_scores`, in display order."""
  names = []
  if has_truth:
    names.append(f"ndcg@{k}")
    names += [f"recall@{keep_label(r)}" for r in keep_ratios]
  names += [f"R@({k},{keep_label(r)})" for r in keep_ratios]
  names.append(f"ndcg@{k}_logs")
  return names


def evaluate_scores(
    scores: jax.Array,
    batch: Batch,
    *,
    teacher_scores: jax.Array,
    k: int,
    keep_ratios: Sequence[float],
    relevant_grade: float,
) -> dict[str, jax.Array]:
  """All evaluation metrics of one model's scores, averaged over requests.

  Definition (per list, then averaged over the lists where the metric is defined):
    ``ndcg@k``          NDCG@k (gain 2^y − 1) against ``true_relevance`` over valid candidates;
                        lists with no relevant candidate are excluded.
    ``recall@r``        |top-m ∩ {true_relevance ≥ relevant_grade}| / |relevant|, with
                        m = ⌈r · n_valid⌉: the share of truly relevant candidates that
                        survive a cut keeping a fraction r of the list.
    ``R@(k,r)``         teacher consistency |teacher top-k ∩ student top-m| / k, m as above.
    ``ndcg@k_logs``     NDCG@k on exposed candidates and their logged labels only, what a
                        practitioner could compute from logs; lists with no positive label
                        are excluded.

  Args:
    scores: ``[R, N]`` model scores.
    batch: held-out requests; needs ``true_relevance`` for the truth metrics.
    teacher_scores: ``[R, N]`` combined teacher logits for teacher consistency.
    k: cut-off for NDCG and the teacher's top-k (static).
    keep_ratios: keep ratios r in (0, 1] (static).
    relevant_grade: truth grade at or above which a candidate counts as relevant.

  Returns:
    ``{name: scalar}`` keyed as in :func:`metric_names`.
  """
  valid, observed = batch.valid, batch.valid & batch.exposed
  out = {}
  if batch.true_relevance is not None:
    truth = batch.true_relevance
    out[f"ndcg@{k}"] = metrics.mean_over_lists(
        metrics.ndcg_at_k(scores, truth, where=valid, k=k),
        where=metrics.has_relevant(truth, where=valid))
    relevant = valid & (truth >= relevant_grade)
    has_rel = jnp.any(relevant, axis=-1)
    for r in keep_ratios:
      m = metrics.keep_size(valid, keep_ratio=r)
      out[f"recall@{keep_label(r)}"] = metrics.mean_over_lists(
          metrics.recall_at_k(scores, relevant, where=valid, k=m), where=has_rel)
  for r in keep_ratios:
    m = metrics.keep_size(valid, keep_ratio=r)
    out[f"R@({k},{keep_label(r)})"] = jnp.mean(metrics.teacher_consistency_recall(
        scores, teacher_scores, where=valid, k=k, m=m))
  out[f"ndcg@{k}_logs"] = metrics.mean_over_lists(
      metrics.ndcg_at_k(scores, batch.label, where=observed, k=k),
      where=metrics.has_relevant(batch.label, where=observed))
  return out


def evaluate_stacked(scores: jax.Array, batch: Batch, *, teacher_scores: jax.Array, k: int,
                     keep_ratios: Sequence[float], relevant_grade: float) -> dict:
  """:func:`evaluate_scores` vmapped over a leading model axis: ``scores [P, R, N]``.

  The batch is an argument of the compiled function, not a closed-over constant, so XLA
  does not try to constant-fold sorts over the whole test split.
  """
  return _evaluate_stacked(scores, batch, teacher_scores, jnp.float32(relevant_grade),
                           k=k, keep_ratios=tuple(keep_ratios))


@functools.partial(jax.jit, static_argnames=("k", "keep_ratios"))
def _evaluate_stacked(scores, batch, teacher_scores, relevant_grade, *, k, keep_ratios):
  fn = lambda s: evaluate_scores(s, batch, teacher_scores=teacher_scores, k=k,
                                 keep_ratios=keep_ratios, relevant_grade=relevant_grade)
  return jax.vmap(fn)(scores)
