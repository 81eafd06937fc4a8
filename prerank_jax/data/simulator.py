"""A vectorised numpy simulator of a recommendation cascade, deterministic by seed.

The world (shared by the ``train``, ``valid`` and ``test`` splits; ``d = latent_dim``):

* users ``u ~ N(0, I_d)``, items ``v ~ N(0, I_d)``, item popularity ``b ~ N(0, 1)``.
* true utility, with ``s = u·v / sqrt(d)``::

      z(u, v) = s + 0.5·tanh(2·s) + 0.5·b

  The ``tanh`` term makes utility non-linear in the interaction (a steep step around
  ``s = 0``), so a model has to learn more than a bilinear form.
* grade thresholds: ``t_k = quantile(z_ref, 1 − 0.2·0.4^(k−1))`` for ``k = 1..K−1``, where
  ``z_ref`` is the utility of 32768 uniformly random (user, item) pairs of this world. A
  grade is ``Σ_k [z > t_k]``: 20% of random pairs reach grade ≥ 1, 8% grade ≥ 2, ...
  ``true_relevance`` uses ``K = relevance_grades``.

Each request (vectorised over requests, in chunks to bound memory):

1. a uniformly random user; a list length ``L ~ U{min_list_size, ..., list_size}``.
2. retrieval: ``retrieval_pool·N`` items drawn uniformly with replacement, scored by
   ``z + retrieval_noise·ε``; the top ``L`` are kept (a repeated item is only kept when the
   pool has too few distinct items). Kept candidates are shuffled, so the array position
   carries no information; positions ``≥ L`` are padding (``valid=False``, all zeros).
3. observed features (fresh noise per candidate occurrence, fixed projections
   ``P_c: d→Fc``, ``P_v: d→Fi−1``, ``P_x: d→Fx`` with entries ``N(0, 1/d)``)::

      context = u @ P_c + feature_noise·ε
      items   = concat(v @ P_v, b) + feature_noise·ε
      cross   = (u ⊙ v) @ P_x + cross_noise·ε     # the interaction; teacher only

4. logging policy: ``z + logging_popularity·b + logging_noise·ε`` over valid candidates
   (``logging_popularity = 0`` in every preset: a logging ranker that over-promotes popular
   items is a knob); its top ``E = num_exposed`` are ``exposed``; position ``p`` (1-based)
   is the rank among them.
5. labels (exposed only): examined with propensity ``θ_p = (1/p)^position_bias``; an
   examined candidate gets the grade of ``z + 0.5·Logistic`` under the thresholds with
   ``K = label_grades`` (for ``K = 2``: a click with probability ``σ((z − t_1)/0.5)``).
   Unexamined or unexposed candidates have label 0. ``propensity`` is ``θ_p`` where
   exposed and 1 elsewhere; ``teacher_scores`` is ``None``.
6. ``exposure_propensity``: the probability ``π_i`` that step 4 exposes candidate ``i``
   (over the logging noise, for this request's utilities), estimated by Monte Carlo with
   512 redraws of the noise (standard error ≤ 0.022; see ``prerank_jax/data/exposure.py``);
   1 on padding. ``π_i·θ`` is then the probability that a candidate is exposed at a given
   position and examined, which is what importance weighting divides by.
7. The probability that an examined candidate is clicked (``K = 2``) is
   ``σ((z − t_1)/0.5)``: the "full-information" target that unbiased estimators recover.

Nothing here is tuned in favour of any method; the constants above are the whole model.

**The ID world** (``ids=True``; off by default, and then nothing below is drawn, so every
float-only world is unchanged bit for bit). Extra knobs, optional: ``num_authors``,
``num_categories``, ``sequence_length`` (L) and ``zipf_exponent`` (a):

* every item has a category ``c(i)`` and an author ``a(i)``, drawn with Zipf popularity
  (``P(rank k) ∝ k^(−a)`` over a random order of the categories / authors); categories
  and authors have latents ``g_c, h_a ~ N(0, I_d)`` and the item latent becomes
  ``v_i = sqrt(0.4)·g_{c(i)} + sqrt(0.3)·h_{a(i)} + sqrt(0.3)·e_i`` (``e_i`` the float
  world's item draw; still ``N(0, I_d)``), so the hidden utility ``z`` depends on the
  category and author IDs, and items of one category or author are alike;
* users and items are drawn with Zipf popularity too (requests' users, retrieval pools);
* every user has a behaviour sequence: ``ℓ_u ~ U{1, ..., L}`` items drawn from their
  interests: the top ``ℓ_u`` of ``8L`` popularity-drawn items by ``z(u, v) + Gumbel``,
  most recent first; slots ``>= ℓ_u`` are padding (``sequence_mask`` False, IDs 0);
* the batch gets ``context_ids = [user]``, ``item_ids = [item, author, category]`` and
  ``sequence_ids [L, 3]`` of the same three fields, each ID shifted by +1 (row 0 is the
  reserved padding/OOV row); :func:`id_vocab` gives the vocabulary sizes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import numpy as np

from prerank_jax.batch import Batch, IdVocab
from prerank_jax.data.exposure import exposure_probability, seeded_rng

_UTILITY_TANH = 0.5  # weight of the non-linear interaction term
_UTILITY_BIAS = 0.5  # weight of the item popularity bias
_LABEL_NOISE = 0.5  # scale of the logistic noise on labels
_TOP_FRACTION, _GRADE_DECAY = 0.2, 0.4  # P(grade >= k) = 0.2·0.4^(k-1) on random pairs
_REFERENCE_PAIRS = 32768
_CHUNK_ELEMENTS = 1 << 21  # bounds the per-chunk working set (floats)

_INF = None  # an open upper bound
# name -> (kind, lower bound, upper bound); a str bound names another knob.
_KNOBS: dict[str, tuple[str, Any, Any]] = {
    "num_requests": ("int", 1, _INF),
    "num_eval_requests": ("int", 1, _INF),
    "list_size": ("int", 1, _INF),
    "min_list_size": ("int", 1, "list_size"),
    "num_exposed": ("int", 1, "min_list_size"),
    "num_users": ("int", 1, _INF),
    "num_items": ("int", 1, _INF),
    "latent_dim": ("int", 1, _INF),
    "context_features": ("int", 1, _INF),
    "item_features": ("int", 1, _INF),
    "cross_features": ("int", 1, _INF),
    "feature_noise": ("float", 0.0, _INF),
    "cross_noise": ("float", 0.0, _INF),
    "retrieval_pool": ("int", 1, _INF),
    "retrieval_noise": ("float", 0.0, _INF),
    "logging_noise": ("float", 0.0, _INF),
    "logging_popularity": ("float", 0.0, _INF),
    "position_bias": ("float", 0.0, _INF),
    "label_grades": ("int", 2, _INF),
    "relevance_grades": ("int", 2, _INF),
}

_COMMON = dict(feature_noise=0.3, cross_noise=0.3, retrieval_noise=1.0, logging_noise=0.5,
               logging_popularity=0.0, position_bias=1.0, label_grades=2, relevance_grades=4)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(num_requests=64, num_eval_requests=32, list_size=20, min_list_size=12,
                 num_exposed=5, num_users=50, num_items=300, latent_dim=4,
                 context_features=4, item_features=5, cross_features=4, retrieval_pool=3,
                 **_COMMON),
    "small": dict(num_requests=2000, num_eval_requests=500, list_size=100, min_list_size=60,
                  num_exposed=10, num_users=1000, num_items=5000, latent_dim=8,
                  context_features=8, item_features=8, cross_features=8, retrieval_pool=4,
                  **_COMMON),
    "default": dict(num_requests=20000, num_eval_requests=2000, list_size=200,
                    min_list_size=120, num_exposed=20, num_users=10000, num_items=50000,
                    latent_dim=16, context_features=16, item_features=16,
                    cross_features=16, retrieval_pool=4, **_COMMON),
    # Long lists, for the streaming input pipeline (input_pipeline="grain") and
    # accelerators; configs/large_lists.py trains on them. Both hold 20M candidates in
    # train (about 3 GB of float32 features and masks).
    "large": dict(num_requests=20_000, num_eval_requests=1_000, list_size=1_000,
                  min_list_size=600, num_exposed=20, num_users=20_000, num_items=200_000,
                  latent_dim=16, context_features=16, item_features=16, cross_features=16,
                  retrieval_pool=4, **_COMMON),
    "xlarge": dict(num_requests=4_000, num_eval_requests=500, list_size=5_000,
                   min_list_size=3_000, num_exposed=50, num_users=20_000,
                   num_items=1_000_000, latent_dim=16, context_features=16,
                   item_features=16, cross_features=16, retrieval_pool=4, **_COMMON),
}


# The ID world's knobs: optional, name -> (kind, lower bound, upper bound, default).
_ID_KNOBS: dict[str, tuple[str, Any, Any, Any]] = {
    "ids": ("bool", False, True, False),
    "num_authors": ("int", 1, _INF, 500),
    "num_categories": ("int", 1, _INF, 20),
    "sequence_length": ("int", 1, _INF, 20),
    "zipf_exponent": ("float", 0.0, _INF, 1.0),
}
_ID_WEIGHTS = (0.4, 0.3, 0.3)  # variance shares of category, author and own item latent
_SEQUENCE_POOL = 8             # a user's sequence is the best of 8·L drawn items


class SimulatorConfigError(ValueError):
  """A simulator knob is missing, unknown or out of range; the message names it."""


def validate_simulator_params(params: Mapping[str, Any], *, prefix: str = "data") -> dict:
  """Checks every knob's type and range (see ``_KNOBS``).

  Args:
    params: flat mapping (dict or ConfigDict) knob name → value; must hold every knob.
    prefix: config path used in messages, e.g. ``"data"`` → ``"data.num_exposed: ..."``.

  Returns:
    A plain dict of the knobs as Python ``int``/``float``.

  Raises:
    SimulatorConfigError: naming the knob, its allowed range and the value found.
  """
  keys = set(params.keys())
  unknown = sorted(keys - set(_KNOBS) - set(_ID_KNOBS))
  if unknown:
    raise SimulatorConfigError(f"{prefix}: unknown knob(s) {unknown}; valid knobs are "
                               f"{list(_KNOBS)}, optionally {list(_ID_KNOBS)}")
  out: dict[str, Any] = {}
  for name, (kind, lo, hi) in _KNOBS.items():  # ordered so bounds are checked first
    if name not in keys:
      raise SimulatorConfigError(f"{prefix}.{name}: missing; every knob must be set "
                                 f"(valid knobs: {list(_KNOBS)})")
    value = params[name]
    hi_value = out[hi] if isinstance(hi, str) else hi
    hi_text = "inf)" if hi is None else (f"{hi}={hi_value}]" if isinstance(hi, str)
                                         else f"{hi}]")
    what = "an int" if kind == "int" else "a finite number"
    message = f"{prefix}.{name}: must be {what} in [{lo}, {hi_text}, got {value!r}"
    if isinstance(value, (bool, np.bool_)):
      raise SimulatorConfigError(message)
    if kind == "int":
      ok = isinstance(value, numbers.Integral)
      value = int(value) if ok else value
    else:
      ok = isinstance(value, numbers.Real) and math.isfinite(float(value))
      value = float(value) if ok else value
    if not ok or value < lo or (hi_value is not None and value > hi_value):
      raise SimulatorConfigError(message)
    out[name] = value
  if keys & set(_ID_KNOBS):  # the ID world's knobs: only when any is given
    for name, (kind, lo, hi, default) in _ID_KNOBS.items():
      value = params[name] if name in keys else default
      if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
          raise SimulatorConfigError(f"{prefix}.{name}: must be True or False, got {value!r}")
        out[name] = bool(value)
        continue
      ok = (not isinstance(value, (bool, np.bool_))
            and isinstance(value, numbers.Integral if kind == "int" else numbers.Real)
            and math.isfinite(float(value)) and value >= lo)
      if not ok:
        what = "an int" if kind == "int" else "a finite number"
        raise SimulatorConfigError(f"{prefix}.{name}: must be {what} in [{lo}, inf), "
                                   f"got {value!r}")
      out[name] = int(value) if kind == "int" else float(value)
  return out


def id_vocab(params: Mapping[str, Any]) -> IdVocab:
  """Vocabulary sizes of the ID world's columns (reserved row 0 included):
  ``context = (num_users + 1,)``, ``items = (num_items + 1, num_authors + 1,
  num_categories + 1)``.

  Raises:
    SimulatorConfigError: the knobs do not switch the ID world on (``ids`` False).
  """
  p = validate_simulator_params(params)
  if not p.get("ids", False):
    raise SimulatorConfigError("data.ids: the simulator emits IDs only with ids=True")
  return IdVocab(context=(p["num_users"] + 1,),
                 items=(p["num_items"] + 1, p["num_authors"] + 1, p["num_categories"] + 1))


def zipf_cdf(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
  """Cumulative probabilities ``[size]`` of a Zipf law over a random order of ``size``
  things: thing ``i`` has probability ``∝ rank_i^(−exponent)``. Draw with
  ``searchsorted(cdf, uniform)``."""
  weights = np.arange(1, size + 1, dtype=np.float64) ** -float(exponent)
  weights = weights[rng.permutation(size)]
  cdf = np.cumsum(weights / weights.sum())
  cdf[-1] = 1.0
  return cdf


def _zipf_draw(rng: np.random.Generator, cdf: np.ndarray, size) -> np.ndarray:
  return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


def _utility(s: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """True utility from the scaled interaction ``s`` and the item bias (any shape)."""
  return s + _UTILITY_TANH * np.tanh(2.0 * s) + _UTILITY_BIAS * bias


def _thresholds(reference: np.ndarray, grades: int) -> np.ndarray:
  """``[grades − 1]`` increasing cut points on the reference utility distribution."""
  levels = 1.0 - _TOP_FRACTION * _GRADE_DECAY ** np.arange(grades - 1)
  return np.quantile(reference, levels).astype(np.float32)


def _grade(z: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
  return (z[..., None] > thresholds).sum(-1).astype(np.float32)


def _make_world(rng: np.random.Generator, p: dict) -> dict[str, np.ndarray]:
  d = p["latent_dim"]
  normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
  world = {
      "users": normal(p["num_users"], d),
      "items": normal(p["num_items"], d),
      "bias": normal(p["num_items"]),
      # N(0, 1/d) entries keep every projected feature at about unit variance.
      "proj_context": normal(d, p["context_features"]) / math.sqrt(d),
      "proj_items": normal(d, p["item_features"] - 1) / math.sqrt(d),
      "proj_cross": normal(d, p["cross_features"]) / math.sqrt(d),
  }
  if p.get("ids", False):
    _add_ids(rng, world, p)
  ru = rng.integers(p["num_users"], size=_REFERENCE_PAIRS)
  ri = rng.integers(p["num_items"], size=_REFERENCE_PAIRS)
  s = np.einsum("rd,rd->r", world["users"][ru], world["items"][ri]) / math.sqrt(d)
  reference = _utility(s, world["bias"][ri])
  world["truth_thresholds"] = _thresholds(reference, p["relevance_grades"])
  world["label_thresholds"] = _thresholds(reference, p["label_grades"])
  if p.get("ids", False):
    world["sequence"] = _behaviour(rng, world, p)
  return world


def _add_ids(rng: np.random.Generator, world: dict, p: dict) -> None:
  """The ID world's item structure and popularity (see the module docstring)."""
  d, a = p["latent_dim"], p["zipf_exponent"]
  world["category"] = _zipf_draw(rng, zipf_cdf(rng, p["num_categories"], a), p["num_items"])
  world["author"] = _zipf_draw(rng, zipf_cdf(rng, p["num_authors"], a), p["num_items"])
  g = rng.standard_normal((p["num_categories"], d), dtype=np.float32)
  h = rng.standard_normal((p["num_authors"], d), dtype=np.float32)
  wc, wa, we = (math.sqrt(w) for w in _ID_WEIGHTS)
  world["items"] = (wc * g[world["category"]] + wa * h[world["author"]]
                    + we * world["items"]).astype(np.float32)
  world["item_cdf"] = zipf_cdf(rng, p["num_items"], a)
  world["user_cdf"] = zipf_cdf(rng, p["num_users"], a)


