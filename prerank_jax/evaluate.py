"""Evaluation over full candidate lists: every sweep point, the teacher and references.

The pre-ranker's job is to keep, out of all N candidates, what the heavy ranker or the
truth would put on top. So the metrics against the truth and the teacher, and the
retention of logged positives, rank the *whole* valid list of held-out requests, not just
the exposed slice that the logs contain; ``ndcg@k_logs``, ``auc_logs`` and ``gauc_logs``
compare exposed candidates only, as a practitioner with logs alone would.

Columns (:func:`metric_names`) and the per-metric counts of lists left out of the means
(:func:`excluded_lists`, :func:`describe_excluded`) come from one jit-compiled program,
:func:`evaluate_stacked`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prerank_jax import metrics, programs
from prerank_jax.batch import Batch
from prerank_jax.metrics import recflow as recflow_metrics


GAINS = ("exp2", "linear")  # eval.gain: 2^y − 1 (Burges et al. 2005) or y (trec_eval)


def keep_label(ratio: float) -> str:
  """A keep ratio as a column suffix: 0.25 → ``"25%"``."""
  return f"{100 * ratio:g}%"


def metric_names(*, k: int, keep_ratios: Sequence[float], has_truth: bool = True,
                 protocol: str = "") -> list[str]:
  """Column names produced by :func:`evaluate_scores`, in display order.

  Four groups: against the truth, the cascade against the truth (``sys_*``: the model
  keeps its top m, the teacher reranks them; ``oracle_sys_ndcg@k@r``: the truth reranks
  them, one common reference for every model), against the teacher, from the logs; then a
  published protocol's columns (``eval.protocol``: ``"recflow"`` adds RecFlow's and
  LCRON's, :func:`prerank_jax.metrics.recflow.protocol_metric_names`).
  """
  names = []
  if has_truth:
    names += [f"ndcg@{k}", "mrr", f"recall@{k}", f"precision@{k}"]
    names += [f"recall@{keep_label(r)}" for r in keep_ratios]
    names += [f"sys_ndcg@{k}@{keep_label(r)}" for r in keep_ratios]
    names += [f"sys_recall@{k}@{keep_label(r)}" for r in keep_ratios]
    names += [f"sys_loss@{keep_label(r)}" for r in keep_ratios]
    names += [f"oracle_sys_ndcg@{k}@{keep_label(r)}" for r in keep_ratios]
  names += [f"R@({k},{keep_label(r)})" for r in keep_ratios]
  names.append("kendall_tau")
  names.append(f"ndcg@{k}_logs")
  names += [f"retention@{keep_label(r)}" for r in keep_ratios]
  names += ["auc_logs", "gauc_logs"]
  return names + recflow_metrics.protocol_metric_names(protocol)


def excluded_names(*, k: int, has_truth: bool = True) -> list[str]:
  """Keys of :func:`excluded_lists`: each names the columns whose lists it counts, and
  ``shorter_than_k`` counts lists scored over their length (none of them left out)."""
  names = [f"ndcg@{k}", "mrr,recall"] if has_truth else []
  return names + ["kendall_tau", f"ndcg@{k}_logs,retention", "gauc_logs", "shorter_than_k"]


def evaluate_scores(
    scores: jax.Array,
    batch: Batch,
    *,
    teacher_scores: jax.Array,
    k: int,
    keep_ratios: Sequence[float],
    relevant_grade: float,
    ndcg_empty: str = "exclude",
    gain: str = "exp2",
    protocol: str = "",
    lists: jax.Array | None = None,
    share_sorts: bool = True,
) -> dict[str, jax.Array]:
  """All evaluation metrics of one model's scores, averaged over requests.

  Every metric ranks the WHOLE valid list (m = ⌈r · n_valid⌉ for a keep ratio r); per
  list, then averaged over the lists where it is defined (see :func:`excluded_lists`).
  A list shorter than k is scored over its length (NDCG@k over min(k, n), as trec_eval
  and LightGBM); none is dropped for being short.

  Each score vector is sorted once (:func:`metrics.rank_list`): the model's, the
  teacher's, the truth's and the logged labels' (the exposed subset is ranked from the
  model's sort, :func:`metrics.restrict`), and every ranking metric reads its order off
  those (``share_sorts=False``: each metric sorts for itself, the reference path; the
  values agree, tests/metrics/test_evaluate_shared_sort.py).

  Against the truth (when ``batch.true_relevance`` is set):
    ``ndcg@k``          NDCG@k (gain ``gain``: 2^y − 1 or y; discount 1/log2(rank + 1))
                        against ``true_relevance``; lists without a candidate of grade > 0
                        are handled by ``ndcg_empty`` (excluded by default).
    ``mrr``             1 / rank of the first candidate with true grade ≥ relevant_grade;
                        lists without one are excluded.
    ``recall@k``        |top-k ∩ {true grade ≥ relevant_grade}| / |relevant| at the fixed
                        cut k (k ≥ n keeps the whole list); same lists as mrr.
    ``precision@k``     |top-k ∩ relevant| / k, trec_eval's ``P_k`` (denominator k also
                        for lists shorter than k); every list.
    ``recall@r``        the same at m = ⌈r · n_valid⌉: the share of truly relevant
                        candidates that survive a cut keeping a fraction r; same lists.
  The cascade against the truth (the model pre-ranks, ``teacher_scores`` rerank):
    ``sys_ndcg@k@r``    NDCG@k of the teacher's ranking of the model's top m, against the
                        ideal of the whole list (:func:`metrics.cascade_ndcg_at_k`); the
                        lists of ``ndcg@k``.
    ``sys_recall@k@r``  share of the relevant candidates in the cascade's final top k
                        (:func:`metrics.cascade_recall_at_k`); the lists of mrr.
    ``sys_loss@r``      NDCG@k of the teacher ranking the full list minus ``sys_ndcg@k@r``
                        (over the same lists): the system quality the cut loses.
    ``oracle_sys_ndcg@k@r``  NDCG@k when the ORACLE (the true grades) reorders the model's
                        top m, against the ideal of the whole list
                        (:func:`metrics.oracle_cascade_ndcg_at_k`); the lists of ``ndcg@k``.
                        The reranker is the same for every model (unlike ``sys_ndcg``,
                        whose reranker is the run's teacher), so it measures only what the
                        pre-ranker keeps; 1 at r = 1.
  Against the teacher (``teacher_scores``, every list):
    ``R@(k,r)``         |teacher top-k ∩ student top-m| / k.
    ``kendall_tau``     Kendall τ-b between the model's and the teacher's scores over the
                        valid candidates; lists where either is constant are excluded.
  From the logs (exposed candidates and their logged labels; positive means label > 0):
    ``ndcg@k_logs``     NDCG@k of the exposed candidates ranked among themselves, against
                        the logged labels; lists without a positive follow ``ndcg_empty``.
    ``retention@r``     the share of the logged positives that survive the cut of the
                        WHOLE list; lists without a logged positive are excluded.
    ``auc_logs``        AUC of positives against negatives, pooled over every exposed
                        candidate of every list (ties count 1/2).
    ``gauc_logs``       per-list AUC over exposed candidates, weighted by the number of
                        exposed candidates, over the lists with both a positive and a
                        negative.

  Args:
    scores: ``[R, N]`` model scores.
    batch: held-out requests; needs ``true_relevance`` for the truth metrics.
    teacher_scores: ``[R, N]`` combined teacher logits for teacher consistency.
    k: cut-off for NDCG and the teacher's top-k (static).
    keep_ratios: keep ratios r in (0, 1] (static).
    relevant_grade: truth grade at or above which a candidate counts as relevant.
    ndcg_empty: ``"exclude"``, ``"zero"`` or ``"one"``: what NDCG does with a list without
      a relevant candidate (static; see :func:`prerank_jax.metrics.mean_over_defined`).
    gain: ``"exp2"`` (2^y − 1) or ``"linear"`` (y, trec_eval's ``ndcg_cut``) for every NDCG
      column (static; config ``eval.gain``).
    protocol: ``""`` or ``"recflow"`` (static; config ``eval.protocol``): RecFlow's pooled
      ``recflow_recall@k``/``recflow_ndcg@k`` (targets ``label > 0``) and LCRON's
      ``joint_recall@10@20`` (this model keeps 30, ``teacher_scores`` 20 of them),
      ``lcron_recall@10@{30,20}``, ``lcron_ndcg@10``, ``lcron_kendall_tau`` against
      ``true_relevance`` (:mod:`prerank_jax.metrics.recflow`).
    lists: optional bool ``[R]``: the lists that exist; the others are padding (no valid
      candidate) and are left out of every mean, so a split padded to another split's R
      (:func:`pad_lists`) gives its unpadded values (to float32 rounding: the sums run over
      more zeros) and both splits share one compiled program. ``None``: every list (with ``protocol=""`` only).
    share_sorts: one sort per score vector shared by the ranking metrics (default), or
      ``False``: every metric sorts by itself (static; the slower reference path).

  Returns:
    ``{name: scalar}`` keyed exactly as :func:`metric_names`.
  """
  valid, observed = batch.valid, batch.valid & batch.exposed
  positive = observed & (batch.label > 0)
  if lists is not None and protocol:
    raise ValueError("evaluate_scores: padded lists are not supported with eval.protocol")
  # Every list, or only the real ones of a padded split: padding has no valid candidate,
  # so the means that skip undefined lists skip it already; these are the others.
  mean_all = jnp.mean if lists is None else (
      lambda v: metrics.mean_over_lists(v, where=lists))
  truth = batch.true_relevance
  # One sort per score vector (None: each metric sorts for itself). Under the vmap of
  # evaluate_stacked only the model's ranking is batched: the teacher's, the truth's and
  # the labels' are sorted once for all models.
  rank_s = rank_t = rank_y = rank_l = rank_obs = None
  if share_sorts:
    rank_s = metrics.rank_list(scores, where=valid)
    rank_t = metrics.rank_list(teacher_scores, where=valid)
    rank_obs = metrics.restrict(rank_s, observed)
    rank_l = metrics.rank_list(batch.label, where=observed)
    if truth is not None:
      rank_y = metrics.rank_list(truth, where=valid)
  out = {}
  if truth is not None:
    ndcg_defined = metrics.has_relevant(truth, where=valid)
    mean_ndcg = lambda v: metrics.mean_over_defined(v, ndcg_defined, where=lists,
                                                    empty=ndcg_empty)[0]
    out[f"ndcg@{k}"] = mean_ndcg(metrics.ndcg_at_k(scores, truth, where=valid, k=k,
                                                   gain=gain, ranking=rank_s,
                                                   ideal_ranking=rank_y))
    relevant = valid & (truth >= relevant_grade)
    has_rel = jnp.any(relevant, axis=-1)
    out["mrr"] = metrics.mean_over_lists(
        metrics.reciprocal_rank(scores, relevant, where=valid, ranking=rank_s),
        where=has_rel)
    out[f"recall@{k}"] = metrics.mean_over_lists(
        metrics.recall_at_k(scores, relevant, where=valid, k=k, ranking=rank_s),
        where=has_rel)
    out[f"precision@{k}"] = mean_all(metrics.precision_at_k(scores, relevant, where=valid,
                                                            k=k, ranking=rank_s))
    teacher_full = mean_ndcg(metrics.ndcg_at_k(teacher_scores, truth, where=valid, k=k,
                                               gain=gain, ranking=rank_t,
                                               ideal_ranking=rank_y))
  has_positive = jnp.any(positive, axis=-1)

  def at_ratio(r) -> dict[str, jax.Array]:
    """The keep-ratio columns at one ratio r (a family name → its mean)."""
    m = metrics.keep_size(valid, keep_ratio=r)
    got = {}
    if truth is not None:
      got["recall"] = metrics.mean_over_lists(
          metrics.recall_at_k(scores, relevant, where=valid, k=m, ranking=rank_s),
          where=has_rel)
      got["sys_ndcg"] = mean_ndcg(metrics.cascade_ndcg_at_k(
          scores, teacher_scores, truth, where=valid, m=m, k=k, gain=gain,
          student_ranking=rank_s, teacher_ranking=rank_t, ideal_ranking=rank_y))
      got["sys_recall"] = metrics.mean_over_lists(
          metrics.cascade_recall_at_k(scores, teacher_scores, relevant, where=valid, m=m,
                                      k=k, student_ranking=rank_s, teacher_ranking=rank_t),
          where=has_rel)
      got["sys_loss"] = teacher_full - got["sys_ndcg"]
      got["oracle_sys_ndcg"] = mean_ndcg(metrics.oracle_cascade_ndcg_at_k(
          scores, truth, where=valid, m=m, k=k, gain=gain, student_ranking=rank_s,
          ideal_ranking=rank_y))
    got["R"] = mean_all(metrics.teacher_consistency_recall(
        scores, teacher_scores, where=valid, k=k, m=m, student_ranking=rank_s,
        teacher_ranking=rank_t))
    got["retention"] = metrics.mean_over_lists(
        metrics.positive_retention(scores, batch.label, exposed=batch.exposed, where=valid,
                                   keep_ratio=r, ranking=rank_s), where=has_positive)
    return got

  if share_sorts:  # one copy of the per-ratio program, vmapped over the ratios
    stacked = jax.vmap(at_ratio)(jnp.asarray(keep_ratios, jnp.float32))
    per_ratio = [{f: v[i] for f, v in stacked.items()} for i in range(len(keep_ratios))]
  else:
    per_ratio = [at_ratio(r) for r in keep_ratios]
  ratio = dict(zip(keep_ratios, per_ratio))
  if truth is not None:
    for family, name in (("recall", "recall@{}"), ("sys_ndcg", f"sys_ndcg@{k}@{{}}"),
                         ("sys_recall", f"sys_recall@{k}@{{}}"), ("sys_loss", "sys_loss@{}"),
                         ("oracle_sys_ndcg", f"oracle_sys_ndcg@{k}@{{}}")):
      out.update({name.format(keep_label(r)): ratio[r][family] for r in keep_ratios})
  out.update({f"R@({k},{keep_label(r)})": ratio[r]["R"] for r in keep_ratios})
  out["kendall_tau"] = metrics.mean_over_lists(
      metrics.kendall_tau_b(scores, teacher_scores, where=valid),
      where=metrics.kendall_tau_defined(scores, teacher_scores, where=valid))
  out[f"ndcg@{k}_logs"], _ = metrics.mean_over_defined(
      metrics.ndcg_at_k(scores, batch.label, where=observed, k=k, gain=gain,
                        ranking=rank_obs, ideal_ranking=rank_l),
      metrics.has_relevant(batch.label, where=observed), where=lists, empty=ndcg_empty)
  out.update({f"retention@{keep_label(r)}": ratio[r]["retention"] for r in keep_ratios})
  out["auc_logs"] = metrics.auc(scores, positive, where=observed)
  out["gauc_logs"] = metrics.gauc(scores, positive, where=observed)
  if protocol:
    graded = batch.label if batch.true_relevance is None else batch.true_relevance
    out.update(recflow_metrics.protocol_metrics(
        scores, targets=valid & (batch.label > 0), graded=graded,
        second_scores=teacher_scores, where=valid))
  return out


def excluded_lists(
    scores: jax.Array,
    batch: Batch,
    *,
    teacher_scores: jax.Array,
    k: int,
    relevant_grade: float,
    lists: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """How many lists each metric of :func:`evaluate_scores` leaves out (or fills in).

  Definition (int32 counts over the R lists, keyed as :func:`excluded_names`):
    ``ndcg@k``                 lists without a valid candidate of true grade > 0 (NDCG is
                               undefined; ``ndcg_empty`` excludes them or scores them 0/1).
    ``mrr,recall``             lists without a valid candidate of grade ≥ relevant_grade.
    ``kendall_tau``            lists where the model's or the teacher's scores are constant
                               over the valid candidates (the only count that depends on
                               ``scores``).
    ``ndcg@k_logs,retention``  lists without an exposed positive.
    ``gauc_logs``              lists without both an exposed positive and an exposed
                               negative.
    ``shorter_than_k``         lists with fewer than k valid candidates: NOT left out, but
                               scored over their length (precision@k still divides by k).

  ``R@(k,r)``, ``precision@k`` and ``auc_logs`` leave no list out; the ``sys_*`` columns
  leave out the lists of ``ndcg@k`` (``sys_ndcg``, ``sys_loss``) and of ``mrr``
  (``sys_recall``). With ``lists`` (bool ``[R]``, see :func:`evaluate_scores`) only the
  real lists are counted, never the padding.
  """
  valid, observed = batch.valid, batch.valid & batch.exposed
  positive = observed & (batch.label > 0)
  count = lambda undefined: jnp.sum(undefined if lists is None else undefined & lists,
                                    dtype=jnp.int32)
  out = {}
  if batch.true_relevance is not None:
    truth = batch.true_relevance
    out[f"ndcg@{k}"] = count(~metrics.has_relevant(truth, where=valid))
    out["mrr,recall"] = count(~jnp.any(valid & (truth >= relevant_grade), axis=-1))
  out["kendall_tau"] = count(~metrics.kendall_tau_defined(scores, teacher_scores,
                                                          where=valid))
  out[f"ndcg@{k}_logs,retention"] = count(~jnp.any(positive, axis=-1))
  out["gauc_logs"] = count(~metrics.has_both_classes(positive, where=observed))
  out["shorter_than_k"] = count(jnp.sum(valid, axis=-1) < k)
  return out


def describe_excluded(excluded: dict, models: Sequence[str], *, num_lists: int, k: int,
                      relevant_grade: float, ndcg_empty: str = "exclude",
                      gain: str = "exp2", protocol: str = "") -> str:
  """A Markdown list for the run header: how many lists each metric left out.

  Args:
    excluded: ``{key: [P] counts}`` from :func:`evaluate_stacked` (``return_excluded``).
    models: the P model names, in the same order.
    num_lists: the number of test lists R.
    k, relevant_grade, ndcg_empty, gain: as passed to :func:`evaluate_stacked`.
  """
  def counts(key):
    values = [int(v) for v in np.asarray(excluded[key]).reshape(-1)]
    common = max(set(values), key=values.count)
    others = [f"{m}: {v}" for m, v in zip(models, values) if v != common]
    return f"{common}" + (f" ({', '.join(others)})" if others else "")

  ndcg = ("excluded" if ndcg_empty == "exclude" else
          f"scored {0 if ndcg_empty == 'zero' else 1} in the mean")
  ndcg += f", eval.ndcg_empty={ndcg_empty!r}"
  lines = [f"Lists left out of the means (of {num_lists} test requests; NDCG gain "
           f"{'2^y − 1' if gain == 'exp2' else 'y'}, eval.gain={gain!r}):"]
  if f"ndcg@{k}" in excluded:
    lines += [
        f"- ndcg@{k}, sys_ndcg, sys_loss: {counts(f'ndcg@{k}')} without a candidate of "
        f"true grade > 0 ({ndcg})",
        f"- mrr, recall@r, sys_recall: {counts('mrr,recall')} without a candidate of true "
        f"grade ≥ {relevant_grade:g} (precision@{k} leaves no list out)",
    ]
  logs_ndcg = ("excluded from both" if ndcg_empty == "exclude" else
               f"ndcg@{k}_logs: {ndcg}; retention@r: excluded")
  lines += [
      f"- kendall_tau: {counts('kendall_tau')} where the model's or the teacher's scores "
      "are constant",
      f"- ndcg@{k}_logs, retention@r: {counts(f'ndcg@{k}_logs,retention')} without a "
      f"logged positive ({logs_ndcg})",
      f"- gauc_logs: {counts('gauc_logs')} without both a logged positive and a logged "
      "negative (auc_logs and R@(k,r) leave no list out)",
  ]
  if "shorter_than_k" in excluded:
    lines.append(f"- none left out for being short: {counts('shorter_than_k')} lists have "
                 f"fewer than k={k} candidates and are scored over their length")
  if protocol == "recflow":
    lines.append("- recflow_recall@k, recflow_ndcg@k: requests whose valid candidates are "
                 "all targets or none are skipped, and hits are pooled over the targets of "
                 "the others (RecFlow's evaluate_recall)")
  return "\n".join(lines)


def pad_lists(batch: Batch, scores: jax.Array, teacher_scores: jax.Array, num_lists: int
              ) -> tuple[Batch, jax.Array, jax.Array, np.ndarray]:
  """A split padded with empty lists to ``num_lists`` requests, for :func:`evaluate_stacked`.

  Every field of ``batch`` (leading axis R), ``scores [P, R, N]`` and ``teacher_scores
  [R, N]`` gain ``num_lists − R`` lists of zeros (``valid`` all False, so no candidate).
  Returns ``(batch, scores, teacher_scores, lists)`` with ``lists`` the bool ``[num_lists]``
  mask of the real lists, to pass as ``lists=``: the metrics are then those of the
  unpadded split, and two splits of different R share one compiled evaluation.
  """
  R = int(batch.valid.shape[0])
  if num_lists < R:
    raise ValueError(f"pad_lists: num_lists={num_lists} is below the split's {R} lists")
  pad = lambda x, axis=0: np.pad(np.asarray(x), [(0, num_lists - R) if a == axis else (0, 0)
                                                 for a in range(np.ndim(x))])
  padded = Batch(*(None if f is None else pad(f) for f in batch))
  return (padded, pad(scores, axis=1), pad(teacher_scores), np.arange(num_lists) < R)


def evaluate_stacked(scores: jax.Array, batch: Batch, *, teacher_scores: jax.Array, k: int,
                     keep_ratios: Sequence[float], relevant_grade: float,
                     ndcg_empty: str = "exclude", gain: str = "exp2",
                     return_excluded: bool = False, protocol: str = "",
                     lists: jax.Array | None = None, share_sorts: bool = True):
  """:func:`evaluate_scores` vmapped over a leading model axis: ``scores [P, R, N]``.

  Returns ``{name: [P]}``, and with ``return_excluded=True`` also
  ``{key: [P] int32}`` from :func:`excluded_lists` (computed in the same program).
  ``lists``: bool ``[R]``, the real lists of a split padded by :func:`pad_lists`.
  ``share_sorts``: as :func:`evaluate_scores` (``False``: the per-metric reference path).

  The batch is an argument of the compiled function, not a closed-over constant, so XLA
  does not try to constant-fold sorts over the whole test split.
  """
  if not isinstance(ndcg_empty, str) or ndcg_empty not in metrics.EMPTY_MODES:
    raise ValueError(f"ndcg_empty must be one of {metrics.EMPTY_MODES}, got {ndcg_empty!r}")
  if gain not in GAINS:
    raise ValueError(f"eval.gain: must be one of {GAINS}, got {gain!r}")
  recflow_metrics.protocol_metric_names(protocol)  # refuses an unknown eval.protocol
  values, excluded = _evaluate_stacked(scores, batch, teacher_scores,
                                       jnp.float32(relevant_grade), k=k,
                                       keep_ratios=tuple(keep_ratios), ndcg_empty=ndcg_empty,
                                       gain=gain, protocol=protocol,
                                       lists=None if lists is None else jnp.asarray(lists, bool),
                                       share_sorts=bool(share_sorts))
  return (values, excluded) if return_excluded else values


@functools.partial(programs.jit, name="evaluate._evaluate_stacked",
                   static_argnames=("k", "keep_ratios", "ndcg_empty", "gain", "protocol",
                                    "share_sorts"))
def _evaluate_stacked(scores, batch, teacher_scores, relevant_grade, *, k, keep_ratios,
                      ndcg_empty, gain, protocol="", lists=None, share_sorts=True):
  def fn(s):
    values = evaluate_scores(s, batch, teacher_scores=teacher_scores, k=k,
                             keep_ratios=keep_ratios, relevant_grade=relevant_grade,
                             ndcg_empty=ndcg_empty, gain=gain, protocol=protocol, lists=lists,
                             share_sorts=share_sorts)
    excluded = excluded_lists(s, batch, teacher_scores=teacher_scores, k=k,
                              relevant_grade=relevant_grade, lists=lists)
    return values, excluded
  return jax.vmap(fn)(scores)
