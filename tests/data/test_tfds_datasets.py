"""TFDS datasets without TensorFlow: fixture files in each real format are prepared through
their builders and read back (shapes, masks, grouping, feature subsets); a missing dataset
fails at once with instructions; the runner trains end to end on each."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from prerank_jax.batch import validate_batch
from prerank_jax.config import ConfigError, validate_config
from prerank_jax.data import registry, tfds_base
from prerank_jax.data.registry import DatasetMissingError, load_dataset
from tests.conftest import load_config


def _files(root: Path) -> dict[str, tuple[int, int]]:
  """``{path: (size, mtime_ns)}`` of every file under ``root``: equal before and after a
  load means the load wrote nothing (no wall-clock threshold needed to tell reuse)."""
  return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns)
          for f in sorted(root.rglob("*")) if f.is_file()}


def _refuse():
  raise OSError("network access in a test")


# --- fixture writers (real formats) -------------------------------------------------------


def write_letor(folder: Path, *, queries=(12, 6, 6), num_features=8, seed=0,
                names=("Fold1/train.txt", "Fold1/vali.txt", "Fold1/test.txt"),
                group_files=False) -> dict:
  """LibSVM ranking files; returns {split: [(qid, labels, dense [L, F+1])]} as written.

  Sparse (about 20% of features left out), comments, blank lines; with ``group_files`` the
  lines carry no qid: and ``<file>.query`` holds the group sizes.
  """
  rng = np.random.default_rng(seed)
  written = {}
  for split, rel, count in zip(("train", "valid", "test"), names, queries):
    if rel is None:
      continue
    path = Path(folder) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, groups, truth = ["# a comment line", ""], [], []
    for q in range(count):
      qid = f"{split[:2]}{q:03d}"  # tr/va/te: each query id in one split only
      length = int(rng.integers(8, 30))
      labels = rng.integers(0, 5, size=length)
      dense = np.zeros((length, num_features + 1), np.float32)
      for d in range(length):
        tokens = []
        for f in range(1, num_features + 1):
          if rng.random() < 0.8:
            value = round(float(rng.normal() * 10 + labels[d]), 3)
            dense[d, f] = value
            tokens.append(f"{f}:{value}")
        head = f"{labels[d]}" if group_files else f"{labels[d]} qid:{qid}"
        lines.append(f"{head} {' '.join(tokens)}  # doc {d}")
      groups.append(length)
      truth.append((qid, labels.astype(np.float32), dense))
    path.write_text("\n".join(lines) + "\n")
    if group_files:
      Path(str(path) + ".query").write_text("\n".join(map(str, groups)) + "\n")
    written[split] = truth
  return written


def write_movielens_100k(folder: Path, *, num_users=40, num_items=120, seed=0) -> None:
  """``u.data``, ``u.item``, ``u.user`` in the GroupLens ml-100k format."""
  rng = np.random.default_rng(seed)
  folder = Path(folder) / "ml-100k"
  folder.mkdir(parents=True, exist_ok=True)
  rows = []
  for u in range(1, num_users + 1):
    items = rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(20, 40)),
                       replace=False)
    for i in items:
      rows.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{int(rng.integers(8e8, 9e8))}")
  (folder / "u.data").write_text("\n".join(rows) + "\n")
  items = []
  for i in range(1, num_items + 1):
    genres = (rng.random(19) < 0.15).astype(int)
    date = "" if i == 3 else f"01-Jan-{int(rng.integers(1930, 1998))}"
    items.append(f"{i}|Movie {i} (1995)|{date}||http://x|" + "|".join(map(str, genres)))
  (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
  jobs = ("student", "engineer", "writer", "other")
  users = [f"{u}|{int(rng.integers(18, 70))}|{'MF'[u % 2]}|{jobs[u % 4]}|12345"
           for u in range(1, num_users + 1)]
  (folder / "u.user").write_text("\n".join(users) + "\n")


def write_table(path: Path, *, num_requests=40, seed=0) -> dict:
  """One row per (request, candidate): Parquet or CSV by suffix. Returns the columns."""
  import pyarrow as pa

  rng = np.random.default_rng(seed)
  cols = {k: [] for k in ("request_id", "user_f0", "user_f1", "item_f0", "item_f1",
                          "item_f2", "cross_f0", "label")}
  for r in range(num_requests):
    length = int(rng.integers(12, 30))
    u = rng.normal(size=2)
    shown = rng.choice(length, size=5, replace=False)
    for c in range(length):
      cols["request_id"].append(f"req{r}")
      cols["user_f0"].append(float(u[0]))
      cols["user_f1"].append(float(u[1]))
      for k in range(3):
        cols[f"item_f{k}"].append(None if rng.random() < 0.05 else float(rng.normal()))
      cols["cross_f0"].append(float(rng.normal()))
      cols["label"].append(float(rng.integers(0, 3)) if c in shown else None)
  table = pa.table(cols)
  path.parent.mkdir(parents=True, exist_ok=True)
  if path.suffix == ".parquet":
    import pyarrow.parquet as pq

    pq.write_table(table, path)
  else:
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, path)
  return cols


# --- configs ------------------------------------------------------------------------------

def data_config(tmp_path, name="letor", dataset=None, manual=None):
  config = load_config(name, None)
  config.source.data_dir = str(tmp_path / "tfds")
  config.source.manual_dir = str(manual or tmp_path / "raw")
  if dataset:
    config.dataset = dataset
  return config


def letor_config(tmp_path, **source):
  config = data_config(tmp_path)
  config.source.list_size = 20
  config.source.num_exposed = 5
  config.source.student_features = (1, 2, 3)
  for k, v in source.items():
    config.source[k] = v
  return config


def check_splits(splits, *, list_size):
  for name, batch in splits.items():
    validate_batch(batch, name=name, require_truth=True)
    assert batch.list_size == list_size
    assert not (batch.exposed & ~batch.valid).any()
    assert (batch.label[~batch.exposed] == 0).all()
    for field in ("items", "cross"):
      assert (getattr(batch, field)[~batch.valid] == 0).all()


# --- LETOR --------------------------------------------------------------------------------

def test_letor_fold_layout_reads_back_grouped_truncated_and_subset(tmp_path):
  written = write_letor(tmp_path / "raw")
  config = letor_config(tmp_path)
  validate_config(config)
  loaded = load_dataset(config)
  splits, builder = loaded.splits, loaded.builder
  assert loaded.identity.startswith("prerank_letor/mslr_web-10k_fold1-n20-e5-")
  check_splits(splits, list_size=20)
  # Grouping: one request per query with >= min_list_size (10) documents, in file order.
  for split in ("train", "valid", "test"):
    # Train/valid drop queries shorter than min_list_size; the test split keeps all.
    kept = [q for q in written[split] if len(q[1]) >= 10 or split == "test"]
    ids = tfds_base.request_ids(builder, split)
    assert ids == [q[0] for q in kept]
    batch = splits[split]
    np.testing.assert_array_equal(batch.valid.sum(1), [min(20, len(q[1])) for q in kept])
    for i, (_, labels, _) in enumerate(kept):
      truth = batch.true_relevance[i][batch.valid[i]]
      if len(labels) <= 20:
        np.testing.assert_array_equal(truth, labels)   # every document, in file order
      else:  # truncated to a subset of 20 (a multiset of the labels)
        assert len(truth) == 20 and np.isin(truth, labels).all()
      # Exposure: the logging ranker's top 5, labels = judged grades there.
      assert batch.exposed[i].sum() == 5
      np.testing.assert_array_equal(batch.label[i][batch.exposed[i]],
                                    batch.true_relevance[i][batch.exposed[i]])
  # Feature subsets: the student's 3 feature ids in items, the other 5 in cross.
  train = splits["train"]
  assert (train.context.shape, train.items.shape, train.cross.shape) == (
      (train.num_requests, 1), (train.num_requests, 20, 3), (train.num_requests, 20, 5))
  meta = builder.info.metadata
  assert meta["items_feature_ids"] == [1, 2, 3] and meta["cross_feature_ids"] == [4, 5, 6, 7, 8]
  # A short list, untruncated: normalised features follow the file's sparse values.
  i = next(i for i, q in enumerate(q for q in written["train"] if len(q[1]) >= 10)
           if len(q[1]) <= 20)
  dense = [q for q in written["train"] if len(q[1]) >= 10][i][2]
  x = np.sign(dense) * np.log1p(np.abs(dense))
  # Missing features are 0 before normalisation: equal raw values ⇒ equal features.
  zero = dense[:, 1] == 0
  if zero.sum() >= 2:
    col = train.items[i, :len(dense), 0][zero]
    np.testing.assert_allclose(col, col[0], rtol=1e-6)
  order = np.argsort(x[:, 2])
  assert np.all(np.diff(train.items[i, :len(dense), 1][order]) >= -1e-6)  # monotone


def test_letor_same_as_tfds_data_source_and_reused(tmp_path):
  write_letor(tmp_path / "raw")
  config = letor_config(tmp_path)
  first = load_dataset(config)
  source = first.builder.as_data_source()["test"]
  record = source[2]
  for field in ("context", "items", "cross", "label", "exposed", "valid", "true_relevance",
                "propensity"):
    np.testing.assert_array_equal(record[field], getattr(first.splits["test"], field)[2])
  # A second load reuses the prepared files, even with the raw files gone.
  for f in (tmp_path / "raw" / "Fold1").iterdir():
    f.unlink()
  prepared = _files(tmp_path / "tfds")
  assert any(".array_record" in f for f in prepared)
  again = load_dataset(config)
  assert _files(tmp_path / "tfds") == prepared  # nothing rewritten
  np.testing.assert_array_equal(again.splits["train"].items, first.splits["train"].items)


def test_letor_query_files_carved_valid_and_position_bias(tmp_path):
  """LightGBM style: no qid:, ``<file>.query`` groups, a train/test pair only."""
  written = write_letor(tmp_path / "raw", names=("rank.train", None, "rank.test"),
                        queries=(20, 0, 6), group_files=True)
  config = letor_config(tmp_path, train_file="rank.train", valid_file="", test_file="rank.test",
                        min_list_size=1, position_bias=1.0, student_features=(),
                        teacher_features=(2, 4))
  config.dataset = "letor"
  validate_config(config)
  loaded = load_dataset(config)
  splits = loaded.splits
  check_splits(splits, list_size=20)
  # 10% of the 20 train queries carved into valid (seeded), disjoint from train.
  train_ids = tfds_base.request_ids(loaded.builder, "train")
  valid_ids = tfds_base.request_ids(loaded.builder, "valid")
  assert len(valid_ids) == 2 and len(train_ids) == 18 and not set(train_ids) & set(valid_ids)
  assert tfds_base.request_ids(loaded.builder, "test") == [str(i) for i in range(6)]
  # Student: all 8 features; teacher-only: none (the teacher's 2 and 4 are the student's).
  assert splits["train"].items.shape[-1] == 8 and splits["train"].cross.shape[-1] == 0
  # Position bias: propensity (1/p) on the exposed; unexamined ones log 0.
  p = splits["train"].propensity[splits["train"].exposed]
  np.testing.assert_allclose(np.sort(np.unique(np.round(p, 4))), np.round(
      1.0 / np.arange(5, 0, -1), 4))
  assert len(written["test"]) == 6


def test_letor_bad_line_names_file_and_line(tmp_path):
  folder = tmp_path / "raw"
  write_letor(folder)
  with open(folder / "Fold1" / "train.txt", "a") as f:
    f.write("2 qid:x 1:0.5 two:3\n")
  with pytest.raises(ValueError, match=r"train.txt:\d+: not a LibSVM ranking line"):
    load_dataset(letor_config(tmp_path))


# --- missing data -------------------------------------------------------------------------

@pytest.mark.parametrize("dataset,name", [("mslr_web/30k_fold2", "letor"),
                                          ("movielens/1m", "movielens"),
                                          ("tabular", "tabular")])
def test_missing_dataset_fails_at_once_with_instructions(tmp_path, monkeypatch, dataset,
                                                         name):
  config = data_config(tmp_path, name, dataset, manual=tmp_path / "nowhere")
  validate_config(config)
  # "At once": it fails before any download is tried (offline, TFDS retries for ~200 s).
  connects = []
  monkeypatch.setattr(socket.socket, "connect",
                      lambda self, address: connects.append(address) or _refuse())
  with pytest.raises(DatasetMissingError) as info:
    load_dataset(config)
  assert connects == []
  text = str(info.value)
  assert "What to download:" in text and "Licence:" in text and "Where to put it:" in text
  assert f"python -m prerank_jax.data --config=configs/{name}.py --config.dataset={dataset}" \
      in text
  assert str(tmp_path / "nowhere") in text
  assert {"mslr_web/30k_fold2": "Fold2/train.txt", "movielens/1m": "ratings.dat",
          "tabular": "logs.parquet"}[dataset] in text
  assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.array_record*"))


def test_prepare_command_prepares(tmp_path, capsys):
  write_letor(tmp_path / "raw")
  from prerank_jax.data.__main__ import main

  root = Path(__file__).resolve().parents[2]
  code = main(["prog", f"--config={root / 'configs' / 'letor.py'}",
               f"--config.source.data_dir={tmp_path / 'tfds'}",
               f"--config.source.manual_dir={tmp_path / 'raw'}",
               "--config.source.list_size=20", "--config.source.num_exposed=5",
               "--config.source.student_features=(1,2,3)"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert re.search(r"train: \d+ requests × N=20; context 1, items 3, cross 5", captured.out)
  assert load_dataset(letor_config(tmp_path)).builder is not None
  # A config that trains from the records: the same summary, the train split left on disk.
  code = main(["prog", f"--config={root / 'configs' / 'letor.py'}",
               f"--config.source.data_dir={tmp_path / 'tfds'}",
               f"--config.source.manual_dir={tmp_path / 'raw'}",
               "--config.source.list_size=20", "--config.source.num_exposed=5",
               "--config.source.student_features=(1,2,3)", "--config.input_pipeline=grain",
               "--config.streaming.read_from=records"])
  again = capsys.readouterr()
  assert code == 0, again.err
  assert again.out.splitlines()[-3:] == captured.out.splitlines()[-3:]


def test_source_fields_are_validated(tmp_path):
  config = letor_config(tmp_path)
  config.source.num_exposed = 50
  with pytest.raises(ConfigError, match=r"source.num_exposed: must be an int in \[1, 20\]"):
    validate_config(config)
  config = letor_config(tmp_path)
  config.source.normalize = "minmax"
  with pytest.raises(ConfigError, match="source.normalize"):
    validate_config(config)
  config = data_config(tmp_path, "tabular")
  config.source.item_columns = ()
  with pytest.raises(ConfigError, match="source.item_columns"):
    validate_config(config)
  config = data_config(tmp_path, "letor")
  config.input_pipeline = "tf.data"
  with pytest.raises(ConfigError, match="input_pipeline"):
    validate_config(config)


# --- the simulator as a dataset -----------------------------------------------------------

def test_simulator_builder_equals_simulate_and_is_reused(tmp_path, tiny_splits):
  from prerank_jax.data import simulator_tfds

  splits, builder = simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0,
                                        data_dir=str(tmp_path))
  assert builder.info.full_name == "prerank_simulator/tiny/1.2.0"
  assert [c.name for c in builder.BUILDER_CONFIGS] == ["tiny", "small", "default", "large",
                                                       "xlarge"]
  for name, batch in tiny_splits.items():
    for field, value in batch._asdict().items():
      if value is None:
        assert getattr(splits[name], field) is None
      else:
        np.testing.assert_array_equal(getattr(splits[name], field), value, err_msg=field)
  assert simulator_tfds.config_name(simulator_tfds.PRESETS["tiny"], 3) == "tiny-seed3"
  prepared = _files(tmp_path)
  assert any(".array_record" in f for f in prepared)
  simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0, data_dir=str(tmp_path))
  assert _files(tmp_path) == prepared  # reused: nothing rewritten


# --- MovieLens ----------------------------------------------------------------------------

def test_movielens_100k_requests_are_users(tmp_path):
  write_movielens_100k(tmp_path / "raw")
  config = data_config(tmp_path, "movielens")
  config.source.list_size = 30
  config.source.num_negatives = 10
  validate_config(config)
  loaded = load_dataset(config)
  splits = loaded.splits
  check_splits(splits, list_size=30)
  assert loaded.identity.startswith("prerank_movielens/100k-n30-")
  ids = {s: tfds_base.request_ids(loaded.builder, s) for s in splits}
  assert sum(len(v) for v in ids.values()) == 40          # every user, once
  assert len(set().union(*map(set, ids.values()))) == 40
  train = splits["train"]
  assert train.context.shape[-1] == 23                     # age, gender, 21 occupations
  assert train.items.shape[-1] == 20 and train.cross.shape[-1] == 21  # 19 genres + year
  assert train.propensity is None
  # Exposed = rated: labels are ratings 1..5; at least num_negatives unrated per list.
  assert set(np.unique(train.label[train.exposed])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
  assert (train.label[~train.exposed] == 0).all()
  assert ((~train.exposed & train.valid).sum(1) >= 10).all()
  assert (train.valid.sum(1) == 30).all()
  np.testing.assert_array_equal(train.true_relevance, train.label)
  np.testing.assert_array_equal(train.items[..., :19].max(), 1.0)


# --- bring your own (Parquet and CSV) -------------------------------------------------------

@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_tabular_table_grouped_with_truncation_rule(tmp_path, suffix):
  cols = write_table(tmp_path / "raw" / f"logs{suffix}")
  config = data_config(tmp_path, "tabular", "parquet" if suffix == ".parquet" else "csv")
  config.source.train_file = f"logs{suffix}"
  config.source.list_size = 16
  validate_config(config)
  loaded = load_dataset(config)
  splits = loaded.splits
  check_splits(splits, list_size=16)
  ids = {s: tfds_base.request_ids(loaded.builder, s) for s in splits}
  assert sorted(sum(ids.values(), [])) == sorted({r for r in cols["request_id"]})
  assert len(ids["valid"]) == 4 and len(ids["test"]) == 4
  request = np.asarray(cols["request_id"])
  label = np.asarray([np.nan if v is None else v for v in cols["label"]])
  for split, batch in splits.items():
    for i, rid in enumerate(ids[split]):
      rows = np.flatnonzero(request == rid)
      # Exposed rows are all kept (5 <= N); the list is truncated to N = 16.
      assert batch.exposed[i].sum() == 5
      assert batch.valid[i].sum() == min(16, len(rows))
      np.testing.assert_allclose(np.sort(batch.label[i][batch.exposed[i]]),
                                 np.sort(label[rows][~np.isnan(label[rows])]))
      np.testing.assert_allclose(batch.context[i], [cols["user_f0"][rows[0]],
                                                    cols["user_f1"][rows[0]]], rtol=1e-6)
  train = splits["train"]
  assert train.items.shape[-1] == 3 and train.cross.shape[-1] == 1
  assert np.isfinite(train.items).all()                   # nulls became 0


def test_tabular_context_must_be_constant(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  path = tmp_path / "raw" / "logs.parquet"
  path.parent.mkdir(parents=True)
  n = 36
  pq.write_table(pa.table({"request_id": ["a"] * 12 + ["b"] * 12 + ["c"] * 12,
                           "split": ["train"] * 12 + ["valid"] * 12 + ["test"] * 12,
                           "user_f0": [float(i) for i in range(12)] + [0.0] * 24,
                           "user_f1": [0.0] * n, "item_f0": [1.0] * n, "item_f1": [1.0] * n,
                           "item_f2": [1.0] * n, "cross_f0": [1.0] * n,
                           "label": [1.0] * n}), path)
  config = data_config(tmp_path, "tabular")
  config.source.split_column = "split"
  with pytest.raises(ValueError, match="varies within request"):
    load_dataset(config)


# --- end to end: the runner on each dataset -------------------------------------------------

def _smoke(config, tmp_path, dataset, source):
  smoke = load_config()
  smoke.workdir = str(tmp_path / "runs")
  smoke.progress = False
  smoke.wandb.mode = "disabled"
  smoke.dataset = dataset
  for k, v in config.source.items():
    smoke.source[k] = v
  for k, v in source.items():
    smoke.source[k] = v
  smoke.eval.k = 5
  smoke.teacher.num_epochs = 1
  smoke.student.num_epochs = 2
  smoke.sweep.temperature = (1.0,)
  smoke.sweep.alpha = (0.5,)
  for role in ("teacher", "student"):
    smoke[role].batch_size = 4
    smoke[role].loss.gt = "softmax"
  return smoke


@pytest.mark.slow
def test_runner_end_to_end_on_letor_movielens_and_parquet(tmp_path):
  from prerank_jax.host.runner import run

  write_letor(tmp_path / "raw")
  write_movielens_100k(tmp_path / "raw")
  write_table(tmp_path / "raw" / "logs.parquet")
  base = data_config(tmp_path)
  runs = {
      "mslr_web/10k_fold1": dict(list_size=20, num_exposed=5, student_features=(1, 2, 3)),
      "movielens/100k": dict(list_size=30, num_negatives=10),
      "parquet": dict(train_file="logs.parquet", list_size=16, min_list_size=5,
                      context_columns=("user_f0", "user_f1"),
                      item_columns=("item_f0", "item_f1", "item_f2"),
                      cross_columns=("cross_f0",)),
  }
  for j, (dataset, source) in enumerate(runs.items()):
    config = _smoke(base, tmp_path, dataset, source)
    config.name = f"e2e{j}"
    if dataset == "parquet":
      config.input_pipeline = "grain"   # streaming through the same runner
    result = run(config)
    students = [r for r in result.rows if r["model"].startswith("student")]
    assert len(students) == 2 and all(r["status"] == "ok" for r in students)
    assert all(np.isfinite(r["ndcg@5"]) and np.isfinite(r["R@(5,25%)"]) for r in students)
    assert (result.run_dir / "results.csv").exists()
    if config.input_pipeline == "grain":  # the iterator position is in the checkpoint
      meta = json.loads((result.run_dir / "checkpoints" / "student" / "2" / "meta" /
                         "metadata").read_text())
      steps = meta["input"]["step"]   # 2 epochs of the train split's steps
      calls = 2 * -(-(steps // 2) // config.streaming.steps_per_call)
      assert steps > 0 and steps % 2 == 0 and meta["input"]["grain"]["next_index"] == calls
    # Teacher scores of a dataset on disk go through the cache next to it: computed by the
    # first run, read back by a second run that reuses its teacher.
    assert result.history["teacher_scores"] == dict.fromkeys(("train", "valid", "test"),
                                                              "computed")
    if dataset == "mslr_web/10k_fold1":
      again = config.copy_and_resolve_references()
      again.name = "e2e_cached"
      again.teacher.restore_from = str(result.run_dir)
      cached = run(again)
      assert cached.history["teacher_scores"] == dict.fromkeys(("train", "valid", "test"),
                                                                "cache")
      assert [r["ndcg@5"] for r in cached.rows] == [r["ndcg@5"] for r in result.rows]


def test_parquet_and_csv_are_aliases_of_tabular(tmp_path):
  # One loader: the same spec, builder and prepared dataset under every name.
  assert registry.ALIASES == {"parquet": "tabular", "csv": "tabular"}
  for alias in registry.ALIASES:
    assert registry.DATASETS[alias] is registry.DATASETS["tabular"]
  write_table(tmp_path / "raw" / "logs.parquet")
  loaded = {}
  for name in ("tabular", "parquet", "csv"):
    config = data_config(tmp_path, "tabular", name)
    config.source.list_size = 16
    validate_config(config)
    loaded[name] = load_dataset(config)
  first = loaded["tabular"]
  for name in ("parquet", "csv"):
    assert loaded[name].identity == first.identity
    for split, batch in first.splits.items():
      np.testing.assert_array_equal(loaded[name].splits[split].items, batch.items)
      np.testing.assert_array_equal(loaded[name].splits[split].label, batch.label)
