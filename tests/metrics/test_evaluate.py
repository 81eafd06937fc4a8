"""Tests for prerank_jax.evaluate: the table's columns, exclusion counts, jit and references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from prerank_jax import evaluate, metrics
from prerank_jax.config import ConfigError, validate_config

K, RATIOS, GRADE = 5, (0.25, 0.5), 2.0


@pytest.fixture(scope="module")
def test_split(tiny_splits):
  batch = tiny_splits["test"]
  rng = np.random.default_rng(0)
  teacher = jnp.asarray(batch.true_relevance + rng.normal(size=batch.valid.shape), jnp.float32)
  return batch, teacher


def _models(batch, teacher):
  rng = np.random.default_rng(1)
  return jnp.stack([teacher, batch.true_relevance,
                    jnp.asarray(rng.normal(size=batch.valid.shape), jnp.float32),
                    jnp.zeros(batch.valid.shape)])  # constant scores: τ undefined


def test_metric_names_order_and_keys(test_split):
  batch, teacher = test_split
  names = evaluate.metric_names(k=K, keep_ratios=RATIOS)
  assert names == ["ndcg@5", "mrr", "recall@5", "precision@5", "recall@25%", "recall@50%",
                   "sys_ndcg@5@25%", "sys_ndcg@5@50%", "sys_recall@5@25%", "sys_recall@5@50%",
                   "sys_loss@25%", "sys_loss@50%", "oracle_sys_ndcg@5@25%", "oracle_sys_ndcg@5@50%",
                   "R@(5,25%)", "R@(5,50%)", "kendall_tau",
                   "ndcg@5_logs", "retention@25%", "retention@50%", "auc_logs", "gauc_logs"]
  out = evaluate.evaluate_scores(teacher, batch, teacher_scores=teacher, k=K,
                                 keep_ratios=RATIOS, relevant_grade=GRADE)
  assert list(out) == names
  excluded = evaluate.excluded_lists(teacher, batch, teacher_scores=teacher, k=K,
                                     relevant_grade=GRADE)
  assert list(excluded) == evaluate.excluded_names(k=K)
  # Without the truth the truth columns and their counts disappear.
  no_truth = batch._replace(true_relevance=None)
  out = evaluate.evaluate_scores(teacher, no_truth, teacher_scores=teacher, k=K,
                                 keep_ratios=RATIOS, relevant_grade=GRADE)
  assert list(out) == evaluate.metric_names(k=K, keep_ratios=RATIOS, has_truth=False)
  excluded = evaluate.excluded_lists(teacher, no_truth, teacher_scores=teacher, k=K,
                                     relevant_grade=GRADE)
  assert list(excluded) == evaluate.excluded_names(k=K, has_truth=False)


def test_stacked_equals_loop_and_references(test_split):
  batch, teacher = test_split
  models = _models(batch, teacher)
  kw = dict(teacher_scores=teacher, k=K, keep_ratios=RATIOS, relevant_grade=GRADE)
  values, excluded = evaluate.evaluate_stacked(models, batch, return_excluded=True, **kw)
  assert set(values) == set(evaluate.metric_names(k=K, keep_ratios=RATIOS))
  for i in range(models.shape[0]):
    one = evaluate.evaluate_scores(models[i], batch, **kw)
    for name, value in one.items():
      np.testing.assert_allclose(values[name][i], value, rtol=1e-5, atol=1e-6, err_msg=name)
      assert np.isfinite(values[name][i]), name
  teacher_row = {n: float(v[0]) for n, v in values.items()}
  oracle_row = {n: float(v[1]) for n, v in values.items()}
  assert teacher_row["kendall_tau"] == pytest.approx(1.0)
  assert teacher_row["R@(5,50%)"] == pytest.approx(1.0)
  assert oracle_row["ndcg@5"] == pytest.approx(1.0) and oracle_row["mrr"] == pytest.approx(1.0)
  for name in ("auc_logs", "gauc_logs", "kendall_tau"):
    assert -1.0 <= teacher_row[name] <= 1.0
  # The logs columns against scikit-learn (not the functions evaluate itself calls): AUC
  # over every observed (valid and exposed) candidate pooled; GAUC the mean of per-list
  # AUCs weighted by the list's observed count, over lists with both classes.
  observed = batch.valid & batch.exposed
  positive = observed & (batch.label > 0)
  s, p, o = (np.asarray(x) for x in (models[2], positive, observed))
  np.testing.assert_allclose(values["auc_logs"][2], roc_auc_score(p[o], s[o]), rtol=1e-6)
  both = [i for i in range(len(s)) if 0 < p[i][o[i]].sum() < o[i].sum()]
  assert 0 < len(both) < len(s)  # some lists are left out, and some count
  per_list = [roc_auc_score(p[i][o[i]], s[i][o[i]]) for i in both]
  np.testing.assert_allclose(values["gauc_logs"][2],
                             np.average(per_list, weights=[o[i].sum() for i in both]),
                             rtol=1e-6)
  # Counts: data-only counts are equal for every model; τ depends on the scores.
  for key, counts in excluded.items():
    assert counts.shape == (4,) and counts.dtype == jnp.int32, key
    if key != "kendall_tau":
      assert len(set(np.asarray(counts).tolist())) == 1, key
  assert int(excluded["kendall_tau"][0]) == 0
  assert int(excluded["kendall_tau"][3]) == batch.num_requests  # constant scores
  assert float(values["kendall_tau"][3]) == 0.0
  assert int(excluded["gauc_logs"][0]) == int(
      jnp.sum(~metrics.has_both_classes(positive, where=observed)))


def test_ndcg_empty_switch(test_split):
  batch, teacher = test_split
  # Drop every relevant candidate of the first 3 lists so NDCG is undefined there.
  truth = jnp.asarray(batch.true_relevance).at[:3].set(0.0)
  label = jnp.asarray(batch.label).at[:3].set(0.0)
  batch = batch._replace(true_relevance=truth, label=label)
  models = _models(batch, teacher)
  kw = dict(teacher_scores=teacher, k=K, keep_ratios=RATIOS, relevant_grade=GRADE)
  out = {e: evaluate.evaluate_stacked(models, batch, ndcg_empty=e, return_excluded=True, **kw)
         for e in metrics.EMPTY_MODES}
  excluded = out["exclude"][1]
  assert int(excluded["ndcg@5"][0]) >= 3 and int(excluded["ndcg@5_logs,retention"][0]) >= 3
  n = batch.num_requests
  for col, key in (("ndcg@5", "ndcg@5"), ("ndcg@5_logs", "ndcg@5_logs,retention")):
    e = int(excluded[key][0])
    ex, zero, one = (np.asarray(out[m][0][col]) for m in metrics.EMPTY_MODES)
    np.testing.assert_allclose(zero, ex * (n - e) / n, rtol=1e-5)
    np.testing.assert_allclose(one, (ex * (n - e) + e) / n, rtol=1e-5)
  # The switch only touches NDCG.
  for col in ("mrr", "recall@50%", "retention@50%", "gauc_logs", "kendall_tau"):
    np.testing.assert_array_equal(out["zero"][0][col], out["exclude"][0][col])
  with pytest.raises(ValueError, match="ndcg_empty"):
    evaluate.evaluate_stacked(models, batch, ndcg_empty="skip", **kw)


def test_batch_is_an_argument_not_a_constant(test_split):
  batch, teacher = test_split
  batch = jax.tree.map(jnp.asarray, batch)  # device arrays, like the runner's batches
  models = _models(batch, teacher)
  kw = dict(teacher_scores=teacher, k=K, keep_ratios=RATIOS, relevant_grade=GRADE)
  evaluate.evaluate_stacked(models, batch, **kw)
  before = evaluate._evaluate_stacked._cache_size()
  other = batch._replace(label=jnp.roll(batch.label, 1, axis=0))
  evaluate.evaluate_stacked(models + 1.0, other, **kw)
  assert evaluate._evaluate_stacked._cache_size() == before  # new data, no recompilation


def test_describe_excluded():
  excluded = {"ndcg@5": np.array([1, 1, 1]), "mrr,recall": np.array([2, 2, 2]),
              "kendall_tau": np.array([0, 4, 0]), "ndcg@5_logs,retention": np.array([3, 3, 3]),
              "gauc_logs": np.array([5, 5, 5])}
  text = evaluate.describe_excluded(excluded, ["a", "b", "c"], num_lists=32, k=5,
                                    relevant_grade=2.0)
  assert "of 32 test requests" in text
  assert "- ndcg@5, sys_ndcg, sys_loss: 1 without a candidate of true grade > 0 (excluded" in text
  assert "- mrr, recall@r, sys_recall: 2 without a candidate of true grade ≥ 2" in text
  assert "- kendall_tau: 0 (b: 4)" in text
  assert "- ndcg@5_logs, retention@r: 3 without a logged positive" in text
  assert "- gauc_logs: 5 without both" in text
  text = evaluate.describe_excluded(excluded, ["a", "b", "c"], num_lists=32, k=5,
                                    relevant_grade=2.0, ndcg_empty="zero")
  assert "scored 0 in the mean, eval.ndcg_empty='zero'" in text
  no_truth = {k: v for k, v in excluded.items() if k not in ("ndcg@5", "mrr,recall")}
  text = evaluate.describe_excluded(no_truth, ["a", "b", "c"], num_lists=32, k=5,
                                    relevant_grade=2.0)
  assert "mrr" not in text and "gauc_logs" in text


def test_config_ndcg_empty_is_validated(smoke_config):
  assert smoke_config.eval.ndcg_empty == "exclude"
  validate_config(smoke_config)
  smoke_config.eval.ndcg_empty = "skip"
  with pytest.raises(ConfigError, match=r"eval\.ndcg_empty.*exclude"):
    validate_config(smoke_config)


def _np_order(scores, valid):
  """Valid indices by descending score, ties by the lower index (a Python sort)."""
  return sorted((i for i in range(len(scores)) if valid[i]), key=lambda i: (-scores[i], i))


def _np_ndcg(order, labels, ideal_order, k, gain):
  g = (lambda y: 2.0 ** y - 1.0) if gain == "exp2" else (lambda y: y)
  dcg = lambda o: sum(g(labels[i]) / np.log2(r + 2) for r, i in enumerate(o[:k]))
  ideal = dcg(ideal_order)
  return dcg(order) / ideal if ideal > 0 else None  # None: undefined (excluded)


@pytest.mark.parametrize("gain, k", [("linear", 5), ("exp2", 15)])
def test_gain_precision_and_cascade_columns_match_numpy(test_split, gain, k):
  """The new columns against a NumPy implementation written here; k = 15 exceeds some
  lists (12..20 candidates), which are scored over their length and counted, not dropped."""
  batch, teacher = test_split
  models = _models(batch, teacher)[:3]
  values, excluded = jax.device_get(evaluate.evaluate_stacked(
      models, batch, teacher_scores=teacher, k=k, keep_ratios=RATIOS, relevant_grade=GRADE,
      gain=gain, return_excluded=True))
  truth, valid = np.asarray(batch.true_relevance), np.asarray(batch.valid)
  t = np.asarray(teacher)
  n_valid = valid.sum(-1)
  assert int(excluded["shorter_than_k"][0]) == int((n_valid < k).sum())
  if k == 15:
    assert 0 < int((n_valid < k).sum()) < batch.num_requests  # the case is exercised
  for p in range(models.shape[0]):
    s = np.asarray(models[p])
    ndcg, prec, sys_ndcg, sys_rec, full = [], [], {r: [] for r in RATIOS}, \
        {r: [] for r in RATIOS}, []
    for q in range(batch.num_requests):
      order, ideal_order = _np_order(s[q], valid[q]), _np_order(truth[q], valid[q])
      rel = set(i for i in range(len(s[q])) if valid[q, i] and truth[q, i] >= GRADE)
      prec.append(len(rel & set(order[:k])) / k)
      v = _np_ndcg(order, truth[q], ideal_order, k, gain)
      if v is None:
        continue
      ndcg.append(v)
      full.append(_np_ndcg(_np_order(t[q], valid[q]), truth[q], ideal_order, k, gain))
      for r in RATIOS:
        m = int(np.clip(np.ceil(r * n_valid[q] - 1e-5), 1, n_valid[q]))
        keep = np.zeros(len(s[q]), bool)
        keep[order[:m]] = True
        final = _np_order(t[q], keep)
        sys_ndcg[r].append(_np_ndcg(final, truth[q], ideal_order, k, gain))
        if rel:
          sys_rec[r].append(len(rel & set(final[:k])) / len(rel))
    assert values[f"ndcg@{k}"][p] == pytest.approx(np.mean(ndcg), abs=1e-5)
    assert values[f"precision@{k}"][p] == pytest.approx(np.mean(prec), abs=1e-5)
    for r in RATIOS:
      label = evaluate.keep_label(r)
      assert values[f"sys_ndcg@{k}@{label}"][p] == pytest.approx(np.mean(sys_ndcg[r]), abs=1e-5)
      assert values[f"sys_recall@{k}@{label}"][p] == pytest.approx(np.mean(sys_rec[r]),
                                                                   abs=1e-5)
      assert values[f"sys_loss@{label}"][p] == pytest.approx(
          np.mean(full) - np.mean(sys_ndcg[r]), abs=1e-5)
  # The teacher pre-ranking for itself loses nothing once it keeps at least k.
  if k == 5:
    np.testing.assert_allclose(values["sys_loss@50%"][0], 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="eval.gain"):
    evaluate.evaluate_stacked(models, batch, teacher_scores=teacher, k=k, keep_ratios=RATIOS,
                              relevant_grade=GRADE, gain="exp")


def test_config_gain_is_validated(smoke_config):
  assert smoke_config.eval.gain in evaluate.GAINS
  validate_config(smoke_config)
  smoke_config.eval.gain = "log"
  with pytest.raises(ConfigError, match=r"eval\.gain.*exp2.*linear|eval\.gain.*linear.*exp2"):
    validate_config(smoke_config)


@pytest.mark.parametrize("ndcg_empty", ["exclude", "zero", "one"])
def test_padded_split_gives_the_unpadded_values_with_one_compile(test_split, ndcg_empty):
  """A split padded with empty lists (pad_lists) and evaluated with its `lists` mask gives
  the metrics (to float32 rounding) and exactly the exclusion counts of the split itself;
  two splits of different R padded to one R share one compiled evaluation (what the
  valid/ columns rely on)."""
  batch, teacher = test_split
  scores = _models(batch, teacher)
  kw = dict(k=K, keep_ratios=RATIOS, relevant_grade=GRADE, ndcg_empty=ndcg_empty,
            return_excluded=True)
  want, want_excluded = evaluate.evaluate_stacked(scores, batch, teacher_scores=teacher, **kw)
  R = batch.num_requests
  padded, s, t, lists = evaluate.pad_lists(batch, scores, teacher, R + 7)
  assert padded.valid.shape == (R + 7, batch.list_size) and not padded.valid[R:].any()
  got, got_excluded = evaluate.evaluate_stacked(s, padded, teacher_scores=t, lists=lists, **kw)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=2e-6, atol=1e-6, err_msg=name)
  for name in want_excluded:
    np.testing.assert_array_equal(got_excluded[name], want_excluded[name], err_msg=name)
  # Without the mask the padding would count (precision@k and R@ average every list).
  unmasked = evaluate.evaluate_stacked(s, padded, teacher_scores=t, **kw)[0]
  assert not np.allclose(unmasked[f"precision@{K}"], want[f"precision@{K}"])
  # A shorter split padded to the same R reuses the compiled program.
  short = batch.take(slice(0, R - 5))
  before = evaluate._evaluate_stacked._cache_size()
  p2, s2, t2, l2 = evaluate.pad_lists(short, scores[:, :R - 5], teacher[:R - 5], R + 7)
  evaluate.evaluate_stacked(s2, p2, teacher_scores=t2, lists=l2, **kw)
  assert evaluate._evaluate_stacked._cache_size() == before
  with pytest.raises(ValueError, match="below the split's"):
    evaluate.pad_lists(batch, scores, teacher, R - 1)
