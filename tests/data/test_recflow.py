"""RecFlow's layout (experiments/recflow_world.py), its loader (dataset="recflow") and both
protocols end to end through the CLI (configs/recflow.py)."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.feather as feather
import pytest

from prerank_jax.batch import validate_batch
from prerank_jax.config_files import repo_config
from prerank_jax.data import recflow
from prerank_jax.data.registry import DATASETS, load_dataset
from prerank_jax.data.tfds_base import DatasetMissingError
from prerank_jax.data.validation import validate_data_config

ROOT = Path(__file__).resolve().parents[2]

# RecFlow's README, "Descriptions of the feature fields in RecFlow": (field, type). Every
# type is "Integer", written as int64. Kept here independently of the loader's constant.
README_TABLE = [
    ("request_id", "Integer"), ("request_timestamp", "Integer"), ("user_id", "Integer"),
    ("device_id", "Integer"), ("age", "Integer"), ("gender", "Integer"),
    ("province", "Integer"), ("video_id", "Integer"), ("author_id", "Integer"),
    ("category_level_one", "Integer"), ("category_level_two", "Integer"),
    ("upload_type", "Integer"), ("upload_timestamp", "Integer"), ("duration", "Integer"),
    ("realshow", "Integer"), ("rerank_pos", "Integer"), ("rerank_neg", "Integer"),
    ("rank_pos", "Integer"), ("rank_neg", "Integer"), ("coarse_neg", "Integer"),
    ("prerank_neg", "Integer"), ("rank_index", "Integer"), ("rerank_index", "Integer"),
    ("playing_time", "Integer"), ("effective_view", "Integer"), ("long_view", "Integer"),
    ("like", "Integer"), ("follow", "Integer"), ("forward", "Integer"), ("comment", "Integer"),
]
DAYS = [f"2024-01-{d}" for d in range(13, 19)]


def _world_module():
  spec = importlib.util.spec_from_file_location("recflow_world",
                                                ROOT / "experiments" / "recflow_world.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
  out = tmp_path_factory.mktemp("recflow_world")
  _world_module().write_world(out, smoke=True, seed=0, requests=60)
  return out


def config_for(world: Path, tmp: Path, arg: str):
  config = repo_config("recflow", arg)
  config.source.manual_dir = str(world)
  config.source.data_dir = str(tmp / "tfds")
  return config


# ------------------------------------------------------------------------------ the layout

def test_every_file_has_readme_columns_and_dtypes(world):
  expected = [(name, "int64") for name, kind in README_TABLE if kind == "Integer"]
  assert len(expected) == len(README_TABLE) == 30
  files = [world / folder / f"{day}.feather" for folder in ("all_stage", "realshow")
           for day in DAYS]
  files += [world / "others" / "coarse_rank_test.feather",
            world / "others" / "prerank_test.feather"]
  for path in files:
    schema = feather.read_table(path).schema
    assert [(f.name, str(f.type)) for f in schema] == expected, path


def test_pickles_follow_recflows_code(world):
  seqs = pickle.loads((world / "seq_effective_50_dict" / f"{DAYS[0]}.pkl").read_bytes())
  dicts = pickle.loads((world / "request_id_dict" / f"{DAYS[0]}.pkl").read_bytes())
  day = feather.read_table(world / "all_stage" / f"{DAYS[0]}.feather").to_pandas()
  assert set(seqs) == set(dicts) == set(day["request_id"])
  for rid in list(seqs)[:10]:
    seq = seqs[rid]
    assert seq.shape == (50, 10) and seq.dtype == np.int64
    real = seq[:, 7] > 0                      # left-padded: real rows at the end
    assert not real[: 50 - real.sum()].any()
    rows = day[day["request_id"] == rid]
    assert set(dicts[rid]) == set(recflow.STAGES)
    for stage, videos in dicts[rid].items():
      assert videos.ndim == 2 and videos.shape[1] == 8 and videos.dtype == np.int64
      assert sorted(videos[:, 0]) == sorted(rows.loc[rows[stage] == 1, "video_id"])
  id_cnt = pickle.loads((world / "others" / "id_cnt.pkl").read_bytes())
  assert set(id_cnt) == set(recflow.ID_CNT_FIELDS)


def test_stage_flags_come_from_one_cascade(world):
  day = feather.read_table(world / "all_stage" / f"{DAYS[1]}.feather").to_pandas()
  per = day.groupby("request_id")
  assert (per["rank_pos"].sum() == 10).all()
  assert (per["realshow"].sum() == 6).all()
  # Each candidate is dropped at most once, and exposed ones passed every earlier stage.
  dropped = day["prerank_neg"] + day["coarse_neg"] + day["rank_pos"] + day["rank_neg"]
  assert (dropped == 1).all()
  shown = day[day["realshow"] == 1]
  assert (shown["rerank_pos"] == 1).all() and (shown["rank_index"] >= 0).all()
  assert (day.loc[day["realshow"] == 0, ["effective_view", "playing_time"]] == 0).all().all()
  truth = feather.read_table(world / "hidden_truth" / f"{DAYS[1]}.feather").to_pandas()
  merged = day.merge(truth, on=["request_id", "video_id"])
  assert len(merged) == len(day)
  # The later the stage, the higher its candidates' true logits (on average).
  grade = merged["rank_pos"] * 3 + merged["rank_neg"] * 2 + merged["coarse_neg"]
  means = merged.groupby(grade)["true_logit"].mean()
  assert means.is_monotonic_increasing


# ------------------------------------------------------------------------------ the loader

def test_coarse_protocol_reads_the_layout(world, tmp_path):
  config = config_for(world, tmp_path, "coarse,smoke")
  validate_data_config(config)
  loaded = load_dataset(config)
  train, test = loaded.splits["train"], loaded.splits["test"]
  vocab = recflow.prepared_vocab(loaded.builder)
  for name, batch in loaded.splits.items():
    validate_batch(batch, name=name, vocab=vocab)
  assert train.list_size == test.list_size == 60
  # 5 train days of 60 requests; valid is a seeded ~10% of them.
  assert train.num_requests + loaded.splits["valid"].num_requests == 5 * 60
  assert 0 < loaded.splits["valid"].num_requests < 60
  # Train lists keep every exposed row; labels only where exposed; stage grades 1..6.
  assert (train.exposed.sum(-1) == 6).all()
  assert set(np.unique(train.true_relevance[train.valid])) <= {1, 2, 3, 4, 5, 6}
  clicks = train.true_relevance == 6
  np.testing.assert_array_equal(clicks, train.exposed & (train.label > 0))
  # The test split is the coarse test file grouped by request, in file order.
  raw = feather.read_table(world / "others" / "coarse_rank_test.feather").to_pandas()
  first = raw[raw["request_id"] == raw["request_id"].iloc[0]]
  n = len(first)
  assert test.valid[0].sum() == n
  np.testing.assert_array_equal(test.label[0, :n], first["effective_view"] * first["realshow"])
  np.testing.assert_array_equal(test.item_ids[0, :n, 0], first["video_id"] + 1)
  assert test.num_requests == raw["request_id"].nunique()
  # The lists are keyed by RecFlow's own request_id and video_id.
  assert loaded.ids["test"].request[0] == str(first["request_id"].iloc[0])
  np.testing.assert_array_equal(loaded.ids["test"].candidate[0, :n],
                                first["video_id"].astype(str))
  assert (loaded.ids["test"].candidate[0, n:] == "").all()
  # Behaviour sequences: ids +1 where real, mask from column 7.
  seqs = pickle.loads((world / "seq_effective_50_dict" / f"{DAYS[-1]}.pkl").read_bytes())
  seq = seqs[int(raw["request_id"].iloc[0])]
  np.testing.assert_array_equal(test.sequence_mask[0], seq[:, 7] > 0)
  np.testing.assert_array_equal(test.sequence_ids[0][seq[:, 7] > 0, 0],
                                seq[seq[:, 7] > 0, 0] + 1)


def test_lcron_protocol_draws_ten_per_stage(world, tmp_path):
  loaded = load_dataset(config_for(world, tmp_path, "lcron,smoke"))
  test = loaded.splits["test"]
  assert test.list_size == 40 and test.valid.all()
  # Slots 0-9 are the rank_pos items (label 1, graded 30 - rank_index), then rank_neg,
  # coarse_neg and prerank_neg with LCRON's 7, 6, 5.
  np.testing.assert_array_equal(test.label[:, :10], 1.0)
  np.testing.assert_array_equal(test.label[:, 10:], 0.0)
  graded = test.true_relevance
  assert ((graded[:, :10] >= 21) & (graded[:, :10] <= 30)).all()
  np.testing.assert_array_equal(graded[:, 10:20], 7.0)
  np.testing.assert_array_equal(graded[:, 20:30], 6.0)
  np.testing.assert_array_equal(graded[:, 30:], 5.0)
  # Against the raw files: the first request's rank_pos videos and their rank_index.
  day = feather.read_table(world / "all_stage" / f"{DAYS[-1]}.feather").to_pandas()
  dicts = pickle.loads((world / "request_id_dict" / f"{DAYS[-1]}.pkl").read_bytes())
  rid = int(day["request_id"].iloc[0])
  videos = dicts[rid]["rank_pos"][:10, 0]
  np.testing.assert_array_equal(test.item_ids[0, :10, 0], videos + 1)
  index = day[(day["request_id"] == rid) & (day["rank_pos"] == 1)].set_index("video_id")
  np.testing.assert_array_equal(graded[0, :10], 30 - index.loc[videos, "rank_index"])


def test_missing_files_are_refused_at_once_with_instructions(tmp_path):
  config = config_for(tmp_path / "nowhere", tmp_path, "coarse")
  with pytest.raises(DatasetMissingError) as info:
    load_dataset(config)
  text = str(info.value)
  for needed in ("CC BY-SA 4.0", "CC BY-NC-SA 4.0", "USTC Drive", "RecFlow-ICLR/RecFlow",
                 "others/id_cnt.pkl", "all_stage/2024-01-13.feather",
                 "python -m prerank_jax.data --config=configs/recflow.py",
                 "--config.source.manual_dir="):
    assert needed in text, needed
  assert not (tmp_path / "tfds").exists()  # nothing written


def test_a_missing_column_is_named(world, tmp_path):
  broken = tmp_path / "broken"
  for folder in recflow.FOLDERS:
    (broken / folder).mkdir(parents=True)
  for path in world.rglob("*"):
    if path.is_file() and "hidden_truth" not in path.parts:
      target = broken / path.relative_to(world)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(path.read_bytes())
  path = broken / "all_stage" / f"{DAYS[0]}.feather"
  table = feather.read_table(path).drop(["rank_pos"])
  feather.write_feather(table, path)
  with pytest.raises(ValueError, match=r"2024-01-13.feather: missing column\(s\) \['rank_pos'\]"):
    load_dataset(config_for(broken, tmp_path, "lcron,smoke"))
  assert not (tmp_path / "tfds").exists()  # refused before anything was written
  # A test request longer than list_size is refused too (not cut), before writing.
  config = config_for(world, tmp_path, "coarse,smoke")
  config.source.list_size = 30
  with pytest.raises(ValueError, match=r"coarse_rank_test.feather: request \d+ has 60 "
                     r"candidates, more than source.list_size=30"):
    load_dataset(config)
  assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("field, value, match", [
    ("recflow_protocol", "ltr", "source.recflow_protocol"),
    ("recflow_test_day", "2024-01-15", "source.recflow_test_day: must not overlap"),
    ("recflow_train_days", "2024-02-03:2024-01-13", "source.recflow_train_days"),
    ("recflow_label", "click", "source.recflow_label"),
])
def test_bad_source_fields_name_the_field(tmp_path, field, value, match):
  config = config_for(tmp_path, tmp_path, "coarse,smoke")
  config.source[field] = value
  with pytest.raises(ValueError, match=match):
    validate_data_config(config)


def test_config_source_is_the_dataset_spec_source():
  config = repo_config("recflow", "coarse")
  assert config.source.to_dict() == dict(DATASETS["recflow"].source)
  with pytest.raises(ValueError, match="pick one protocol"):
    repo_config("recflow", "coarse,lcron")


# ------------------------------------------------------------------------- end to end

def recflow_formula(scores: pd.DataFrame) -> float:
  """RecFlow's evaluate_recall@50 from scores.parquet rows of one model (label = target)."""
  hits = targets = 0.0
  for _, rows in scores.groupby("request_id", observed=True):
    label = rows["label"].to_numpy() > 0
    if 0 < label.sum() < len(label):
      rank = np.argsort(np.argsort(-rows["score"].to_numpy(), kind="stable"), kind="stable")
      hits += np.sum(rank[label] < 50)
      targets += label.sum()
  return hits / targets


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["coarse", "lcron"])
def test_sweep_end_to_end_carries_both_protocols_columns(world, tmp_path, protocol):
  from prerank_jax import cli

  workdir = tmp_path / "runs"
  code = cli.main(["prerank-jax", "sweep", f"--config=configs/recflow.py:{protocol},smoke",
                   f"--config.source.manual_dir={world}",
                   f"--config.source.data_dir={tmp_path / 'tfds'}",
                   f"--config.workdir={workdir}", "--config.wandb.mode=disabled",
                   "--config.progress=False", "--config.sweep.temperature=(2.0,)",
                   "--config.sweep.alpha=(0.9,)"])
  assert code in (0, None)
  run = workdir / f"recflow_{protocol}"
  results = pd.read_csv(run / "results.csv").set_index("model")
  for column in ("recflow_recall@50", "recflow_recall@100", "recflow_recall@200",
                 "recflow_ndcg@50", "recflow_ndcg@100", "recflow_ndcg@200",
                 "joint_recall@10@20"):
    assert column in results.columns and results[column].notna().all(), column
  # Learning happens: the teacher and the distilled student beat random on the protocol's
  # headline metric.
  headline = "recflow_ndcg@50" if protocol == "coarse" else "joint_recall@10@20"
  student = [m for m in results.index if m.startswith("student temperature=")][0]
  assert results.loc["teacher", headline] > results.loc["random", headline]
  assert results.loc[student, headline] > results.loc["random", headline]
  # The printed RecFlow recall equals RecFlow's formula on scores.parquet.
  scores = pd.read_parquet(run / "scores.parquet")
  scores = scores[scores["split"] == "test"]
  for model in ("teacher", student):
    expected = recflow_formula(scores[scores["model"] == model])
    assert results.loc[model, "recflow_recall@50"] == pytest.approx(expected, abs=1e-6)
  if protocol == "coarse":  # the label column is the test file's effective_view
    raw = feather.read_table(world / "others" / "coarse_rank_test.feather").to_pandas()
    raw = raw.astype({"request_id": str, "video_id": str})
    rows = scores[scores["model"] == "teacher"].astype({"request_id": str, "video_id": str})
    merged = rows.merge(raw, on=["request_id", "video_id"], how="left")
    assert len(merged) == len(rows) == len(raw)
    np.testing.assert_array_equal(merged["label"], merged["effective_view"] * merged["realshow"])


