"""Shared helpers for the "learning happens" tests of losses trained through the trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax import metrics
from prerank_jax.train import SweepData


def noisy_truth_teacher(splits: dict, *, noise: float, seed: int = 0) -> dict:
  """Splits whose single teacher is true relevance + noise, so the teacher has signal."""
  rng = np.random.default_rng(seed)
  return {k: b._replace(teacher_scores=(b.true_relevance + noise * rng.normal(
      size=b.label.shape))[..., None].astype(np.float32)) for k, b in splits.items()}


def sweep_data(splits: dict, *, noise: float = 0.3, seed: int = 0) -> SweepData:
  scored = noisy_truth_teacher(splits, noise=noise, seed=seed)
  return SweepData(scored["train"], scored["valid"])


def teacher_consistency(scores, batch, *, k: int, keep_ratio: float) -> np.ndarray:
  """Mean teacher-consistency recall R@(k, keep_ratio) per sweep point (``scores [P, R, N]``)."""
  teacher = batch.teacher_scores[..., 0]
  m = metrics.keep_size(batch.valid, keep_ratio=keep_ratio)
  return np.asarray(jax.vmap(lambda x: jnp.mean(metrics.teacher_consistency_recall(
      x, teacher, where=batch.valid, k=k, m=m)))(scores))
