"""What a finished run writes, end to end (docs/reference/outputs.md): every split's
per-candidate scores keyed by the user's IDs, the validation split's metrics beside the
test split's, and the sweep point chosen on validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prerank_jax.host import export


def _ndcg_np(frame, *, k: int, gain: str, column: str = "truth") -> float:
  """Mean NDCG@k over the lists with a candidate of truth > 0, from scores.parquet rows of
  one model and split: rank by descending score, ties by the lower candidate index.
  ``column``: the grades (``label`` where the truth metrics use the logged labels)."""
  g = (lambda y: 2.0 ** y - 1.0) if gain == "exp2" else (lambda y: y)
  values = []
  for _, lst in frame.groupby("request"):
    truth = lst[column].to_numpy(np.float64)
    if not (truth > 0).any():
      continue
    order = np.lexsort((lst["candidate"].to_numpy(), -lst["score"].to_numpy(np.float64)))
    disc = 1.0 / np.log2(np.arange(2, len(truth) + 2))
    dcg = float(np.sum((g(truth[order]) * disc)[:k]))
    idcg = float(np.sum((g(np.sort(truth)[::-1]) * disc)[:k]))
    values.append(dcg / idcg)
  return float(np.mean(values))


def _precision_np(frame, *, k: int, grade: float, column: str = "truth") -> float:
  values = []
  for _, lst in frame.groupby("request"):
    order = np.lexsort((lst["candidate"].to_numpy(), -lst["score"].to_numpy(np.float64)))
    values.append(float(np.sum(lst[column].to_numpy()[order][:k] >= grade)) / k)
  return float(np.mean(values))


def _with_ids(monkeypatch):
  """The simulator's splits, with IDs the way a loader returns them (Loaded.ids)."""
  from prerank_jax.data import registry
  from prerank_jax.data.ids import SplitIds

  real = registry.load_dataset
  made = {}

  def load_dataset(config, **kwargs):
    loaded = real(config, **kwargs)
    ids = {}
    for split, batch in loaded.splits.items():
      valid = np.asarray(batch.valid)
      R, N = valid.shape
      ids[split] = SplitIds(
          np.array([f"{split}-session {r}" for r in range(R)]),
          np.where(valid, np.array([[f"item#{split}/{r}/{i}" for i in range(N)]
                                    for r in range(R)]), ""),
          request_column="session_id", candidate_column="item_id")
    made.update(ids)
    return loaded._replace(ids=ids)

  monkeypatch.setattr(registry, "load_dataset", load_dataset)
  return made


@pytest.mark.slow
def test_run_writes_every_split_keyed_by_ids_and_valid_metrics(smoke_config, monkeypatch):
  import pyarrow.parquet as pq

  from prerank_jax import evaluate
  from prerank_jax.host.runner import run

  ids = _with_ids(monkeypatch)
  smoke_config.sweep.temperature = (2.0,)
  smoke_config.sweep.alpha = (0.5, 1.0)
  compiled_before = evaluate._evaluate_stacked._cache_size()
  result = run(smoke_config)
  # The validation split has the test split's shape here: one compiled evaluation for both.
  assert evaluate._evaluate_stacked._cache_size() - compiled_before <= 1
  d, k, gain = result.run_dir, smoke_config.eval.k, smoke_config.eval.gain
  table = pq.read_table(d / export.SCORES_FILE).to_pandas()
  assert list(table.columns) == ["split", "model", "point", "request", "candidate",
                                 "session_id", "item_id", "score", "rank", "label", "truth",
                                 "exposed"]
  assert list(table["split"].unique()) == ["train", "valid", "test"]
  models = [r["model"] for r in result.rows]
  for split, split_ids in ids.items():
    part = table[table["split"] == split]
    assert len(part) == len(models) * int((split_ids.candidate != "").sum()), split
    r, i = part["request"].to_numpy(), part["candidate"].to_numpy()
    np.testing.assert_array_equal(part["session_id"], split_ids.request[r])
    np.testing.assert_array_equal(part["item_id"], split_ids.candidate[r, i])
    assert sorted(part["model"].unique()) == sorted(models)
  # valid/ metrics: the same definition on the validation rows of scores.parquet (NumPy).
  valid = table[table["split"] == "valid"]
  for p, row in enumerate(result.rows):
    rows = valid[valid["point"] == p]
    assert row[f"valid/ndcg@{k}"] == pytest.approx(_ndcg_np(rows, k=k, gain=gain),
                                                   abs=1e-5), row["model"]
    assert row[f"valid/precision@{k}"] == pytest.approx(_precision_np(
        rows, k=k, grade=smoke_config.eval.relevant_grade), abs=1e-6), row["model"]
    assert row[f"ndcg@{k}"] == pytest.approx(_ndcg_np(
        table[(table["split"] == "test") & (table["point"] == p)], k=k, gain=gain), abs=1e-5)
  assert {f"valid/{c}" for c in evaluate.metric_names(
      k=k, keep_ratios=smoke_config.eval.keep_ratios)} <= set(result.columns)
  assert (d / "results.csv").read_text().splitlines()[0].count("valid/") == sum(
      c.startswith("valid/") for c in result.columns)
  # TREC: the test split's sessions and items, whitespace made "_".
  run_file = (d / export.TREC_DIR / f"run.{export.file_tag(models[0])}.trec").read_text()
  qid, _, doc, *_ = run_file.splitlines()[0].split()
  assert qid.startswith("test-session_") and doc.startswith("item#test/")
  # The selection: the validation argmax among the students, its test value reported.
  students = [r for r in result.rows if r["status"] == "ok"]
  best = max(students, key=lambda r: r[f"valid/ndcg@{k}"])
  text = (d / "results.md").read_text()
  assert f"Selected on validation: **{best['model']}**" in text
  assert f"its test ndcg@{k} is {best[f'ndcg@{k}']:.4f}" in text
  assert "Selected on validation" in result.table


