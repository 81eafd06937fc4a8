"""Per-candidate score exports: our tie rule survives trec_eval, and a smoke run's printed
NDCG@10 / precision@10 equal pytrec_eval's on the exported run files and qrels."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from prerank_jax.host import export


def _parse_run(text):
  run = {}
  for line in text.splitlines():
    qid, q0, doc, rank, score, tag = line.split()
    assert q0 == "Q0"
    run.setdefault(qid, {})[doc] = float(score)
  return run


def _parse_qrels(text):
  qrels = {}
  for line in text.splitlines():
    qid, _, doc, grade = line.split()
    qrels.setdefault(qid, {})[doc] = int(grade)
  return qrels


def _np_ranks(scores, valid):
  """1-based ranks by descending score, ties by the lower index, valid only (NumPy)."""
  out = np.zeros(scores.shape, np.int64)
  for r in range(scores.shape[0]):
    idx = sorted(np.flatnonzero(valid[r]), key=lambda i: (-float(scores[r, i]), i))
    out[r, idx] = np.arange(1, len(idx) + 1)
  return out


def test_tie_free_scores_keep_our_order_and_the_values():
  rng = np.random.default_rng(0)
  scores = np.round(rng.normal(size=(20, 15)), 1).astype(np.float32)  # many ties
  scores[0] = 0.0
  scores[1, :5] = -0.0
  scores[2] = np.float32(2.0)   # a power of two: the binade edge
  valid = rng.random((20, 15)) < 0.8
  e = export.tie_free_scores(scores, valid)
  assert np.all(np.isnan(e[~valid]))
  ranks = _np_ranks(scores, valid)
  for r in range(20):
    idx = np.flatnonzero(valid[r])
    # Strictly decreasing in our rank order: no ties left for trec_eval to break.
    by_rank = e[r, idx[np.argsort(ranks[r, idx])]]
    assert np.all(np.diff(by_rank) < 0), r
    # Lowered by at most N float32 ulps, and never raised.
    assert e.dtype == np.float32 and np.all(e[r, idx] <= scores[r, idx])
    ulp = np.spacing(np.abs(scores[r, idx]).astype(np.float32))
    assert np.all(scores[r, idx] - e[r, idx] <= 15 * np.maximum(ulp, np.float32(1e-45)) * 2)
    untied = np.array([np.sum(scores[r, idx] == x) == 1 for x in scores[r, idx]])
    first_after_gap = untied & np.array([not np.any((scores[r, idx] > x) & (
        scores[r, idx] - x < 1e-3)) for x in scores[r, idx]])
    np.testing.assert_array_equal(e[r, idx][first_after_gap], scores[r, idx][first_after_gap])
  # A non-finite valid score (a diverged model): the list writes -rank, NaN ranked last.
  bad = scores[3:4].copy()
  bad[0, 0] = np.nan
  e = export.tie_free_scores(bad, np.ones((1, 15), bool))[0]
  assert e[0] == -15.0
  finite_ranks = _np_ranks(bad[:, 1:], np.ones((1, 14), bool))[0]
  np.testing.assert_array_equal(e[1:], -finite_ranks.astype(float))


def test_run_file_reproduces_our_ndcg_in_pytrec_eval_despite_ties():
  import jax.numpy as jnp
  from prerank_jax.metrics import ndcg_at_k

  rng = np.random.default_rng(1)
  R, N = 30, 12
  scores = rng.integers(0, 3, (R, N)).astype(np.float32)  # heavy ties
  truth = rng.integers(0, 4, (R, N)).astype(np.float32)
  valid = np.arange(N)[None] < rng.integers(3, N + 1, R)[:, None]  # lists shorter than 10
  run = _parse_run(export.run_file_text(scores, valid, "m"))
  qrels = _parse_qrels(export.qrels_text(truth, valid))
  res = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
  ours = np.asarray(ndcg_at_k(jnp.asarray(scores), jnp.asarray(truth), where=jnp.asarray(valid),
                              k=10, gain="linear"))
  for r in range(R):
    assert ours[r] == pytest.approx(res[f"q{r}"]["ndcg_cut_10"], abs=1e-6), r
  # Negative control: the raw scores, with trec_eval's own tie rule, give other values.
  raw = {f"q{r}": {f"d{i}": float(scores[r, i]) for i in np.flatnonzero(valid[r])}
         for r in range(R)}
  res_raw = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(raw)
  assert any(abs(ours[r] - res_raw[f"q{r}"]["ndcg_cut_10"]) > 1e-3 for r in range(R))


def test_qrels_need_integer_grades_and_tags_are_safe():
  valid = np.ones((1, 2), bool)
  assert export.qrels_text(np.array([[0.5, 1.0]]), valid) is None
  assert export.qrels_text(np.array([[2.0, 0.0]]), valid) == "q0 0 d0 2\nq0 0 d1 0\n"
  assert export.file_tag("student temperature=1 alpha=0.5") == \
      "student_temperature=1_alpha=0.5"
  assert export.file_tag("student temperature=1 alpha=0.5").isascii()
  assert export.file_tag("oracle (truth)") == "oracle_truth"


def test_combined_teacher_uses_the_configured_ensemble(smoke_config):
  import jax.numpy as jnp
  from prerank_jax.batch import Batch
  from prerank_jax.host.teachers import combined_teacher

  rng = np.random.default_rng(2)
  R, N, M = 4, 6, 2
  t = rng.normal(size=(R, N, M)).astype(np.float32)
  valid = np.ones((R, N), bool)
  valid[0, 4:] = False
  z = np.zeros((R, N, 1), np.float32)
  batch = Batch(context=np.zeros((R, 1), np.float32), items=z, cross=z,
                label=np.zeros((R, N), np.float32), exposed=valid, valid=valid,
                teacher_scores=jnp.asarray(t))
  smoke_config.student.loss.ensemble = "mean_logits"
  smoke_config.student.loss.ensemble_weights = (3.0, 1.0)
  got = np.asarray(combined_teacher(smoke_config, batch))
  np.testing.assert_allclose(got[valid], (0.75 * t[..., 0] + 0.25 * t[..., 1])[valid],
                             rtol=1e-6)
  assert not np.allclose(got[valid], t.mean(-1)[valid])  # not the plain mean
  smoke_config.student.loss.ensemble = "mean_rank"
  smoke_config.student.loss.ensemble_weights = ()
  got = np.asarray(combined_teacher(smoke_config, batch))
  want = -0.5 * (_np_ranks(t[..., 0], valid) + _np_ranks(t[..., 1], valid))
  np.testing.assert_allclose(got[valid], want[valid], rtol=1e-6)


@pytest.mark.slow
def test_smoke_run_numbers_equal_pytrec_eval_on_the_exports(smoke_config):
  import pyarrow.parquet as pq
  from prerank_jax.host.runner import load_data, run

  smoke_config.eval.gain = "linear"
  smoke_config.sweep.temperature = (2.0,)
  smoke_config.sweep.alpha = (0.5, 1.0)
  smoke_config.teacher.num_teachers = 2
  smoke_config.student.loss.ensemble = "mean_rank"
  result = run(smoke_config)
  splits, *_ = load_data(smoke_config)
  k, grade = smoke_config.eval.k, smoke_config.eval.relevant_grade
  d = result.run_dir
  trec = d / export.TREC_DIR
  qrels = _parse_qrels((trec / export.QRELS_FILE).read_text())
  table = pq.read_table(d / export.SCORES_FILE).to_pandas()
  # The simulator has no IDs: internal indices only, every split (docs/reference/outputs.md).
  assert list(table.columns) == list(export.COLUMNS)
  assert list(table["split"].unique()) == ["train", "valid", "test"]
  for split in ("train", "valid", "test"):
    assert len(table[table["split"] == split]) == len(result.rows) * int(
        np.asarray(splits[split].valid).sum())
  table = table[table["split"] == "test"]
  assert list(table.groupby("point")["model"].first()) == [r["model"] for r in result.rows]
  for row in result.rows:
    run_file = trec / f"run.{export.file_tag(row['model'])}.trec"
    per_query = pytrec_eval.RelevanceEvaluator(
        qrels, {f"ndcg_cut_{k}", f"P_{k}"}, relevance_level=int(grade)).evaluate(
            _parse_run(run_file.read_text()))
    defined = [q for q, docs in qrels.items() if max(docs.values()) > 0]  # ndcg_empty=exclude
    ndcg = np.mean([per_query[q][f"ndcg_cut_{k}"] for q in defined])
    prec = np.mean([per_query[q][f"P_{k}"] for q in qrels])
    assert row[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-6), row["model"]
    assert row[f"precision@{k}"] == pytest.approx(prec, abs=1e-6), row["model"]
  rows = {r["model"]: r for r in result.rows}
  # The teacher row is the configured (mean-rank) ensemble pre-ranking for itself: keeping
  # more never loses more, and nothing is gained over ranking the full list.
  losses = [rows["teacher"][f"sys_loss@{r}"] for r in ("10%", "25%", "50%", "75%")]
  assert all(a >= b - 1e-6 for a, b in zip(losses, losses[1:])) and losses[-1] >= -1e-6
  assert rows["oracle (truth)"][f"ndcg@{k}"] == pytest.approx(1.0)
  # The terminal shows about 8 columns and says where the full table is.
  header = result.table.splitlines()[0].split()
  assert len(header) <= 9 and "status" in header and f"ndcg@{k}" in header
  assert "results.md" in result.table and f"of {len(result.columns)} columns" in result.table
  assert len(result.columns) > 20


def _split(rng, R, N, P, *, name, ids=True, request_column="session", candidate_column="item"):
  from prerank_jax.data.ids import SplitIds

  valid = np.arange(N)[None] < rng.integers(2, N + 1, R)[:, None]
  split_ids = None
  if ids:
    request = np.array([f"{name} req {r}" for r in range(R)])  # whitespace: sanitised
    candidate = np.where(valid, np.array([[f"it\t{r}:{i}" for i in range(N)]
                                          for r in range(R)]), "")
    split_ids = SplitIds(request, candidate, request_column, candidate_column)
  return export.SplitScores(
      rng.normal(size=(P, R, N)).astype(np.float32), valid=valid,
      label=rng.integers(0, 2, (R, N)).astype(np.float32), exposed=rng.random((R, N)) < 0.5,
      truth=rng.integers(0, 3, (R, N)).astype(np.float32), ids=split_ids)


def test_write_scores_every_split_with_the_users_ids(tmp_path):
  import pyarrow.parquet as pq

  rng = np.random.default_rng(3)
  models = ["student a", "teacher"]
  splits = {"train": _split(rng, 7, 5, 2, name="train"),
            "valid": _split(rng, 4, 5, 2, name="valid"),
            "test": _split(rng, 3, 5, 2, name="test")}
  consumed = []

  def lazily():  # the writer takes one split at a time, in order
    for name, data in splits.items():
      consumed.append(name)
      yield name, data

  written = export.write_scores(tmp_path, models, lazily())
  assert consumed == ["train", "valid", "test"] and written["scores_splits"] == (
      "train, valid, test")
  table = pq.read_table(tmp_path / export.SCORES_FILE).to_pandas()
  assert list(table.columns) == ["split", "model", "point", "request", "candidate", "session",
                                 "item", "score", "rank", "label", "truth", "exposed"]
  for name, data in splits.items():
    part = table[table["split"] == name]
    assert len(part) == len(models) * int(data.valid.sum()), name
    r, i = part["request"].to_numpy(), part["candidate"].to_numpy()
    assert data.valid[r, i].all()
    # The user's IDs sit beside the internal indices they name, unchanged in the Parquet.
    np.testing.assert_array_equal(part["session"], data.ids.request[r])
    np.testing.assert_array_equal(part["item"], data.ids.candidate[r, i])
    np.testing.assert_array_equal(part["score"], data.scores[part["point"], r, i])
    np.testing.assert_array_equal(part["label"], data.label[r, i])
  # TREC files: the test split, keyed by the sanitised IDs (no whitespace inside a token).
  run = _parse_run((tmp_path / "trec" / "run.student_a.trec").read_text())
  test = splits["test"]
  assert set(run) == {f"test_req_{r}" for r in range(3)}
  assert set(run["test_req_1"]) == {f"it_1:{i}" for i in np.flatnonzero(test.valid[1])}
  qrels = _parse_qrels((tmp_path / "trec" / export.QRELS_FILE).read_text())
  assert qrels["test_req_2"] == {f"it_2:{i}": int(test.truth[2, i])
                                 for i in np.flatnonzero(test.valid[2])}


def test_id_columns_never_shadow_ours_and_duplicate_trec_ids_stay_apart():
  from prerank_jax.data.ids import SplitIds

  ids = SplitIds(np.array(["a"]), np.array([["x"]]), "request", "score")
  assert export.id_columns(ids) == ("user_request", "user_score")
  assert export.id_columns(ids._replace(candidate_column="request")) == (
      "user_request", "user_user_request")
  # Two requests with one qid after sanitising, two candidates with one docid in a list,
  # an empty ID: each copy gets its index, the empty one the internal name.
  ids = SplitIds(np.array(["q 1", "q\t1", "q2"]),
                 np.array([["d", "d", ""], ["e", "f", "g"], ["h", "", "i"]]))
  valid = np.array([[True, True, True], [True, True, True], [True, False, True]])
  qid, docid = export.trec_ids(ids, valid)
  assert list(qid) == ["q_1~0", "q_1~1", "q2"]
  assert list(docid[0]) == ["d~0", "d~1", "d2"] and list(docid[2][[0, 2]]) == ["h", "i"]
  qid, docid = export.trec_ids(None, valid)
  assert list(qid) == ["q0", "q1", "q2"] and docid[1, 2] == "d2"


def test_write_scores_refuses_mixed_or_misaligned_ids_and_leaves_no_file(tmp_path):
  rng = np.random.default_rng(4)
  with pytest.raises(ValueError, match="'valid' has ID columns None"):
    export.write_scores(tmp_path, ["m"], [("train", _split(rng, 3, 4, 1, name="t")),
                                          ("valid", _split(rng, 3, 4, 1, name="v", ids=False))])
  bad = _split(rng, 3, 4, 1, name="t")
  bad = bad._replace(ids=bad.ids._replace(request=bad.ids.request[:2]))
  with pytest.raises(ValueError, match="scores.parquet train: IDs of shape"):
    export.write_scores(tmp_path, ["m"], [("train", bad)])
  assert not list(tmp_path.iterdir())  # nothing half-written
