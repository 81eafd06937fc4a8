"""Metrics over ``[..., N]`` candidate lists.

:mod:`prerank_jax.metrics.ranking`: ranks, NDCG, MRR, recall, precision, retention, teacher
consistency, cascade (system) quality (the teacher or the oracle as the second stage), keep
sizes, the averaging helpers, and :func:`rank_list`: one sort of a list that every metric
shares (``ranking=``). :mod:`prerank_jax.metrics.classification`:
AUC (pooled), per-list AUC and GAUC, Kendall's τ-b.
"""

from prerank_jax.metrics.classification import auc
from prerank_jax.metrics.classification import gauc
from prerank_jax.metrics.classification import has_both_classes
from prerank_jax.metrics.classification import kendall_tau_b
from prerank_jax.metrics.classification import kendall_tau_defined
from prerank_jax.metrics.classification import per_list_auc
from prerank_jax.metrics.ranking import EMPTY_MODES
from prerank_jax.metrics.ranking import Ranking
from prerank_jax.metrics.ranking import cascade_ndcg_at_k
from prerank_jax.metrics.ranking import cascade_recall_at_k
from prerank_jax.metrics.ranking import cascade_top_k
from prerank_jax.metrics.ranking import dcg_at_k
from prerank_jax.metrics.ranking import has_relevant
from prerank_jax.metrics.ranking import keep_size
from prerank_jax.metrics.ranking import mean_over_defined
from prerank_jax.metrics.ranking import mean_over_lists
from prerank_jax.metrics.ranking import ndcg_at_k
from prerank_jax.metrics.ranking import oracle_cascade_ndcg_at_k
from prerank_jax.metrics.ranking import positive_retention
from prerank_jax.metrics.ranking import precision_at_k
from prerank_jax.metrics.ranking import rank_list
from prerank_jax.metrics.ranking import ranks
from prerank_jax.metrics.ranking import recall_at_k
from prerank_jax.metrics.ranking import reciprocal_rank
from prerank_jax.metrics.ranking import restrict
from prerank_jax.metrics.ranking import teacher_consistency_recall
from prerank_jax.metrics.ranking import top_m_mask

__all__ = [
    "EMPTY_MODES",
    "Ranking",
    "auc",
    "cascade_ndcg_at_k",
    "cascade_recall_at_k",
    "cascade_top_k",
    "dcg_at_k",
    "gauc",
    "has_both_classes",
    "has_relevant",
    "keep_size",
    "kendall_tau_b",
    "kendall_tau_defined",
    "mean_over_defined",
    "mean_over_lists",
    "ndcg_at_k",
    "oracle_cascade_ndcg_at_k",
    "per_list_auc",
    "positive_retention",
    "precision_at_k",
    "rank_list",
    "ranks",
    "recall_at_k",
    "reciprocal_rank",
    "restrict",
    "teacher_consistency_recall",
    "top_m_mask",
]