def test_selection_is_the_validation_argmax_not_the_test_argmax():
  from prerank_jax.host import report

  rows = [
      {"model": "student T=1", "status": "ok", "ndcg@10": 0.70, "valid/ndcg@10": 0.40},
      {"model": "student T=2", "status": "ok", "ndcg@10": 0.60, "valid/ndcg@10": 0.55},
      {"model": "student T=4", "status": "diverged", "ndcg@10": math.nan,
       "valid/ndcg@10": math.nan},
      {"model": "teacher", "status": "reference", "ndcg@10": 0.9, "valid/ndcg@10": 0.9},
  ]
  chosen = report.select_on_valid(rows, "ndcg@10")
  test_best = max((r for r in rows if r["status"] == "ok"), key=lambda r: r["ndcg@10"])
  assert chosen["model"] == "student T=2" != test_best["model"]
  assert (chosen["valid"], chosen["test"], chosen["points"]) == (0.55, 0.60, 2)
  assert "**student T=2**" in report.selection_text(chosen)
  # Replicates (sweep.seeds) pool by point: T=1's mean 0.45 beats T=2's single 0.44.
  seeded = [{"model": f"student T=1 seed={s}", "status": "ok", "ndcg@10": 0.5,
             "valid/ndcg@10": v} for s, v in ((0, 0.40), (1, 0.50))]
  seeded.append({"model": "student T=2 seed=0", "status": "ok", "ndcg@10": 0.9,
                 "valid/ndcg@10": 0.44})
  chosen = report.select_on_valid(seeded, "ndcg@10")
  assert chosen["model"] == "student T=1" and chosen["replicates"] == 2
  assert chosen["valid"] == pytest.approx(0.45)
  # No validation columns (an old run): nothing chosen, and never on test.
  old = [{k: v for k, v in r.items() if not k.startswith("valid/")} for r in rows]
  assert report.select_on_valid(old, "ndcg@10") is None
  assert "no point is selected" in report.selection_text(None)
  assert report.headline_metric(["model", "ndcg@10", "R@(10,25%)"], k=10,
                                keep_ratios=(0.25,)) == "ndcg@10"
  assert report.headline_metric(["model", "R@(10,25%)"], k=10, keep_ratios=(0.25,),
                                has_truth=False) == "R@(10,25%)"