def test_ids_flag_takes_recflows_models_and_the_data_vocabularies(world):
  config = repo_config("recflow", "lcron,ids,smoke")
  assert (config.student.model.name, config.teacher.model.name) == ("dssm", "din")
  id_cnt = pickle.loads((world / "others" / "id_cnt.pkl").read_bytes())
  flags = dict(f.removeprefix("--config.").split("=") for f in recflow.vocab_flags(world))
  for role in ("student", "teacher"):
    assert flags[f"{role}.model.context_vocab"] == "(" + ",".join(
        str(id_cnt[f] + 2) for f in recflow.CONTEXT_ID_FIELDS) + ")"
    assert flags[f"{role}.model.item_vocab"] == "(" + ",".join(
        str(id_cnt[f] + 2) for f in recflow.ITEM_ID_FIELDS) + ")"


def test_coarse_test_file_with_recflows_fourteen_columns(world, tmp_path):
  # RecFlow's Prerank_Test_Dataset reads these 14 columns only: no stage flags, no duration.
  fourteen = ["request_id", "user_id", "request_timestamp", "device_id", "age", "gender",
              "province", "video_id", "author_id", "category_level_two", "upload_type",
              "upload_timestamp", "category_level_one", "effective_view"]
  copy = tmp_path / "recflow"
  for path in world.rglob("*"):
    if path.is_file() and "hidden_truth" not in path.parts:
      target = copy / path.relative_to(world)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(path.read_bytes())
  test_file = copy / "others" / "prerank_test.feather"
  feather.write_feather(feather.read_table(test_file).select(fourteen), test_file)
  config = config_for(copy, tmp_path, "coarse,smoke")
  config.source.recflow_test_file = "prerank_test.feather"
  test = load_dataset(config).splits["test"]
  raw = feather.read_table(test_file).to_pandas()
  assert test.num_requests == raw["request_id"].nunique()
  # Without realshow every candidate counts as observed; the graded truth is the label.
  np.testing.assert_array_equal(test.exposed, test.valid)
  np.testing.assert_array_equal(test.true_relevance, test.label)
  assert test.label.sum() == raw["effective_view"].sum()


