"""Pure, jit-able, vmappable losses over the list axis; see ``registry`` for config names.

Ranking Distillation lives in ``prerank_jax.losses.ranking_distillation`` (the module name
and the function name coincide, so it is not re-exported here).
"""

from prerank_jax.losses.cascade import fsltr_priority_loss, rankflow_loss, soft_recall_loss
from prerank_jax.losses.distill import hinton_listwise_kd, hinton_pointwise_kd, logit_mse
from prerank_jax.losses.ensemble import ENSEMBLES, logit_mean_prob, mean_logits, mean_rank
from prerank_jax.losses.ground_truth import (extra_positives_loss, grade_weights,
                                             inverse_propensity_weights, pointwise_bce,
                                             softmax_ce)
from prerank_jax.losses.listnet import listnet_distill
from prerank_jax.losses.pairwise import ranknet_distill, soft_pairwise_distill
from prerank_jax.losses.rankdistil import rankdistil_loss
from prerank_jax.losses.registry import (GT_LOSSES, HPARAMS, KD_LOSSES, STATIC_OPTIONS,
                                         make_objective)

__all__ = [
    "ENSEMBLES", "GT_LOSSES", "HPARAMS", "KD_LOSSES", "STATIC_OPTIONS",
    "extra_positives_loss", "fsltr_priority_loss", "grade_weights", "hinton_listwise_kd",
    "hinton_pointwise_kd", "inverse_propensity_weights", "listnet_distill", "logit_mean_prob",
    "logit_mse", "make_objective", "mean_logits", "mean_rank", "pointwise_bce",
    "rankdistil_loss", "rankflow_loss", "ranknet_distill",
    "soft_pairwise_distill", "soft_recall_loss", "softmax_ce",
]