def _write_table(path, *, num_requests: int = 48, seed: int = 0) -> dict[str, list]:
  """Logs with the user's own ID columns (``session``, ``item id``: a space inside) and a
  split column; labels null where a candidate was not shown."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  rng = np.random.default_rng(seed)
  cols: dict[str, list] = {k: [] for k in ("session", "item id", "split", "user_f0", "user_f1",
                                           "item_f0", "item_f1", "item_f2", "cross_f0",
                                           "label")}
  for r in range(num_requests):
    length = int(rng.integers(12, 21))
    split = ("train" if r < num_requests * 0.5 else
             "valid" if r < num_requests * 0.7 else "test")  # 10 valid, 14 test lists
    u, x = rng.normal(size=2), rng.normal(size=(length, 4))
    label = ((x[:, 0] + 0.5 * x[:, 3] + 0.3 * rng.normal(size=length)) > 0.5).astype(float)
    shown = rng.choice(length, size=8, replace=False)
    for c in rng.permutation(length):  # rows of a request in no particular order
      cols["session"].append(f"s{r:03d}")
      cols["item id"].append(f"item {rng.integers(10**6)}-{c}")
      cols["split"].append(split)
      cols["user_f0"].append(float(u[0]))
      cols["user_f1"].append(float(u[1]))
      for k in range(3):
        cols[f"item_f{k}"].append(float(x[c, k]))
      cols["cross_f0"].append(float(x[c, 3]))
      cols["label"].append(float(label[c]) if c in shown else None)
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.table(cols), path)
  return cols


@pytest.mark.slow
def test_tabular_run_keys_every_split_by_the_tables_own_ids(tmp_path, capsys):
  """The IDs in scores.parquet name the very rows of the table: each (session, item id)
  pair's logged label and exposure there equal the table's own (read independently)."""
  import pyarrow.parquet as pq

  from prerank_jax import evaluate
  from prerank_jax.config_files import repo_config
  from prerank_jax.host.runner import run

  cols = _write_table(tmp_path / "raw" / "logs.parquet")
  config = repo_config("tabular", "smoke")
  config.workdir, config.progress, config.wandb.mode = str(tmp_path / "runs"), False, "disabled"
  config.source.data_dir, config.source.manual_dir = str(tmp_path / "tfds"), str(tmp_path / "raw")
  config.source.update(dict(split_column="split", request_column="session",
                            candidate_column="item id"))
  config.sweep.temperature, config.sweep.alpha = (2.0,), (1.0,)
  compiled_before = evaluate._evaluate_stacked._cache_size()
  capsys.readouterr()
  result = run(config)
  warned = [line for line in capsys.readouterr().err.splitlines() if "logged labels" in line]
  assert len(warned) == 1 and warned[0].startswith("warning: ")  # one line, at the start
  # valid (10 lists) and test (14) differ in size: padded to one shape, one compile.
  assert evaluate._evaluate_stacked._cache_size() - compiled_before <= 1
  table = pq.read_table(result.run_dir / export.SCORES_FILE).to_pandas()
  assert {"session", "item id", "request", "candidate", "split"} <= set(table.columns)
  logged = {(s, i): (lab, split) for s, i, lab, split in zip(
      cols["session"], cols["item id"], cols["label"], cols["split"])}
  one = table[table["point"] == 0]
  assert sorted(one["split"].unique()) == ["test", "train", "valid"]
  sizes = one.groupby("split", observed=True)["request"].nunique()
  assert (sizes["valid"], sizes["test"]) == (10, 14)  # the padded path was taken
  for split in ("train", "valid", "test"):
    part = one[one["split"] == split]
    # Every candidate of the split's requests, each once (lists of <= 20 are not cut).
    want = {k for k, (_, s) in logged.items() if s == split}
    got = list(zip(part["session"], part["item id"]))
    assert len(got) == len(set(got)) and set(got) == want, split
    for key, label, exposed in zip(got, part["label"], part["exposed"]):
      assert exposed == (logged[key][0] is not None), key
      assert label == (logged[key][0] or 0.0), key
  # The TREC files: sessions as qids, item IDs with the space made "_".
  run_file = next((result.run_dir / export.TREC_DIR).glob("run.student*.trec")).read_text()
  qid, _, doc, *_ = run_file.splitlines()[0].split()
  assert qid in set(cols["session"])
  assert doc.startswith("item_") and (qid, doc.replace("_", " ", 1)) in logged
  # No truth column: the truth metrics are the logged labels', and every output says so.
  assert not config.source.truth_column and table["truth"].isna().all()
  assert all(r["truth_source"] == "logged labels" for r in result.rows)
  assert "oracle (logged labels)" in [r["model"] for r in result.rows]
  assert "oracle (truth)" not in [r["model"] for r in result.rows]
  assert (result.run_dir / export.TREC_DIR / export.LOGGED_QRELS_FILE).exists()
  assert not (result.run_dir / export.TREC_DIR / export.QRELS_FILE).exists()
  header = (result.run_dir / "results.csv").read_text().splitlines()[0].split(",")
  assert header[-1] == "truth_source"
  # The padded evaluation's valid/ metrics equal NumPy's on scores.parquet's valid rows
  # (on the logged labels, scores.parquet's label column).
  k = config.eval.k
  for p, row in enumerate(result.rows):
    rows = table[(table["split"] == "valid") & (table["point"] == p)]
    assert row[f"valid/ndcg@{k}"] == pytest.approx(
        _ndcg_np(rows, k=k, gain=config.eval.gain, column="label"), abs=1e-5), row["model"]
    assert row[f"valid/precision@{k}"] == pytest.approx(_precision_np(
        rows, k=k, grade=config.eval.relevant_grade, column="label"), abs=1e-6), row["model"]
    test_rows = table[(table["split"] == "test") & (table["point"] == p)]
    assert row[f"precision@{k}"] == pytest.approx(_precision_np(
        test_rows, k=k, grade=config.eval.relevant_grade, column="label"), abs=1e-6), \
        row["model"]


def test_report_selection_pools_seeds_and_chooses_on_validation(tmp_path):
  """`prerank-jax report`'s selection over runs of one setup (two seeds): the validation
  mean's argmax, whose test mean is reported; the test argmax is another point."""
  from prerank_jax.host import report

  from tests.analysis.test_load import write_run

  def rows(seed):
    out = []
    for t, test, valid in ((1, 0.70, 0.50), (2, 0.60, 0.58), (4, 0.65, 0.55)):
      out.append({"model": f"student temperature={t}", "temperature": float(t),
                  "ndcg@10": test + seed / 100,
                  "valid/ndcg@10": valid - seed / 100, "status": "ok"})
    out.append({"model": "teacher", "ndcg@10": 0.9, "valid/ndcg@10": 0.9,
                "status": "reference"})
    return out

  runs = [write_run(tmp_path, f"s{seed}", rows(seed), seed=seed) for seed in (0, 1)]
  text = report.selection_report(runs)
  # test's argmax is temperature=1
  assert "**student temperature=2**" in text and "temperature=1" not in text
  assert "valid/ndcg@10 0.5750" in text and "test ndcg@10 0.6050" in text
  assert "over 2 run(s)" in text and "3 points compared" in text
  old = [write_run(tmp_path, f"old{seed}", [{k: v for k, v in r.items()
                                             if not k.startswith("valid/")} for r in rows(seed)],
                   seed=seed) for seed in (0, 1)]
  assert "nothing" in report.selection_report(old) and "prerank-jax eval" in (
      report.selection_report(old))


