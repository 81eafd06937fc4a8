"""Training: ``make_train`` builds pure train functions; ``sweep`` vmaps them."""

from prerank_jax.train.loop import SweepData, Trainer, TrainState, make_train

__all__ = ["SweepData", "TrainState", "Trainer", "make_train"]
