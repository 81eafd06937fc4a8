"""Which process does what in a multi-process run: only process 0 writes files, logs to
W&B and shows progress; the others wait for it at barriers."""

from __future__ import annotations

import jax


def is_main() -> bool:
  """Only process 0 writes files, logs to W&B and shows progress."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits for every process (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
