"""Cost accounting: parameters, FLOPs from XLA's own analysis, and measured latency.

- :func:`flops_per_candidate` asks XLA (``compiled.cost_analysis()``) for the FLOPs of the
  compiled scoring function, not hand arithmetic. For a dense layer XLA counts ``2·in·out``
  for the matmul plus one FLOP per output for the bias and one per ReLU, so a one-hidden-
  layer MLP with ``F`` inputs and ``h`` units costs ``2Fh + h + h + 2h + 1`` per candidate.
- :func:`measure_scoring` times one request of ``N`` candidates on the current device
  (jit-compiled, warmed up, median of repeats), the latency a serving system would see.

ID models (``dssm``, ``din``) add their embedding lookups, which XLA's analysis counts as
no FLOPs (a gather): each looked-up row of width ``d`` counts ``d`` FLOPs, the adds of an
``EmbeddingBag`` sum over it (:func:`lookup_flops`). Target attention is matmuls and
elementwise work, which XLA counts itself.

Two-tower models are costed both ways (``cached=False/True``): the full forward runs both
towers; the cached path takes precomputed item embeddings (:meth:`PureModel.item_embeddings`)
and runs only the context tower and the per-candidate interaction.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.models import PureModel, param_count
from prerank_jax.models.embeddings import IdEmbeddings


def _analysed_flops(fn: Callable, *args: Any) -> float:
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
    analysis = analysis[0]
  return float(analysis["flops"])


def flops_per_candidate(model: PureModel, params: Any, batch: Batch, *,
                        cached: bool = False) -> float:
  """FLOPs to score one candidate, from ``compiled.cost_analysis()`` (not hand arithmetic).

  Args:
    model: the model.
    params: its (unstacked) parameters.
    batch: a representative batch; the cost is divided by its R·N candidate slots.
    cached: cost the two-tower serving path ``score_cached`` given item embeddings
      (computed beforehand, not counted) instead of the full forward.
  """
  if cached:
    item_emb = jax.jit(model.item_embeddings)(params, batch)
    flops = _analysed_flops(model.score_cached, params, jnp.asarray(batch.context), item_emb)
  else:
    flops = _analysed_flops(model.apply, params, batch) + lookup_flops(model, params, batch)
  return flops / (batch.num_requests * batch.list_size)


def lookup_flops(model: PureModel, params: Any, batch: Batch) -> float:
  """FLOPs of the embedding lookups of one forward pass over ``batch``: ``d`` per row read.

  Definition: ``d · (R·Cc + R·L·Cs + R·N·Ci)`` for a model with ID tables of width ``d``
  (every behaviour slot is gathered, padding too, as the compiled program does); 0 for a
  model without ID tables.
  """
  tables = getattr(model.bind(params), "embeddings", None)
  if not isinstance(tables, IdEmbeddings):
    return 0.0
  rows = 0
  if len(tables.context):
    rows += int(np.prod(batch.context_ids.shape))
  if len(tables.items):
    rows += int(np.prod(batch.item_ids.shape))
  if getattr(model.bind(params), "sequence_columns", 0):
    rows += int(np.prod(batch.sequence_ids.shape))
  return float(rows * tables.dim)


def request_batch(feature_sizes: dict[str, int], num_candidates: int, *,
                  num_requests: int = 1, seed: int = 0) -> Batch:
  """A random batch of ``num_requests`` lists of ``num_candidates`` (for timing and FLOPs).

  Features are standard normal; ``true_relevance`` is uniform on [0, 3]; every candidate is
  valid and none is exposed. Shapes, not values, determine the cost.
  """
  rng = np.random.default_rng(seed)
  r, n = num_requests, num_candidates
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  # ID columns (``"context_ids"`` etc. in feature_sizes): IDs 1 (row 1 exists in every
  # table); a full behaviour sequence of ``"sequence_length"`` slots.
  ids = {}
  if "context_ids" in feature_sizes:
    ids["context_ids"] = np.ones((r, feature_sizes["context_ids"]), np.int32)
  if "item_ids" in feature_sizes:
    ids["item_ids"] = np.ones((r, n, feature_sizes["item_ids"]), np.int32)
  if "sequence_ids" in feature_sizes:
    length = feature_sizes["sequence_length"]
    ids["sequence_ids"] = np.ones((r, length, feature_sizes["sequence_ids"]), np.int32)
    ids["sequence_mask"] = np.ones((r, length), bool)
  return Batch(
      context=normal(r, feature_sizes["context"]),
      items=normal(r, n, feature_sizes["items"]),
      cross=normal(r, n, feature_sizes["cross"]),
      label=np.zeros((r, n), np.float32),
      exposed=np.zeros((r, n), bool),
      valid=np.ones((r, n), bool),
      true_relevance=rng.uniform(0, 3, (r, n)).astype(np.float32),
      **ids,
  )


def time_call(fn: Callable[[], Any], *, repeats: int = 20, min_seconds: float = 0.2) -> float:
  """Median wall seconds of ``fn()`` (results blocked on), after one warm-up call.

  Repeats at least ``repeats`` times and until ``min_seconds`` of timed calls have run.
  """
  jax.block_until_ready(fn())
  times, total = [], 0.0
  while len(times) < repeats or total < min_seconds:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
    total += times[-1]
    if len(times) >= 10_000:
      break
  return statistics.median(times)


def measure_scoring(model: PureModel, params: Any, num_candidates: int, *,
                    cached: bool = False, repeats: int = 20, min_seconds: float = 0.2,
                    seed: int = 0) -> dict[str, float]:
  """Latency of scoring one request of ``num_candidates`` candidates, on this device.

  Args:
    model, params: the model and its parameters.
    num_candidates: N.
    cached: two-tower models only: time ``score_cached`` with item embeddings computed
      beforehand (their cost is not included), as a server with an embedding cache would.
    repeats, min_seconds: see :func:`time_call`.

  Returns:
    ``{"latency_s": median seconds per request, "candidates_per_s": N / latency_s}``.
  """
  batch = jax.device_put(request_batch(model.feature_sizes, num_candidates, seed=seed))
  if cached:
    item_emb = jax.block_until_ready(jax.jit(model.item_embeddings)(params, batch))
    score = jax.jit(model.score_cached)
    fn = lambda: score(params, batch.context, item_emb)
  else:
    score = jax.jit(model.apply)
    fn = lambda: score(params, batch)
  latency = time_call(fn, repeats=repeats, min_seconds=min_seconds)
  return {"latency_s": latency, "candidates_per_s": num_candidates / latency}


def model_costs(model: PureModel, params: Any, batch: Batch, *,
                cached: bool = False) -> dict[str, float]:
  """``{"params": P, "flops_per_candidate": …}`` of a model (XLA cost analysis)."""
  return {"params": param_count(params),
          "flops_per_candidate": flops_per_candidate(model, params, batch, cached=cached)}
