"""Run identities: fingerprints of what determines a run's data and its teacher.

A teacher is reused (``teacher.restore_from``, ``teacher.ensemble_with``) or its scores read
from the cache only when these match; they are written next to the teacher's checkpoints.
"""

from __future__ import annotations

import ml_collections

from prerank_jax.fingerprint import fingerprint


def data_identity(config: ml_collections.ConfigDict) -> str:
  """Fingerprint of what determines the data: dataset, its knobs and the seed."""
  identity = {"dataset": config.dataset, "data": config.data.to_dict(), "seed": config.seed}
  if config.dataset != "simulator":  # a real dataset: its config.source fields too
    identity["source"] = config.source.to_dict()
  return fingerprint(identity)


def teacher_identity(config: ml_collections.ConfigDict) -> str:
  """Fingerprint of the teacher: the data plus every teacher field."""
  fields = {k: v for k, v in config.teacher.to_dict().items()
            if k not in ("restore_from", "ensemble_with")}
  return fingerprint({"data": data_identity(config), "teacher": fields})
