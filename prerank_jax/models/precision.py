"""Mixed precision: a model's forward pass in a lower compute dtype, everything else f32.

``<role>.compute_dtype = "bfloat16"`` runs the model's matmuls and activations in bfloat16
(the native matmul type of TPUs and recent GPUs) while the parameters, the optimizer state,
the scores handed to the loss and every loss or metric reduction stay float32: the
parameters are cast on the way in and the scores on the way out, so gradients arrive in
float32 (the transpose of a cast is a cast back) and Adam's moments never see bfloat16.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from prerank_jax.batch import Batch

# config name -> dtype of the forward pass
COMPUTE_DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

_FEATURES = ("context", "items", "cross")  # the model inputs; labels and masks are not cast


def check_compute_dtype(name: Any, field: str) -> Any:
  """The dtype for a config name.

  Raises:
    ValueError: naming ``field`` and the valid names.
  """
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"{field}: unknown compute dtype {name!r}; valid names are "
                     f"{sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[name]


def with_compute_dtype(model: Any, name: str, *, field: str = "compute_dtype") -> Any:
  """``model`` (a :class:`~prerank_jax.models.PureModel`) whose ``apply`` computes in
  ``name``'s dtype and returns float32 scores ``[R, N]``; ``"float32"``: ``model`` itself.

  Only floating parameters and the feature groups (``context``, ``items``, ``cross``) are
  cast; masks, labels and teacher scores are left alone.
  """
  dtype = check_compute_dtype(name, field)
  if dtype == jnp.float32:
    return model
  inner = model.apply

  def cast(x):
    return x.astype(dtype) if x is not None and jnp.issubdtype(x.dtype, jnp.floating) else x

  def apply(params: Any, batch: Batch) -> jax.Array:
    low = batch._replace(**{g: cast(getattr(batch, g)) for g in _FEATURES})
    return inner(jax.tree.map(cast, params), low).astype(jnp.float32)

  return model._replace(apply=apply)