def _behaviour(rng: np.random.Generator, world: dict, p: dict) -> np.ndarray:
  """``[num_users, L, 3]`` int32 behaviour IDs (item, author, category; +1, 0 = padding)."""
  users, length, d = p["num_users"], p["sequence_length"], p["latent_dim"]
  pool_size = _SEQUENCE_POOL * length
  out = np.zeros((users, length, 3), np.int32)
  block = max(1, _CHUNK_ELEMENTS // (pool_size * (d + 2)))
  for start in range(0, users, block):
    u = world["users"][start:start + block]                                    # [b, d]
    b = u.shape[0]
    pool = _zipf_draw(rng, world["item_cdf"], (b, pool_size))                  # [b, P]
    z = _utility(np.einsum("bd,bpd->bp", u, world["items"][pool]) / math.sqrt(d),
                 world["bias"][pool])
    pick = np.argsort(-(z + rng.gumbel(size=z.shape)), axis=1, kind="stable")[:, :length]
    items = np.take_along_axis(pool, pick, 1)                                  # [b, L]
    kept = np.arange(length) < rng.integers(1, length + 1, size=b)[:, None]
    ids = np.stack([items + 1, world["author"][items] + 1,
                    world["category"][items] + 1], axis=-1)
    out[start:start + b] = np.where(kept[..., None], ids, 0)
  return out


def _simulate_chunk(rng: np.random.Generator, world: dict, p: dict, c: int) -> dict:
  """Simulates ``c`` requests; returns the Batch fields as a dict of ``[c, ...]`` arrays."""
  n, d, e = p["list_size"], p["latent_dim"], p["num_exposed"]
  normal = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
  with_ids = p.get("ids", False)
  uid = (_zipf_draw(rng, world["user_cdf"], c) if with_ids
         else rng.integers(p["num_users"], size=c))
  u = world["users"][uid]                                                      # [c, d]
  lengths = rng.integers(p["min_list_size"], n + 1, size=c)                    # [c]
  valid = np.arange(n) < lengths[:, None]                                      # [c, n]

  # Retrieval: score a pool (uniform; by popularity in the ID world), keep the top
  # `length` (a prefix of the top n).
  pool_shape = (c, p["retrieval_pool"] * n)
  pool = np.sort(_zipf_draw(rng, world["item_cdf"], pool_shape) if with_ids
                 else rng.integers(p["num_items"], size=pool_shape), axis=1)
  s_pool = np.einsum("rd,rpd->rp", u, world["items"][pool]) / math.sqrt(d)
  r_score = _utility(s_pool, world["bias"][pool]) + p["retrieval_noise"] * normal(*pool.shape)
  # Repeats sit next to each other after the sort; demote them below every distinct item.
  repeat = np.zeros(pool.shape, bool)
  repeat[:, 1:] = pool[:, 1:] == pool[:, :-1]
  r_score = np.where(repeat, -np.inf, r_score)
  ids = np.take_along_axis(pool, np.argsort(-r_score, axis=1, kind="stable")[:, :n], 1)
  # Shuffle the kept candidates so array position carries no retrieval information.
  keys = np.where(valid, rng.random((c, n)), 2.0)
  ids = np.take_along_axis(ids, np.argsort(keys, axis=1, kind="stable"), 1)

  v, bias = world["items"][ids], world["bias"][ids]                             # [c, n, d]
  z = _utility(np.einsum("rd,rnd->rn", u, v) / math.sqrt(d), bias)                # [c, n]
  context = u @ world["proj_context"] + p["feature_noise"] * normal(c, p["context_features"])
  items = np.concatenate([v @ world["proj_items"], bias[..., None]], axis=-1)
  items = items + p["feature_noise"] * normal(c, n, p["item_features"])
  cross = (u[:, None, :] * v) @ world["proj_cross"]
  cross = cross + p["cross_noise"] * normal(c, n, p["cross_features"])

  logs = draw_logs(rng, z, valid, p, world["label_thresholds"], popularity=bias)
  # Exposure probabilities by Monte Carlo over the logging noise, from a generator of its
  # own (seeded by this chunk's logging scores) so the simulated data do not depend on it.
  exposure = exposure_probability(z + p["logging_popularity"] * bias, valid, num_exposed=e,
                                  noise=p["logging_noise"], rng=seeded_rng(logs.pop("log_score")))

  pad = ~valid
  items[pad], cross[pad] = 0.0, 0.0
  truth = np.where(valid, _grade(z, world["truth_thresholds"]), 0.0)
  out = dict(context=context, items=items, cross=cross, valid=valid,
             true_relevance=truth, exposure_propensity=np.where(valid, exposure, 1.0),
             **logs)
  if with_ids:
    out["context_ids"] = (uid + 1).astype(np.int32)[:, None]
    item_ids = np.stack([ids + 1, world["author"][ids] + 1, world["category"][ids] + 1], -1)
    out["item_ids"] = np.where(valid[..., None], item_ids, 0).astype(np.int32)
    out["sequence_ids"] = world["sequence"][uid]
    out["sequence_mask"] = world["sequence"][uid][..., 0] > 0
  return out


def draw_logs(rng: np.random.Generator, z: np.ndarray, valid: np.ndarray, p: Mapping[str, Any],
              label_thresholds: np.ndarray, popularity: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
  """Steps 4 and 5 of the module docstring: one draw of the logging policy, positions,
  examination and labels for utilities ``z`` ``[c, n]``.

  Returns ``label``, ``exposed``, ``propensity`` (θ of the realised position where exposed,
  else 1) and ``log_score`` (the noisy logging scores, ``-inf`` on padding). Separate from
  the rest of a request so that tests can redraw the logs of fixed lists many times.
  ``popularity`` (the item bias ``b``, ``[c, n]``) enters the logging score with weight
  ``p["logging_popularity"]``.
  """
  c, n = z.shape
  e = p["num_exposed"]
  # Logging policy: a noisy production ranker exposes its top e valid candidates.
  log_mean = z if popularity is None else z + p.get("logging_popularity", 0.0) * popularity
  log_score = np.where(valid, log_mean + p["logging_noise"] * rng.standard_normal(
      (c, n), np.float32), -np.inf)
  top = np.argsort(-log_score, axis=1, kind="stable")[:, :e]
  position = np.zeros((c, n), np.int64)
  np.put_along_axis(position, top, np.arange(1, e + 1)[None, :], axis=1)
  exposed = position > 0
  theta = np.where(exposed, (1.0 / np.maximum(position, 1)) ** p["position_bias"], 1.0)
  examined = exposed & (rng.random((c, n)) < theta)
  noisy = z + _LABEL_NOISE * rng.logistic(size=(c, n)).astype(np.float32)
  label = np.where(examined, _grade(noisy, label_thresholds), 0.0)
  return dict(label=label, exposed=exposed, propensity=theta, log_score=log_score)


def _simulate_split(rng: np.random.Generator, world: dict, p: dict, r: int) -> Batch:
  n = p["list_size"]
  per_request = p["retrieval_pool"] * n * (p["latent_dim"] + 2) + n * (
      p["latent_dim"] + p["item_features"] + p["cross_features"] + 8)
  chunk = max(1, _CHUNK_ELEMENTS // per_request)
  out: dict[str, np.ndarray] = {}
  for start in range(0, r, chunk):
    c = min(chunk, r - start)
    for name, value in _simulate_chunk(rng, world, p, c).items():
      if name not in out:
        dtype = (np.bool_ if value.dtype == np.bool_ else
                 np.int32 if np.issubdtype(value.dtype, np.integer) else np.float32)
        out[name] = np.empty((r,) + value.shape[1:], dtype)
      out[name][start:start + c] = value
  return Batch(**out)


def simulate(params: Mapping[str, Any], *, seed: int) -> dict[str, Batch]:
  """Simulates one world and three disjoint sets of requests from it.

  Args:
    params: every knob of ``_KNOBS`` (e.g. ``PRESETS["small"]``), checked by
      :func:`validate_simulator_params`.
    seed: the only source of randomness; equal seeds give identical arrays.

  Returns:
    ``{"train", "valid", "test"}`` → :class:`Batch` with ``R = num_requests`` (train) or
    ``num_eval_requests`` (valid, test) and ``N = list_size``: ``context [R, Fc]``,
    ``items [R, N, Fi]``, ``cross [R, N, Fx]``,
    ``label/true_relevance/propensity/exposure_propensity [R, N]``
    float32, ``exposed/valid [R, N]`` bool, ``teacher_scores=None``.
  """
  p = validate_simulator_params(params)
  rng = np.random.default_rng(seed)
  world = _make_world(rng, p)
  sizes = {"train": p["num_requests"], "valid": p["num_eval_requests"],
           "test": p["num_eval_requests"]}
  return {split: _simulate_split(rng, world, p, r) for split, r in sizes.items()}
