"""One stable short hash of a JSON-able payload, for every identity in the package: run and
teacher identities (``prerank_jax/host/identity.py``), run ids, and the config names of
prepared TFDS datasets. This module imports nothing from the package."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["fingerprint"]


def fingerprint(payload: Any, length: int = 16) -> str:
  """The first ``length`` hex digits of the SHA-256 of ``payload`` as sorted-key JSON
  (values JSON cannot hold are written with ``str``)."""
  text = json.dumps(payload, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:length]
