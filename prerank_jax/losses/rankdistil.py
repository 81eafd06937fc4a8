"""RankDistil: distil the teacher's *top-k ordering* through sampled Plackett–Luce rankings.

The teacher's scores define a Plackett–Luce (PL) distribution over permutations of the
list, PL(π | t/T). Permutations are sampled with the Gumbel-max trick (sorting t/T plus
i.i.d. Gumbel noise draws a permutation from exactly this PL model; Yellott 1977), and
the student maximises the PL likelihood of the first k places of each sample (top-k
ListMLE). Every not-yet-placed candidate, including the whole tail below k, appears in the
denominators, so the student is pushed to order the teacher's head correctly *and* to
keep the tail's scores below it, without any term on the tail's internal order.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from prerank_jax.metrics.ranking import ranks
from prerank_jax.reduce import ReduceFn, masked, safe_reduce

_NEG = -1e30  # a finite "minus infinity" (see distill._NEG)

# Where the temperature T goes: "teacher" divides the teacher's logits in the PL model the
# permutations are sampled from (this project's default); "student" divides the student's
# logits in the PL likelihood, with permutations sampled from PL(t), as the reference
# implementation does (TF-Ranking's ``CoupledRankDistilLoss``: ``_RankingLoss.get_logits``
# divides the logits, i.e. the student's scores, by ``temperature``; the Gumbel noise is
# added to the raw teacher scores).
TEMPERATURE_PLACEMENTS = ("teacher", "student")


def sample_plackett_luce(
    rng: jax.Array,
    logits: jnp.ndarray,
    *,
    where: jnp.ndarray,
    num_samples: int,
    temperature: float | jnp.ndarray = 1.0,
) -> jnp.ndarray:
  """Samples permutations from PL(softmax(logits / T)) with the Gumbel-max trick.

  Definition:
    g ~ Gumbel(0, 1) i.i.d. of shape ``[S, ..., N]``
    order = argsort(−(logits/T + g)) over the valid candidates; masked slots come last
    P(order[0] = i) = softmax(logits/T)_i, and recursively for later places (PL).

  Args:
    rng: a PRNG key.
    logits: ``[..., N]`` teacher logits.
    where: ``[..., N]`` bool, valid candidates.
    num_samples: S, static.
    temperature: T > 0, traced; T → 0 gives the teacher's ranking, T → ∞ uniform.

  Returns:
    int32 ``[S, ..., N]``: ``order[..., r]`` is the index of the candidate at place r + 1.
  """
  logits = masked(jax.lax.stop_gradient(logits), where)
  gumbel = jax.random.gumbel(rng, (num_samples,) + logits.shape, logits.dtype)
  perturbed = logits / temperature + gumbel
  rank = ranks(perturbed, where=jnp.broadcast_to(where, perturbed.shape))
  return jnp.argsort(rank, axis=-1).astype(jnp.int32)


def top_k_listmle(
    scores: jnp.ndarray,
    order: jnp.ndarray,
    *,
    where: jnp.ndarray,
    k: float | jnp.ndarray,
) -> jnp.ndarray:
  """Negative top-k Plackett–Luce log-likelihood of a given permutation, per list.

  Definition:
    ℓ = −Σ_{r=1}^{min(k, n)} [ s_{π_r} − log Σ_{j=r}^{n} exp(s_{π_j}) ]

  where π = ``order`` lists the n valid candidates first. k ≥ n is the full ListMLE
  (Xia et al. 2008); smaller k is the top-k PL likelihood (Xia et al. 2009). k is
  applied as ``place <= k``, so it may be traced.

  Args:
    scores: ``[..., N]`` student logits.
    order: int ``[..., N]`` permutation (valid candidates first), e.g. from
      :func:`sample_plackett_luce`.
    where: ``[..., N]`` bool, valid candidates.
    k: the number of places scored (traced scalar).

  Returns:
    ``[...]`` per-list losses (0 for a list with nothing valid).
  """
  where = jnp.broadcast_to(where, order.shape)
  s = jnp.broadcast_to(masked(scores, where), order.shape)
  s_sorted = jnp.take_along_axis(s, order, axis=-1)
  valid_sorted = jnp.take_along_axis(where, order, axis=-1)
  z = jnp.where(valid_sorted, s_sorted, _NEG)
  lse = jax.lax.cumlogsumexp(z, axis=z.ndim - 1, reverse=True)
  place = jnp.arange(1, order.shape[-1] + 1, dtype=jnp.float32)
  scored = valid_sorted & (place <= jnp.asarray(k, jnp.float32)[..., None])
  return -jnp.sum(jnp.where(scored, s_sorted - lse, 0.0), axis=-1)


def rankdistil_loss(
    student_scores: jnp.ndarray,
    teacher_scores: jnp.ndarray,
    *,
    where: jnp.ndarray,
    rng: Optional[jax.Array],
    temperature: float | jnp.ndarray = 1.0,
    rankdistil_topk: float | jnp.ndarray = 10.0,
    rankdistil_num_samples: int = 8,
    rankdistil_temperature_on: str = "teacher",
    reduce_fn: ReduceFn = jnp.mean,
) -> jnp.ndarray:
  """RankDistil: top-k ListMLE of the student on permutations sampled from the teacher.

  Definition (``rankdistil_temperature_on="teacher"``, the default):
    π^(1..S) ~ PL(softmax(t / T))   (Gumbel-max, :func:`sample_plackett_luce`)
    ℓ_list = (1/S) Σ_s −Σ_{r=1}^{min(k, n)} [ s_{π^s_r} − log Σ_{j≥r} exp(s_{π^s_j}) ]
    loss = mean of ℓ_list over lists with a valid candidate        (``jnp.mean``)

  Definition (``rankdistil_temperature_on="student"``, the reference implementation's
  placement, TF-Ranking ``CoupledRankDistilLoss(temperature=T)``):
    π^(1..S) ~ PL(softmax(t))       (Gumbel noise on the raw teacher logits)
    ℓ_list = (1/S) Σ_s −Σ_{r=1}^{min(k, n)} [ s_{π^s_r}/T − log Σ_{j≥r} exp(s_{π^s_j}/T) ]

  Where T goes: with "teacher", T only sharpens or flattens the teacher's sampling
  distribution and the student's PL model uses its raw logits; with "student", the
  permutations follow the teacher's own PL model and T rescales the student's logits
  (a student trained at T then ranks by s, which orders as s/T). Neither needs a T²
  factor (the paper has none). The estimate is unbiased for E_π[top-k ListMLE];
  ``rankdistil_num_samples`` trades variance for compute. Cost: S sorts of ``[..., N]``
  per step, memory O(S·R·N) (no N×N matrix).

  Remaining differences from TF-Ranking's implementation (README, "Where we differ"):
  masked candidates are excluded from the PL denominators (TF-Ranking gives them the
  score log(1e-10), a ~1e-10 share), lists are averaged over all lists with a valid
  candidate (TF-Ranking weights out lists whose teacher scores sum to ≤ 0, a label
  convention that does not fit logits), and ties in a sample are broken by lower index
  (TF-Ranking shuffles them; Gumbel ties have probability 0).

  Args:
    student_scores: ``[..., N]`` student logits.
    teacher_scores: ``[..., N]`` teacher logits (frozen).
      Assumes logits: permutations are sampled from the Plackett–Luce model softmax(t/T),
      whose sharpness their scale sets; a rank enters as −rank.
    where: ``[..., N]`` bool, valid candidates.
    rng: a PRNG key (the trainer passes a fresh one each step); required.
    temperature: T > 0 of the teacher's PL model, traced.
    rankdistil_topk: k, the number of places scored, traced (≥ 1).
    rankdistil_num_samples: S, static.
    rankdistil_temperature_on: ``"teacher"`` or ``"student"`` (static), see above.
    reduce_fn: ``jnp.mean``, ``jnp.sum`` or ``None`` (per list ``[...]``).

  Returns:
    The reduced loss or per-list losses ``[...]``.

  Reference:
    Reddi, Pasumarthi, Menon, Rawat, Yu, Kim, Veit, Kumar. "RankDistil: Knowledge
    Distillation for Ranking." AISTATS 2021. Xia, Liu, Li. "Statistical Consistency of
    Top-k Ranking." NeurIPS 2009 (top-k ListMLE).
  """
  if rng is None:
    raise ValueError("loss.kd='rankdistil' samples permutations and needs rng= (the "
                     "trainer passes one every step)")
  if rankdistil_temperature_on not in TEMPERATURE_PLACEMENTS:
    raise ValueError(f"loss.options.rankdistil_temperature_on: must be one of "
                     f"{list(TEMPERATURE_PLACEMENTS)}, got {rankdistil_temperature_on!r}")
  if rankdistil_temperature_on == "teacher":
    order = sample_plackett_luce(rng, teacher_scores, where=where,
                                 num_samples=rankdistil_num_samples, temperature=temperature)
    scores = student_scores
  else:
    order = sample_plackett_luce(rng, teacher_scores, where=where,
                                 num_samples=rankdistil_num_samples, temperature=1.0)
    scores = masked(student_scores, where) / temperature
  per_sample = top_k_listmle(scores, order, where=where, k=rankdistil_topk)
  per_list = jnp.mean(per_sample, axis=0)
  return safe_reduce(per_list, where=jnp.any(where, axis=-1), reduce_fn=reduce_fn)
