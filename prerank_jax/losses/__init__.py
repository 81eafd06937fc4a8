"""Pure, jit-able, vmappable losses over the list axis; see ``registry`` for names."""

from prerank_jax.losses.distill import hinton_listwise_kd, hinton_pointwise_kd, logit_mse
from prerank_jax.losses.ensemble import mean_logits
from prerank_jax.losses.ground_truth import inverse_propensity_weights, pointwise_bce
from prerank_jax.losses.registry import GT_LOSSES, HPARAMS, KD_LOSSES, make_objective

__all__ = [
    "GT_LOSSES", "HPARAMS", "KD_LOSSES", "hinton_listwise_kd", "hinton_pointwise_kd",
    "inverse_propensity_weights", "logit_mse", "make_objective", "mean_logits",
    "pointwise_bce",
]