@pytest.mark.parametrize("config_name, dataset, truth_column, logged", [
    ("tabular", "tabular", "", True), ("tabular", "parquet", "", True),
    ("tabular", "csv", "grade", False), ("movielens", "movielens/100k", "", True),
    ("quickstart", "simulator", "", False), ("letor", "letor", "", False),
])
def test_without_a_truth_the_oracle_and_the_warning_name_the_logged_labels(
    config_name, dataset, truth_column, logged):
  from prerank_jax.config_files import repo_config
  from prerank_jax.host import tables

  config = repo_config(config_name, None)
  config.dataset = dataset
  config.source.truth_column = truth_column
  assert tables.truth_source(config) == ("logged labels" if logged else "truth")
  oracle = [r for r in tables.references(config) if r.startswith("oracle")]
  assert oracle == ["oracle (logged labels)" if logged else "oracle (truth)"]
  warning = tables.truth_warning(config)
  if logged:  # one line that says what the truth metrics and the oracle are computed on
    assert "\n" not in warning and "logged labels" in warning and "oracle" in warning
  else:
    assert warning is None


def test_qrels_and_truth_column_without_a_truth(tmp_path):
  valid = np.ones((2, 3), bool)
  labels = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]], np.float32)
  data = export.SplitScores(np.zeros((1, 2, 3), np.float32), valid=valid, label=labels,
                            exposed=valid, truth=labels, truth_source="logged labels")
  written = export.write_scores(tmp_path, ["student gt-only"], [("test", data)])
  assert written["qrels"] == f"{export.TREC_DIR}/{export.LOGGED_QRELS_FILE}"
  assert (tmp_path / written["qrels"]).read_text().splitlines()[0] == "q0 0 d0 1"
  import pyarrow.parquet as pq

  table = pq.read_table(tmp_path / export.SCORES_FILE).to_pandas()
  assert table["truth"].isna().all() and list(table["label"]) == list(labels.ravel())
