"""prerank-jax: train pre-ranking models by knowledge distillation, in JAX.

Data flows one way: config → data → teacher → sweep → evaluation → report. The pure core
(``batch``, ``reduce``, ``data``, ``models``, ``losses``, ``metrics``) imports nothing from
the floors above it (``train``, ``evaluate``, ``host``, ``cli``).
"""

from prerank_jax.batch import Batch, BatchError, validate_batch

__all__ = ["Batch", "BatchError", "validate_batch"]
__version__ = "0.1.0"
