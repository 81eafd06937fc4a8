"""Exposure probabilities of a noisy top-E logging policy, by Monte Carlo.

A logging policy scores every valid candidate with ``m_i + σ·ε_i`` (``ε_i ~ N(0, 1)``,
independent) and exposes its top ``E``. The exposure probability of candidate ``i`` is

    π_i = P(i is among the top E of {m_j + σ·ε_j : j valid})

It has no closed form for general lists (a Gaussian integral over a Poisson-binomial tail),
so it is estimated by Monte Carlo: ``S`` independent redraws of the logging noise,
``π̂_i = (1/S)·Σ_s [i in the top E of draw s]``. The estimate is unbiased with standard
error ``sqrt(π(1 − π)/S) ≤ 0.5/sqrt(S)`` (0.022 at the default ``S = 512``); its relative
error is largest for rarely exposed candidates, which is one reason importance weights are
clipped (``loss.propensity_floor``). With ``σ = 0`` the policy is deterministic and ``π`` is 0 or 1.
Lists with fewer than ``E`` valid candidates expose all of them (``π = 1``).

Used by the simulator and by the LETOR loader's simulated logs; the noise for the Monte Carlo
comes from its own generator so the simulated data themselves do not change.
"""

from __future__ import annotations

import hashlib

import numpy as np

EXPOSURE_SAMPLES = 512  # Monte-Carlo redraws of the logging noise per request
_CHUNK_ELEMENTS = 1 << 23  # floats per Monte-Carlo chunk (bounds memory at ~32 MB)


def seeded_rng(*arrays: np.ndarray) -> np.random.Generator:
  """A generator seeded by the bytes of ``arrays`` (SHA-256): deterministic for given data,
  and independent of any generator the caller is drawing from."""
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
  return np.random.default_rng(np.frombuffer(digest.digest(), dtype=np.uint32))


def exposure_probability(
    log_mean: np.ndarray,
    valid: np.ndarray,
    *,
    num_exposed: int,
    noise: float,
    rng: np.random.Generator,
    samples: int = EXPOSURE_SAMPLES,
) -> np.ndarray:
  """Monte-Carlo exposure probabilities of a noisy top-E policy (see the module docstring).

  Args:
    log_mean: ``[R, N]`` the logging policy's noise-free scores ``m``.
    valid: ``[R, N]`` bool, real candidates (padding is never exposed).
    num_exposed: ``E ≥ 1``, candidates exposed per list (all of a shorter list).
    noise: ``σ ≥ 0``, the standard deviation of the logging noise.
    rng: the generator of the Monte-Carlo redraws.
    samples: ``S ≥ 1`` redraws.

  Returns:
    ``[R, N]`` float32 estimates of ``π`` in [0, 1]; 0 on padding.
  """
  log_mean = np.asarray(log_mean, np.float32)
  valid = np.asarray(valid, bool)
  if log_mean.ndim != 2 or valid.shape != log_mean.shape:
    raise ValueError(f"exposure_probability: log_mean and valid must both be [R, N], got "
                     f"{log_mean.shape} and {valid.shape}")
  if num_exposed < 1 or noise < 0 or samples < 1:
    raise ValueError(f"exposure_probability: need num_exposed >= 1, noise >= 0 and "
                     f"samples >= 1, got {num_exposed}, {noise}, {samples}")
  r, n = log_mean.shape
  e = min(num_exposed, n)
  if noise == 0:  # deterministic: the top E by a stable sort, as the logging policy does
    order = np.argsort(-np.where(valid, log_mean, -np.inf), axis=1, kind="stable")[:, :e]
    out = np.zeros((r, n), np.float32)
    np.put_along_axis(out, order, 1.0, axis=1)
    return np.where(valid, out, 0.0).astype(np.float32)
  out = np.empty((r, n), np.float32)
  rows = max(1, _CHUNK_ELEMENTS // (samples * n))
  for start in range(0, r, rows):
    m, v = log_mean[start:start + rows], valid[start:start + rows]
    # m + σ·ε, computed in place (the same float32 operations as m + noise * ε: the
    # estimates are bit for bit those of the out-of-place form, with fewer temporaries).
    draws = rng.standard_normal((len(m), samples, n), np.float32)
    draws *= np.float32(noise)
    draws += m[:, None, :]
    np.copyto(draws, -np.inf, where=~v[:, None, :])
    # The E-th largest draw; a list with fewer than E valid candidates gets -inf (all in).
    kth = np.partition(draws, n - e, axis=-1)[..., n - e:n - e + 1]
    hits = draws >= kth
    hits &= v[:, None, :]
    out[start:start + rows] = np.add.reduce(hits, axis=1, dtype=np.int32) / samples
  return out
