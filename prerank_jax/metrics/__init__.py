"""Ranking metrics over ``[..., N]`` candidate lists; see :mod:`prerank_jax.metrics.ranking`."""

from prerank_jax.metrics.ranking import dcg_at_k
from prerank_jax.metrics.ranking import has_relevant
from prerank_jax.metrics.ranking import keep_size
from prerank_jax.metrics.ranking import mean_over_lists
from prerank_jax.metrics.ranking import ndcg_at_k
from prerank_jax.metrics.ranking import ranks
from prerank_jax.metrics.ranking import recall_at_k
from prerank_jax.metrics.ranking import teacher_consistency_recall
from prerank_jax.metrics.ranking import top_m_mask

__all__ = [
    "dcg_at_k",
    "has_relevant",
    "keep_size",
    "mean_over_lists",
    "ndcg_at_k",
    "ranks",
    "recall_at_k",
    "teacher_consistency_recall",
    "top_m_mask",
]
