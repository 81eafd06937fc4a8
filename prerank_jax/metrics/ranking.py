"""Ranking metrics for pre-ranking evaluation: NDCG, MRR, recall, precision, retention,
teacher consistency and end-to-end cascade quality.

Conventions (after google/rax):

* Pure ``jnp`` functions over the LAST axis (the list axis); inputs are ``[..., N]``.
* Every metric returns PER-LIST values of shape ``[...]`` (the list axis reduced),
  never NaN; the caller averages over lists, e.g. with :func:`mean_over_lists`.
* ``where`` is an optional bool ``[..., N]`` mask of valid candidates. Masked
  candidates never affect anything: their scores and labels may hold any value
  (NaN, inf, huge) and the result equals the one on the list with them sliced out.
* Hyperparameters (``k``, ``m``, ``keep_ratio``) are keyword-only and may be traced
  jnp values: a scalar or an array broadcastable to the list shape ``[...]``. Cutoffs
  are applied as ``rank <= k``, so evaluation can be vmapped over ``k``/``m`` and
  changing them never recompiles. A static Python ``int`` cutoff takes a faster path
  (``lax.top_k``, O(N log k)) with identical results; pass a jnp scalar to sweep it.
* Ranking is by descending score; ties are broken by the lower list index first, so
  every metric is deterministic. Valid NaN scores rank after every other valid score.
  Unlike rax, a valid candidate scored ``-inf`` is still ranked (and so "retrieved"):
  only ``where`` removes candidates.
* A list shorter than a cutoff ``k`` is scored over its length (NDCG@k over min(k, n),
  as trec_eval and LightGBM do); only precision@k keeps trec_eval's fixed denominator k.
* A list where a metric is undefined (no relevant candidate) gets 0. Average with
  :func:`mean_over_defined`, which excludes such lists by default (or scores them 0 or
  1) and returns how many there were, or with :func:`mean_over_lists`.

References:
  Järvelin & Kekäläinen. "Cumulated gain-based evaluation of IR techniques." TOIS 2002.
  Burges et al. "Learning to rank using gradient descent." ICML 2005 (exp2 gain).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Union

import jax.numpy as jnp
from jax import lax

from prerank_jax.reduce import safe_reduce

Array = jnp.ndarray
Hyper = Union[int, float, Array]  # a Python scalar or a (possibly traced) jnp value

_GAINS: dict[str, Callable[[Array], Array]] = {
    "exp2": lambda y: jnp.exp2(y) - 1.0,
    "linear": lambda y: y,
}


def _gain_fn(gain: str) -> Callable[[Array], Array]:
  if not isinstance(gain, str) or gain not in _GAINS:
    raise ValueError(f"gain must be one of {tuple(_GAINS)}, got {gain!r}")
  return _GAINS[gain]


def _valid_mask(where: Optional[Array], shape: tuple[int, ...]) -> Array:
  """Returns the bool validity mask broadcast to ``shape`` (all True if ``None``)."""
  if where is None:
    return jnp.ones(shape, dtype=jnp.bool_)
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"where must be a bool mask, got dtype {where.dtype}")
  return jnp.broadcast_to(where, shape)


def _per_list(x: Hyper) -> Array:
  """Lifts a scalar or ``[...]`` hyperparameter so it broadcasts against ``[..., N]``."""
  return jnp.asarray(x)[..., None]


def _clean_labels(labels: Array, valid: Array) -> Array:
  """Float labels with masked slots set to 0 (so NaN/inf there cannot leak)."""
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.inexact):
    labels = labels.astype(jnp.float32)
  return jnp.where(valid, labels, jnp.zeros_like(labels))


def ranks(scores: Array, *, where: Optional[Array] = None) -> Array:
  """Computes 1-based ranks by descending score over the last axis.

  Definition:
    rank(i) = 1 + |{j valid : s_j > s_i}| + |{j valid : s_j = s_i, j < i}|   for valid i

    Masked candidates get the ranks ``n_valid + 1 .. N`` (by index), after all valid
    ones. Ties are broken deterministically by the lower index first. Valid NaN
    scores rank after all valid non-NaN scores; masked slots may hold anything
    (NaN, inf) without changing the ranks of valid candidates.

  Args:
    scores: ``[..., N]`` scores (float; integer and bool scores are compared exactly).
    where: optional bool ``[..., N]`` mask of valid candidates.

  Returns:
    ``[..., N]`` int32 ranks, a permutation of ``1..N`` in every list.

  References:
    Same tie convention as ``rax.utils.ranks`` without a ``key`` (stable order).
  """
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  order = _sort_order(scores, valid)
  index = jnp.broadcast_to(jnp.arange(scores.shape[-1], dtype=jnp.int32), scores.shape)
  # Invert the permutation with one scatter: order[j] is the candidate at rank j + 1.
  return _scatter_last(order, index + 1, scores.shape[-1]).astype(jnp.int32)


def _sort_order(scores: Array, valid: Array) -> Array:
  """The int32 ``[..., N]`` permutation of :func:`ranks`: ``order[..., j]`` is the index of
  the candidate at rank ``j + 1`` (one stable sort)."""
  size = scores.shape[-1]
  index = jnp.broadcast_to(jnp.arange(size, dtype=jnp.int32), scores.shape)
  key = _rank_key(scores, valid)
  if key is not None:
    # One integer key and a stable sort: ties keep the lower index first.
    _, order = lax.sort((key, index), dimension=-1, num_keys=1, is_stable=True)
  else:
    if scores.dtype == jnp.bool_:
      scores = scores.astype(jnp.int8)
    # Bitwise NOT reverses the order of signed and unsigned ints exactly (no overflow).
    descending = jnp.invert(jnp.where(valid, scores, jnp.zeros_like(scores)))
    # Sort keys, most significant first: valid first, higher score; stable for the index.
    _, _, order = lax.sort((~valid, descending, index), dimension=-1, num_keys=2,
                           is_stable=True)
  return order


class Ranking(NamedTuple):
  """One sort of a list, shared by every metric that ranks it (see :func:`rank_list`).

  ``order[..., j]`` is the index of the candidate at rank ``j + 1``; ``ranks`` its inverse
  (the 1-based ranks of :func:`ranks`); ``count`` the number of valid candidates ``[...]``
  (ranks ``1..count`` are the valid ones).
  """

  order: Array
  ranks: Array
  count: Array


def rank_list(scores: Array, *, where: Optional[Array] = None) -> Ranking:
  """Ranks a list once, for every metric of it: pass the result as ``ranking=``.

  Definition:
    ranks = :func:`ranks` (scores, where), order = its inverse permutation,
    count = Σ_i where_i

    Every metric of this module that takes ``ranking=`` (or ``student_ranking=``,
    ``teacher_ranking=``, ``ideal_ranking=``) then skips its own sort and gives the value
    it computes without one: the same ranks (ties, NaN and mask rules), so counts are
    identical and DCG sums agree to float32 rounding (with a ranking they run over the
    list with ``rank <= k`` instead of gathering the top k: on CPU a gather compiled
    about twice as slowly). The ranking must be of the same ``scores`` and ``where`` as
    the metric's. One sort per score vector instead of one per metric is how
    :func:`prerank_jax.evaluate.evaluate_scores` shares the order across its metrics.

  Args:
    scores: ``[..., N]`` scores.
    where: optional bool ``[..., N]`` mask of valid candidates.

  Returns:
    A :class:`Ranking` of int32 arrays.
  """
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  order = _sort_order(scores, valid)
  index = jnp.broadcast_to(jnp.arange(scores.shape[-1], dtype=jnp.int32), scores.shape)
  rank = _scatter_last(order, index + 1, scores.shape[-1]).astype(jnp.int32)
  return Ranking(order, rank, jnp.sum(valid, axis=-1, dtype=jnp.int32))


def restrict(ranking: Ranking, where: Array) -> Ranking:
  """The ranking of a subset of the ranked candidates, from their ranks alone.

  Definition:
    for i in S = {i : where_i ∧ ranks_i ≤ count}:  rank_S(i) = |{j ∈ S : ranks_j ≤ ranks_i}|

    the other candidates after them by index, exactly as :func:`rank_list` of the same
    scores with ``where=S`` (ties by the lower index, as the full ranking). It sorts the
    distinct int32 keys ``ranks`` (selected) or ``N + 1 + index`` (the others), never the
    scores again, so it needs neither the scores nor their NaN and tie rules. This is how
    the teacher ranks a student's survivors (:func:`cascade_top_k`) and how the logs'
    metrics rank the exposed subset. (An XLA sort compiles to a library call on CPU; a
    prefix sum over the list instead compiled several times slower.)

  Args:
    ranking: a :class:`Ranking` from :func:`rank_list`.
    where: bool ``[..., N]``: the subset (outside the ranked valid candidates it is ignored).

  Returns:
    The :class:`Ranking` of the subset.
  """
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"where must be a bool mask, got dtype {where.dtype}")
  shape = jnp.broadcast_shapes(where.shape, ranking.ranks.shape)
  rank = jnp.broadcast_to(ranking.ranks, shape)
  count = jnp.broadcast_to(ranking.count[..., None], shape)
  selected = jnp.broadcast_to(where, shape) & (rank <= count)
  size = shape[-1]
  index = jnp.broadcast_to(jnp.arange(size, dtype=jnp.int32), shape)
  key = jnp.where(selected, rank, size + 1 + index)
  _, order = lax.sort((key, index), dimension=-1, num_keys=1, is_stable=True)
  new_rank = _scatter_last(order, index + 1, size).astype(jnp.int32)
  return Ranking(order, new_rank, jnp.sum(selected, axis=-1, dtype=jnp.int32))


def _scatter_last(indices: Array, values: Array, size: int) -> Array:
  """``out[..., indices[..., j]] = values[..., j]`` into zeros ``[..., size]``; the indices
  of a list are distinct."""
  flat = indices.reshape(-1, indices.shape[-1])
  rows = jnp.arange(flat.shape[0], dtype=jnp.int32)[:, None]
  out = jnp.zeros((flat.shape[0], size), values.dtype)
  out = out.at[rows, flat].set(values.reshape(flat.shape), unique_indices=True)
  return out.reshape(*indices.shape[:-1], size)


def _rank_key(scores: Array, valid: Array) -> Optional[Array]:
  """An integer sort key for float scores: ascending key = descending rank order.

  The float's bits are mapped to a signed integer of the same width whose order is the
  float order (negatives flip their magnitude bits); -0.0 and +0.0 share one key. Valid
  NaN scores get the second-largest key and masked candidates the largest, so one
  single-key stable sort ranks: valid scores by value, then valid NaNs, then masked
  candidates, each tie by the lower index. ``None`` for integer and bool scores.
  """
  if not jnp.issubdtype(scores.dtype, jnp.floating):
    return None
  scores = lax.stop_gradient(scores)  # ranks are piecewise constant
  int_dtype = jnp.dtype(f"int{8 * scores.dtype.itemsize}")
  top = jnp.iinfo(int_dtype).max
  negated = -scores
  negated = jnp.where(negated == 0, jnp.zeros_like(negated), negated)  # -0.0 ties +0.0
  bits = lax.bitcast_convert_type(negated, int_dtype)
  key = bits ^ ((bits >> (8 * scores.dtype.itemsize - 1)) & jnp.asarray(top, int_dtype))
  key = jnp.where(jnp.isnan(scores), jnp.asarray(top - 1, int_dtype), key)
  return jnp.where(valid, key, jnp.asarray(top, int_dtype))


def _top_k_indices(scores: Array, valid: Array, k: int) -> Optional[tuple[Array, Array]]:
  """Indices ``[..., min(k, N)]`` of the top ``k`` by :func:`ranks` order, and validity.

  For a static Python ``k`` and float scores this is ``lax.top_k`` (O(N log k), and much
  faster than a sort on CPU) on the :func:`_rank_key` order; ``lax.top_k`` puts the
  lower index first among equals, as :func:`ranks` does. ``None`` when it does not apply.
  """
  if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
    return None
  key = _rank_key(scores, valid)
  if key is None:
    return None
  _, top = lax.top_k(jnp.invert(key), min(k, scores.shape[-1]))
  return top, jnp.take_along_axis(valid, top, axis=-1)


def top_m_mask(scores: Array, *, where: Optional[Array] = None, m: Hyper,
               ranking: Optional[Ranking] = None) -> Array:
  """Selects the valid candidates ranked within the top ``m``.

  Definition:
    top_m(i) = [where_i] · [rank(s_i) <= m]

    Exactly ``min(m, n_valid)`` candidates are selected per list (ties by lower
    index); ``m <= 0`` selects none.

  Args:
    scores: ``[..., N]`` scores.
    where: optional bool ``[..., N]`` mask of valid candidates.
    m: cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    bool ``[..., N]`` mask.

  References:
    ``rax.utils.cutoff`` (with ``rank <= n``), here with a traced cutoff.
  """
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  if ranking is not None:
    return valid & (ranking.ranks <= _per_list(m))
  fast = _top_k_indices(scores, valid, m)
  if fast is not None:  # a static m: lax.top_k instead of a full sort
    top, top_valid = fast
    return _scatter_last(top, top_valid, scores.shape[-1])
  return valid & (ranks(scores, where=valid) <= _per_list(m))


def dcg_at_k(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    k: Hyper,
    gain: str = "exp2",
    ranking: Optional[Ranking] = None,
) -> Array:
  """Discounted cumulative gain at cutoff ``k``, per list.

  Definition:
    DCG@k = Σ_{i valid, rank(s_i) <= k} gain(y_i) / log2(rank(s_i) + 1)

    gain "exp2": 2^y - 1;  gain "linear": y.

  Args:
    scores: ``[..., N]`` scores.
    labels: ``[..., N]`` graded relevance labels (>= 0).
    where: optional bool ``[..., N]`` mask of valid candidates.
    k: cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    gain: ``"exp2"`` or ``"linear"`` (static Python string).
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    ``[...]`` DCG per list (0 for an all-masked list).

  References:
    Järvelin & Kekäläinen, TOIS 2002; ``rax.dcg_metric``.
  """
  gain_fn = _gain_fn(gain)
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  labels = _clean_labels(labels, valid)
  # With a ranking: the elementwise form below (cheaper to compile than a gather).
  fast = None if ranking is not None else _top_k_indices(scores, valid, k)
  if fast is not None:  # a static k: gather the top k (lax.top_k) instead of sorting
    top, top_valid = fast
    top_gain = gain_fn(jnp.take_along_axis(labels, top, axis=-1))
    position = jnp.arange(1, top.shape[-1] + 1, dtype=labels.dtype)
    discounted = top_gain / jnp.log2(position + 1.0)
    return jnp.sum(jnp.where(top_valid, discounted, jnp.zeros_like(discounted)), axis=-1)
  rank = ranks(scores, where=valid) if ranking is None else ranking.ranks
  included = valid & (rank <= _per_list(k))
  discounted = gain_fn(labels) / jnp.log2(rank.astype(labels.dtype) + 1.0)
  return jnp.sum(jnp.where(included, discounted, jnp.zeros_like(discounted)), axis=-1)


def ndcg_at_k(
    scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    k: Hyper,
    gain: str = "exp2",
    ranking: Optional[Ranking] = None,
    ideal_ranking: Optional[Ranking] = None,
) -> Array:
  """Normalised DCG at cutoff ``k``, per list.

  Definition:
    NDCG@k = DCG@k(s, y) / DCG@k(y, y)   if DCG@k(y, y) > 0, else 0

    The ideal DCG ranks the valid candidates by label and is cut at the same ``k``
    (as trec_eval ``ndcg_cut_k`` and ``rax.ndcg_metric(topn=k)``). Lists without a
    relevant valid candidate get 0; select the lists where NDCG is defined with
    :func:`has_relevant` before averaging, or average with :func:`mean_over_defined`
    (``empty="exclude"|"zero"|"one"``), which also counts them.

  Args:
    scores: ``[..., N]`` scores.
    labels: ``[..., N]`` graded relevance labels (>= 0).
    where: optional bool ``[..., N]`` mask of valid candidates.
    k: cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    gain: ``"exp2"`` (2^y - 1, as rax) or ``"linear"`` (y, as trec_eval).
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).
    ideal_ranking: optional :func:`rank_list` of ``labels`` and ``where`` (the ideal order).

  Returns:
    ``[...]`` NDCG per list in [0, 1].

  References:
    Järvelin & Kekäläinen, TOIS 2002; ``rax.ndcg_metric``; trec_eval ``ndcg_cut``.
  """
  _gain_fn(gain)
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  labels = _clean_labels(labels, valid)
  dcg = dcg_at_k(scores, labels, where=valid, k=k, gain=gain, ranking=ranking)
  ideal = dcg_at_k(labels, labels, where=valid, k=k, gain=gain, ranking=ideal_ranking)
  defined = ideal > 0
  return jnp.where(defined, dcg / jnp.where(defined, ideal, jnp.ones_like(ideal)),
                   jnp.zeros_like(dcg))


def has_relevant(labels: Array, *, where: Optional[Array] = None) -> Array:
  """Whether a list has a valid relevant candidate (NDCG and recall are defined).

  Definition:
    has_relevant = ∃ i valid : y_i > 0

  Args:
    labels: ``[..., N]`` graded relevance labels.
    where: optional bool ``[..., N]`` mask of valid candidates.

  Returns:
    bool ``[...]``.

  References:
    trec_eval averages only over queries with relevant documents.
  """
  labels = jnp.asarray(labels)
  valid = _valid_mask(where, labels.shape)
  return jnp.any(valid & (_clean_labels(labels, valid) > 0), axis=-1)


def _relevant_valid(scores: Array, relevant: Array, where: Optional[Array]
                    ) -> tuple[Array, Array, Array]:
  """``(scores, valid, relevant & valid)`` with ``relevant`` checked to be a bool mask."""
  relevant = jnp.asarray(relevant)
  if relevant.dtype != jnp.bool_:
    raise TypeError(f"relevant must be a bool mask, got dtype {relevant.dtype}")
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  return scores, valid, valid & jnp.broadcast_to(relevant, scores.shape)


def _hits_at_k(scores: Array, relevant: Array, *, where: Optional[Array],
               k: Hyper, ranking: Optional[Ranking] = None) -> tuple[Array, Array]:
  """Relevant valid candidates within the top ``k`` per list, and the valid relevant mask."""
  scores, valid, relevant = _relevant_valid(scores, relevant, where)
  hits = jnp.sum(relevant & top_m_mask(scores, where=valid, m=k, ranking=ranking), axis=-1)
  return hits, relevant


def recall_at_k(
    scores: Array,
    relevant: Array,
    *,
    where: Optional[Array] = None,
    k: Hyper,
    ranking: Optional[Ranking] = None,
) -> Array:
  """Recall of the relevant candidates within the top ``k``, per list.

  Definition:
    Recall@k = |{i valid : rank(s_i) <= k} ∩ R| / |R|,   R = {i valid : relevant_i}

    and 0 when R is empty. Relevance is an explicit bool mask, so the caller decides
    the threshold (rax instead uses ``label >= 1``); a valid ``-inf`` score is still
    ranked (rax treats it as not retrieved).

  Args:
    scores: ``[..., N]`` scores.
    relevant: bool ``[..., N]`` relevance.
    where: optional bool ``[..., N]`` mask of valid candidates.
    k: cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    ``[...]`` recall per list in [0, 1].

  References:
    ``rax.recall_metric``.
  """
  hits, relevant = _hits_at_k(scores, relevant, where=where, k=k, ranking=ranking)
  num_relevant = jnp.sum(relevant, axis=-1)
  return jnp.where(num_relevant > 0, hits / jnp.maximum(num_relevant, 1), 0.0)


def precision_at_k(
    scores: Array,
    relevant: Array,
    *,
    where: Optional[Array] = None,
    k: Hyper,
    ranking: Optional[Ranking] = None,
) -> Array:
  """Precision of the top ``k``, per list, with trec_eval's fixed denominator.

  Definition:
    P@k = |{i valid : rank(s_i) <= k} ∩ R| / k,   R = {i valid : relevant_i}

    and 0 for ``k <= 0``. The denominator is ``k`` even when the list has fewer than
    ``k`` valid candidates (a short list counts its missing slots as not relevant), as
    trec_eval's ``P_k`` does; a list without a relevant candidate gets 0 and is a
    defined value (trec_eval averages it in).

  Args:
    scores: ``[..., N]`` scores.
    relevant: bool ``[..., N]`` relevance (e.g. true grade >= ``eval.relevant_grade``).
    where: optional bool ``[..., N]`` mask of valid candidates.
    k: cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    ``[...]`` precision per list in [0, 1].

  References:
    trec_eval ``P`` (``P_k``; relevant means ``rel >= relevance_level``);
    ``rax.precision_metric`` (which instead divides by min(k, n_valid)).
  """
  hits, _ = _hits_at_k(scores, relevant, where=where, k=k, ranking=ranking)
  cut = jnp.broadcast_to(jnp.asarray(k, jnp.float32), hits.shape)
  return jnp.where(cut > 0, hits / jnp.maximum(cut, 1.0), 0.0)


def cascade_top_k(
    student_scores: Array,
    teacher_scores: Array,
    *,
    where: Optional[Array] = None,
    m: Hyper,
    k: Hyper,
    student_ranking: Optional[Ranking] = None,
    teacher_ranking: Optional[Ranking] = None,
) -> Array:
  """The final top ``k`` of a two-stage cascade: the student keeps its top ``m``, the
  teacher reranks the survivors.

  Definition:
    S = student_top_m = {i valid : rank(s_i) <= m}
    final(i) = [i ∈ S] · [rank_S(t_i) <= k]

    where ``rank_S`` ranks the teacher's scores among the survivors only (ties by lower
    index in both stages). Exactly ``min(k, m, n_valid)`` candidates are selected.
    O(N) memory per list: two sorts (or ``lax.top_k`` for static cutoffs), no N × N.

  Args:
    student_scores: ``[..., N]`` pre-ranking (student) scores.
    teacher_scores: ``[..., N]`` ranking (teacher) scores.
    where: optional bool ``[..., N]`` mask of valid candidates.
    m: student keep size (e.g. :func:`keep_size`); scalar or broadcastable to ``[...]``.
    k: final cutoff; scalar or broadcastable to ``[...]``.
    student_ranking: optional :func:`rank_list` of ``student_scores`` and ``where``.
    teacher_ranking: optional :func:`rank_list` of ``teacher_scores`` and ``where`` (the
      teacher's ranking of the survivors is read off it with :func:`restrict`).

  Returns:
    bool ``[..., N]`` mask of the final top ``k``.

  References:
    The cascade of pre-ranking and ranking, e.g. Wang et al. "COLD: Towards the Next
    Generation of Pre-Ranking System" (arXiv:2007.16122, 2020).
  """
  student_scores = jnp.asarray(student_scores)
  valid = _valid_mask(where, student_scores.shape)
  survivors = top_m_mask(student_scores, where=valid, m=m, ranking=student_ranking)
  reranked = None if teacher_ranking is None else restrict(teacher_ranking, survivors)
  return top_m_mask(teacher_scores, where=survivors, m=k, ranking=reranked)


def cascade_ndcg_at_k(
    student_scores: Array,
    teacher_scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    m: Hyper,
    k: Hyper,
    gain: str = "exp2",
    student_ranking: Optional[Ranking] = None,
    teacher_ranking: Optional[Ranking] = None,
    ideal_ranking: Optional[Ranking] = None,
) -> Array:
  """System NDCG@k of a cascade: the teacher's ranking of the student's top ``m``.

  Definition:
    S = student_top_m,  DCG_sys@k = Σ_{i ∈ S, rank_S(t_i) <= k} gain(y_i) / log2(rank_S(t_i) + 1)
    NDCG_sys@k = DCG_sys@k / IDCG@k   (IDCG@k over the WHOLE valid list; 0 if IDCG = 0)

    The ideal is the full list's, so what the student cuts away is lost: with
    ``m >= n_valid`` it equals :func:`ndcg_at_k` of the teacher's scores, and it never
    exceeds the NDCG of the ideal ranking. Lists shorter than ``k`` are scored over their
    length, as :func:`ndcg_at_k`.

  Args:
    student_scores: ``[..., N]`` pre-ranking (student) scores.
    teacher_scores: ``[..., N]`` ranking (teacher) scores.
    labels: ``[..., N]`` graded truth (>= 0).
    where: optional bool ``[..., N]`` mask of valid candidates.
    m: student keep size; scalar or broadcastable to ``[...]``.
    k: final cutoff; scalar or broadcastable to ``[...]``.
    gain: ``"exp2"`` or ``"linear"`` (static).
    student_ranking: optional :func:`rank_list` of ``student_scores`` and ``where``.
    teacher_ranking: optional :func:`rank_list` of ``teacher_scores`` and ``where`` (the
      teacher's ranking of the survivors is read off it with :func:`restrict`).
    ideal_ranking: optional :func:`rank_list` of ``labels`` and ``where``.

  Returns:
    ``[...]`` system NDCG per list in [0, 1].

  References:
    :func:`ndcg_at_k` (Järvelin & Kekäläinen, TOIS 2002) applied to the cascade's
    output, as end-to-end evaluations of pre-ranking do (e.g. Zhang et al.,
    arXiv:2305.13647, 2023).
  """
  _gain_fn(gain)
  student_scores = jnp.asarray(student_scores)
  valid = _valid_mask(where, student_scores.shape)
  labels = _clean_labels(labels, valid)
  survivors = top_m_mask(student_scores, where=valid, m=m, ranking=student_ranking)
  reranked = None if teacher_ranking is None else restrict(teacher_ranking, survivors)
  dcg = dcg_at_k(teacher_scores, labels, where=survivors, k=k, gain=gain, ranking=reranked)
  ideal = dcg_at_k(labels, labels, where=valid, k=k, gain=gain, ranking=ideal_ranking)
  defined = ideal > 0
  return jnp.where(defined, dcg / jnp.where(defined, ideal, jnp.ones_like(ideal)),
                   jnp.zeros_like(dcg))


def cascade_recall_at_k(
    student_scores: Array,
    teacher_scores: Array,
    relevant: Array,
    *,
    where: Optional[Array] = None,
    m: Hyper,
    k: Hyper,
    student_ranking: Optional[Ranking] = None,
    teacher_ranking: Optional[Ranking] = None,
) -> Array:
  """System recall@k of a cascade: relevant candidates in its final top ``k``.

  Definition:
    Recall_sys@k = |cascade_top_k ∩ R| / |R|,   R = {i valid : relevant_i}

    with :func:`cascade_top_k`, and 0 when R is empty. With ``m >= n_valid`` it equals
    :func:`recall_at_k` of the teacher's scores.

  Args:
    student_scores: ``[..., N]`` pre-ranking (student) scores.
    teacher_scores: ``[..., N]`` ranking (teacher) scores.
    relevant: bool ``[..., N]`` relevance.
    where: optional bool ``[..., N]`` mask of valid candidates.
    m: student keep size; scalar or broadcastable to ``[...]``.
    k: final cutoff; scalar or broadcastable to ``[...]``.
    student_ranking: optional :func:`rank_list` of ``student_scores`` and ``where``.
    teacher_ranking: optional :func:`rank_list` of ``teacher_scores`` and ``where`` (the
      teacher's ranking of the survivors is read off it with :func:`restrict`).

  Returns:
    ``[...]`` system recall per list in [0, 1].

  References:
    :func:`recall_at_k` applied to the cascade's output.
  """
  student_scores, valid, relevant = _relevant_valid(student_scores, relevant, where)
  final = cascade_top_k(student_scores, teacher_scores, where=valid, m=m, k=k,
                        student_ranking=student_ranking, teacher_ranking=teacher_ranking)
  hits = jnp.sum(relevant & final, axis=-1)
  num_relevant = jnp.sum(relevant, axis=-1)
  return jnp.where(num_relevant > 0, hits / jnp.maximum(num_relevant, 1), 0.0)


def oracle_cascade_ndcg_at_k(
    student_scores: Array,
    labels: Array,
    *,
    where: Optional[Array] = None,
    m: Hyper,
    k: Hyper,
    gain: str = "exp2",
    student_ranking: Optional[Ranking] = None,
    ideal_ranking: Optional[Ranking] = None,
) -> Array:
  """System NDCG@k of a cascade whose second stage is the oracle: a common reference.

  Definition:
    S = student_top_m,  DCG_S@k = Σ_{j=1}^{min(k, |S|)} gain(y_(j)) / log2(j + 1)
    with y_(1) ≥ y_(2) ≥ … the labels of S sorted by the truth itself, and
    NDCG_oracle@k = DCG_S@k / IDCG@k   (IDCG@k over the WHOLE valid list; 0 if IDCG = 0)

    :func:`cascade_ndcg_at_k` with the labels as the second stage's scores. Every model
    is judged with the same reranker (the truth), so it measures only what the
    pre-ranker keeps, unlike ``sys_ndcg`` whose reranker is the run's teacher. With
    ``m >= n_valid`` it is 1 on every list with a relevant candidate; it never decreases
    in ``m``.

  Args:
    student_scores: ``[..., N]`` pre-ranking scores.
    labels: ``[..., N]`` graded truth (>= 0); both the oracle's scores and the gains.
    where: optional bool ``[..., N]`` mask of valid candidates.
    m: student keep size; scalar or broadcastable to ``[...]``.
    k: final cutoff; scalar or broadcastable to ``[...]``.
    gain: ``"exp2"`` or ``"linear"`` (static).
    student_ranking: optional :func:`rank_list` of ``student_scores`` and ``where``.
    ideal_ranking: optional :func:`rank_list` of ``labels`` and ``where`` (it serves as
      the oracle's ranking and the ideal).

  Returns:
    ``[...]`` oracle-cascade NDCG per list in [0, 1].

  References:
    :func:`cascade_ndcg_at_k`; recall of what an ideal ranker would pick is the usual
    common-reference view of pre-ranking (Zhang et al., arXiv:2305.13647, 2023).
  """
  return cascade_ndcg_at_k(student_scores, labels, labels, where=where, m=m, k=k, gain=gain,
                           student_ranking=student_ranking, teacher_ranking=ideal_ranking,
                           ideal_ranking=ideal_ranking)


def teacher_consistency_recall(
    student_scores: Array,
    teacher_scores: Array,
    *,
    where: Optional[Array] = None,
    k: Hyper,
    m: Hyper,
    student_ranking: Optional[Ranking] = None,
    teacher_ranking: Optional[Ranking] = None,
) -> Array:
  """How much of the teacher's top ``k`` survives the student's top-``m`` pre-ranking cut.

  Definition:
    Recall@(k, m) = |teacher_top_k ∩ student_top_m| / min(k, n_valid)

    over valid candidates (ties by lower index in both rankings), and 0 when
    ``min(k, n_valid) <= 0``. With ``m >= n_valid`` it is 1.

  Args:
    student_scores: ``[..., N]`` pre-ranking (student) scores.
    teacher_scores: ``[..., N]`` ranking (teacher) scores.
    where: optional bool ``[..., N]`` mask of valid candidates.
    k: teacher cutoff; a Python or traced scalar, or an array broadcastable to ``[...]``.
    m: student keep size (e.g. from :func:`keep_size`), same kinds as ``k``.
    student_ranking: optional :func:`rank_list` of ``student_scores`` and ``where``.
    teacher_ranking: optional :func:`rank_list` of ``teacher_scores`` and ``where``.

  Returns:
    ``[...]`` Recall@(k, m) per list in [0, 1].

  References:
    A set-level hit rate of the pre-ranking cut against the downstream ranker, in the
    spirit of Zhang et al. "Rethinking the Role of Pre-ranking in Large-scale
    E-Commerce Searching System" (arXiv:2305.13647, 2023): pre-ranking is judged on
    the unordered set it passes on, not on its order.
  """
  student_scores = jnp.asarray(student_scores)
  valid = _valid_mask(where, student_scores.shape)
  teacher_top = top_m_mask(teacher_scores, where=valid, m=k, ranking=teacher_ranking)
  student_top = top_m_mask(student_scores, where=valid, m=m, ranking=student_ranking)
  hits = jnp.sum(teacher_top & student_top, axis=-1)
  denom = jnp.minimum(jnp.asarray(k), jnp.sum(valid, axis=-1))
  return jnp.where(denom > 0, hits / jnp.maximum(denom, 1), 0.0)


def keep_size(where: Array, *, keep_ratio: Hyper) -> Array:
  """The pre-ranking keep size ``m`` for a keep ratio, per list.

  Definition:
    m = clip(ceil(keep_ratio · n_valid), 1, max(n_valid, 1))

    The product is computed in float32 and a relative tolerance of 1e-5 absorbs
    rounding, so ``keep_ratio=0.3`` with 10 valid candidates keeps 3, not 4.

  Args:
    where: bool ``[..., N]`` mask of valid candidates.
    keep_ratio: fraction kept; a Python or traced scalar, or broadcastable to ``[...]``.

  Returns:
    int32 ``[...]`` keep sizes (at least 1, also for an all-masked list).

  References:
    Pre-ranking keeps a fixed fraction of the retrieved candidates for the ranker.
  """
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"where must be a bool mask, got dtype {where.dtype}")
  n_valid = jnp.sum(where, axis=-1, dtype=jnp.int32)
  product = jnp.asarray(keep_ratio, jnp.float32) * n_valid.astype(jnp.float32)
  m = jnp.ceil(product - 1e-5 * jnp.maximum(jnp.abs(product), 1.0)).astype(jnp.int32)
  return jnp.clip(m, 1, jnp.maximum(n_valid, 1)).astype(jnp.int32)


def mean_over_lists(values: Array, *, where: Optional[Array] = None) -> Array:
  """Averages per-list metric values over the selected lists.

  Definition:
    mean = Σ_l v_l·[where_l] / Σ_l [where_l]   (0 if no list is selected)

  Args:
    values: ``[...]`` per-list metric values.
    where: optional bool ``[...]`` mask of lists to average over, e.g.
      :func:`has_relevant` for NDCG and recall.

  Returns:
    A scalar.

  References:
    :func:`prerank_jax.reduce.safe_reduce` with ``reduce_fn=jnp.mean``.
  """
  values = jnp.asarray(values)
  if where is not None:
    where = jnp.asarray(where)
  return safe_reduce(values, where=where, reduce_fn=jnp.mean)


def reciprocal_rank(
    scores: Array,
    relevant: Array,
    *,
    where: Optional[Array] = None,
    ranking: Optional[Ranking] = None,
) -> Array:
  """Reciprocal rank of the first relevant candidate, per list (MRR once averaged).

  Definition:
    RR = 1 / min{rank(s_i) : i valid, relevant_i}   and 0 when no valid candidate is
    relevant.

    Ranks are those of :func:`ranks` (descending score, ties by lower index), so a tie
    between a relevant and an irrelevant candidate is resolved by list order, not
    averaged. Relevance is an explicit bool mask, like :func:`recall_at_k`. A list
    without a relevant candidate gets 0, as trec_eval ``recip_rank`` does; to leave such
    lists out of the mean (as :func:`prerank_jax.evaluate` does) average with
    :func:`mean_over_defined` and ``defined = any(relevant & where)``.

  Args:
    scores: ``[..., N]`` scores.
    relevant: bool ``[..., N]`` relevance.
    where: optional bool ``[..., N]`` mask of valid candidates.
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    ``[...]`` reciprocal rank per list in [0, 1].

  References:
    Voorhees. "The TREC-8 question answering track report." TREC 1999 (MRR);
    trec_eval ``recip_rank``; ``rax.mrr_metric``.
  """
  relevant = jnp.asarray(relevant)
  if relevant.dtype != jnp.bool_:
    raise TypeError(f"relevant must be a bool mask, got dtype {relevant.dtype}")
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  relevant = valid & jnp.broadcast_to(relevant, scores.shape)
  rank = ranks(scores, where=valid) if ranking is None else ranking.ranks
  size = scores.shape[-1]
  first = jnp.min(jnp.where(relevant, rank, size + 1), axis=-1)
  return jnp.where(first <= size, 1.0 / first.astype(jnp.float32), 0.0)


def positive_retention(
    scores: Array,
    labels: Array,
    *,
    exposed: Array,
    where: Optional[Array] = None,
    keep_ratio: Hyper,
    ranking: Optional[Ranking] = None,
) -> Array:
  """Share of the logged positives that a pre-ranking cut keeps, per list.

  Definition:
    retention@r = |top_m(s) ∩ P| / |P|,   P = {i valid : exposed_i ∧ y_i > 0},
    m = keep_size(where, keep_ratio=r)

    and 0 when P is empty. The cut ranks the WHOLE valid list (the pre-ranker sees every
    candidate), but only exposed candidates carry a label, so this is what logs can
    measure of a cut: the recall of the logged positives (clicks) among all candidates.
    Unlike recall against the truth, it cannot see relevant candidates the logging
    policy never showed.

  Args:
    scores: ``[..., N]`` scores.
    labels: ``[..., N]`` logged labels; a candidate is positive when ``y > 0``.
    exposed: bool ``[..., N]``: the label was observed.
    where: optional bool ``[..., N]`` mask of valid candidates.
    keep_ratio: fraction kept, see :func:`keep_size`; a Python or traced scalar, or an
      array broadcastable to ``[...]``.
    ranking: optional :func:`rank_list` of ``scores`` and ``where`` (no sort then).

  Returns:
    ``[...]`` retention per list in [0, 1].

  References:
    :func:`recall_at_k` with ``relevant = exposed ∧ y > 0`` and ``k = keep_size``.
  """
  exposed = jnp.asarray(exposed)
  if exposed.dtype != jnp.bool_:
    raise TypeError(f"exposed must be a bool mask, got dtype {exposed.dtype}")
  scores = jnp.asarray(scores)
  valid = _valid_mask(where, scores.shape)
  observed = valid & jnp.broadcast_to(exposed, scores.shape)
  positive = observed & (_clean_labels(labels, observed) > 0)
  m = keep_size(valid, keep_ratio=keep_ratio)
  return recall_at_k(scores, positive, where=valid, k=m, ranking=ranking)


EMPTY_MODES = ("exclude", "zero", "one")


def mean_over_defined(
    values: Array,
    defined: Array,
    *,
    where: Optional[Array] = None,
    empty: str = "exclude",
) -> tuple[Array, Array]:
  """Averages a per-list metric, with an explicit rule for lists where it is undefined.

  Definition (over the lists selected by ``where``, all by default):
    ``empty="exclude"``: mean = Σ_l v_l·[defined_l] / Σ_l [defined_l]   (0 if none)
    ``empty="zero"``:    mean = Σ_l v_l·[defined_l] / L                 (undefined → 0)
    ``empty="one"``:     mean = (Σ_l v_l·[defined_l] + #undefined) / L  (undefined → 1)

    with L the number of selected lists, and always also returns
    ``#undefined = Σ_l [where_l ∧ ¬defined_l]`` so the caller can report how many lists
    were excluded (or scored 0 or 1). Values of undefined lists are never read (they may
    be NaN). For NDCG, ``defined`` is :func:`has_relevant`: ``"exclude"`` is what
    trec_eval does for queries absent from the qrels, ``"zero"`` what it does for
    queries in the qrels with no relevant document, ``"one"`` the convention that a list
    with nothing to find is ranked perfectly (e.g. LightGBM's NDCG).

  Args:
    values: ``[...]`` per-list metric values.
    defined: bool ``[...]``: the metric is defined on the list.
    where: optional bool ``[...]`` mask of lists to consider at all.
    empty: ``"exclude"``, ``"zero"`` or ``"one"`` (static Python string).

  Returns:
    ``(mean, num_undefined)``: a float scalar and an int32 scalar.

  References:
    trec_eval (``-c`` averages over every query of the qrels); LightGBM ``ndcg``.
  """
  if not isinstance(empty, str) or empty not in EMPTY_MODES:
    raise ValueError(f"empty must be one of {EMPTY_MODES}, got {empty!r}")
  values = jnp.asarray(values)
  defined = jnp.asarray(defined)
  if defined.dtype != jnp.bool_:
    raise TypeError(f"defined must be a bool mask, got dtype {defined.dtype}")
  selected = _valid_mask(where, values.shape)
  defined = selected & jnp.broadcast_to(defined, values.shape)
  undefined = selected & ~defined
  num_undefined = jnp.sum(undefined, dtype=jnp.int32)
  if empty == "exclude":
    return safe_reduce(values, where=defined, reduce_fn=jnp.mean), num_undefined
  fill = jnp.asarray(0.0 if empty == "zero" else 1.0, values.dtype)
  filled = jnp.where(defined, values, jnp.where(undefined, fill, jnp.zeros_like(values)))
  return safe_reduce(filled, where=selected, reduce_fn=jnp.mean), num_undefined