def test_recflows_470_candidate_lists(tmp_path):
  # RecFlow's coarse protocol pads every test request to 470 (its run scripts).
  _world_module().write_world(tmp_path / "w", seed=1, days=2, requests=8, retrieved=470)
  config = config_for(tmp_path / "w", tmp_path, "coarse")
  config.source.recflow_train_days, config.source.recflow_test_day = "2024-01-13", "2024-01-14"
  config.source.valid_fraction = 0.4
  test = load_dataset(config).splits["test"]
  assert test.list_size == 470 and test.valid.all()
  assert test.num_requests == 8

  # A split left without requests is named (here: no valid request out of 8).
  config.source.valid_fraction = 1e-6
  with pytest.raises(ValueError, match=r"split\(s\) \['valid'\] would have no request"):
    load_dataset(config)


def test_preparation_spools_records_to_disk_in_order(world, tmp_path, monkeypatch):
  """Preparation memory: TFDS's Shuffler (a split in memory up to 1 GB, then TensorFlow's
  gfile) is replaced by OrderedSpool while the splits are written; every record passes
  through the spool file and comes back in generation order, and the Shuffler is restored."""
  from tensorflow_datasets.core import shuffle

  original = shuffle.Shuffler
  spooled = []

  class Counting(recflow.OrderedSpool):
    def add(self, key, data):
      spooled.append(int(key))
      super().add(key, data)

  monkeypatch.setattr(recflow, "OrderedSpool", Counting)
  config = config_for(world, tmp_path, "lcron,smoke")
  loaded = load_dataset(config)
  assert shuffle.Shuffler is original
  params = recflow.params_of(config)
  total = 0
  for split in recflow.SPLITS:
    want = [r["request_id"] for r in recflow.split_records(world, params, split)]
    assert list(loaded.ids[split].request) == want, split
    total += len(want)
  assert len(spooled) == total and not list(tmp_path.rglob("recflow-spool-*"))


def test_ordered_spool_keeps_order_and_refuses_a_key_out_of_order(tmp_path):
  spool = recflow.OrderedSpool(tmp_path, "salt", disable_shuffling=True)
  records = [(0, b"a"), (1, b""), (5, b"\x00" * 70_000), (6, b"last")]
  for key, data in records:
    spool.add(key, data)
  assert (spool.num_examples, spool.size, spool.bucket_lengths) == (4, 70_005, [4])
  assert list(spool) == records
  assert not list(tmp_path.iterdir())  # the file is removed once read
  with pytest.raises(ValueError, match="keys must increase"):
    spool.add(6, b"again")
  with pytest.raises(ValueError, match="shuffling must be off"):
    recflow.OrderedSpool(tmp_path, "salt", disable_shuffling=False)
