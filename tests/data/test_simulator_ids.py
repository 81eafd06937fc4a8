"""The simulator's ID world (issue 21): off by default and then drawing nothing; on, IDs
that agree with the hidden world, Zipf popularity, behaviour from the user's interests."""

import math

import numpy as np
import pytest

from prerank_jax.batch import BatchError, IdVocab, validate_batch
from prerank_jax.data import simulator
from prerank_jax.data.simulator import (PRESETS, SimulatorConfigError, id_vocab, simulate,
                                        validate_simulator_params)

IDS = dict(PRESETS["tiny"], ids=True, num_authors=30, num_categories=8, sequence_length=10,
           num_requests=200)


@pytest.fixture(scope="module")
def id_splits():
  return simulate(IDS, seed=0)


def test_ids_off_draws_nothing_extra():
  plain = simulate(PRESETS["tiny"], seed=5)
  off = simulate(dict(PRESETS["tiny"], ids=False, num_authors=7), seed=5)
  for split in plain:
    for field, x in plain[split]._asdict().items():
      y = getattr(off[split], field)
      assert (x is None) == (y is None), field
      if x is not None:
        np.testing.assert_array_equal(x, y)
    assert plain[split].item_ids is None and plain[split].sequence_ids is None


def test_id_world_is_deterministic_and_valid(id_splits):
  again = simulate(IDS, seed=0)
  vocab = id_vocab(IDS)
  assert vocab == IdVocab(context=(51,), items=(301, 31, 9))
  for split, batch in id_splits.items():
    validate_batch(batch, name=split, vocab=vocab)
    for field in ("context_ids", "item_ids", "sequence_ids", "sequence_mask"):
      np.testing.assert_array_equal(getattr(batch, field), getattr(again[split], field))
    assert batch.item_ids.dtype == np.int32 and batch.sequence_mask.dtype == np.bool_
    # Padding candidates and padding behaviour slots hold the reserved row 0; real ones not.
    assert not batch.item_ids[~batch.valid].any()
    assert (batch.item_ids[batch.valid] > 0).all()
    assert (batch.sequence_ids[batch.sequence_mask] > 0).all()
    # Valid behaviour slots are a prefix, at least one per user.
    lengths = batch.sequence_mask.sum(-1)
    assert (lengths >= 1).all()
    np.testing.assert_array_equal(batch.sequence_mask,
                                  np.arange(IDS["sequence_length"]) < lengths[:, None])


def test_author_and_category_are_functions_of_the_item(id_splits):
  rows = np.concatenate([b.item_ids[b.valid] for b in id_splits.values()]
                        + [b.sequence_ids[b.sequence_mask] for b in id_splits.values()])
  for column in (1, 2):
    pairs = np.unique(rows[:, [0, column]], axis=0)
    assert len(pairs) == len(np.unique(pairs[:, 0])), column  # one author/category per item
  # A user's behaviour sequence is the same in every request of that user.
  b = id_splits["train"]
  for user in np.unique(b.context_ids[:, 0])[:10]:
    seqs = b.sequence_ids[b.context_ids[:, 0] == user]
    assert (seqs == seqs[:1]).all()


def test_popularity_is_skewed():
  rng = np.random.default_rng(0)
  cdf = simulator.zipf_cdf(rng, 1000, 1.0)
  draws = simulator._zipf_draw(rng, cdf, 200_000)
  counts = np.sort(np.bincount(draws, minlength=1000))[::-1]
  # Closed form: the top 1% of a Zipf(1) law over 1000 things holds H_10 / H_1000.
  harmonic = lambda n: sum(1.0 / k for k in range(1, n + 1))
  assert counts[:10].sum() / counts.sum() == pytest.approx(harmonic(10) / harmonic(1000),
                                                           abs=0.01)
  flat = simulator._zipf_draw(rng, simulator.zipf_cdf(rng, 1000, 0.0), 200_000)
  assert np.bincount(flat, minlength=1000)[:10].sum() / 200_000 == pytest.approx(0.01,
                                                                                 abs=0.003)


def test_items_of_a_category_are_alike_and_behaviour_follows_interests():
  p = validate_simulator_params(IDS)
  world = simulator._make_world(np.random.default_rng(1), p)
  v, d = world["items"], p["latent_dim"]
  assert abs(float(v.var()) - 1.0) < 0.15  # the mixture keeps unit variance
  same = world["category"][:, None] == world["category"][None, :]
  cos = (v @ v.T) / np.outer(np.linalg.norm(v, axis=1), np.linalg.norm(v, axis=1))
  off = ~np.eye(len(v), dtype=bool)
  assert cos[same & off].mean() > cos[~same].mean() + 0.2
  # Behaviour items score higher for their user than random items do.
  seq = world["sequence"]
  users = np.repeat(np.arange(p["num_users"]), p["sequence_length"]).reshape(seq.shape[:2])
  kept = seq[..., 0] > 0
  s_seq = np.einsum("kd,kd->k", world["users"][users[kept]], v[seq[..., 0][kept] - 1])
  rand = np.random.default_rng(2).integers(p["num_items"], size=kept.sum())
  s_rand = np.einsum("kd,kd->k", world["users"][users[kept]], v[rand])
  assert (s_seq.mean() - s_rand.mean()) / math.sqrt(d) > 0.5


@pytest.mark.parametrize("knob,value,message", [
    ("ids", "yes", "data.ids: must be True or False"),
    ("num_authors", 0, "data.num_authors: must be an int in [1, inf)"),
    ("sequence_length", 2.5, "data.sequence_length: must be an int"),
    ("zipf_exponent", -1.0, "data.zipf_exponent: must be a finite number in [0.0, inf)"),
])
def test_bad_id_knobs_name_the_field(knob, value, message):
  with pytest.raises(SimulatorConfigError, match=message.replace("[", r"\[").replace(
      "(", r"\(").replace(")", r"\)")):
    validate_simulator_params({**IDS, knob: value})


def test_id_vocab_refuses_a_float_world():
  with pytest.raises(SimulatorConfigError, match="data.ids"):
    id_vocab(PRESETS["tiny"])


def test_validate_batch_catches_out_of_vocabulary_ids(id_splits):
  b = id_splits["valid"]
  small = IdVocab(context=(51,), items=(301, 31, 5))
  with pytest.raises(BatchError, match=r"valid.item_ids\[..., 2\]: IDs must lie in \[0, 4\]"):
    validate_batch(b, name="valid", vocab=small)


def test_id_fields_round_trip_through_arrayrecord_and_streaming(tmp_path):
  """simulator_tfds writes the ID fields; read back (whole split and by the streaming
  pipeline's record reader) they equal the in-memory simulator's."""
  from prerank_jax.data import simulator_tfds, tfds_base
  from prerank_jax.data.streaming import BatchSource, RecordSource

  splits, builder = simulator_tfds.load(IDS, seed=0, data_dir=str(tmp_path))
  memory = simulate(IDS, seed=0)
  for split in ("train", "test"):
    for field in ("context_ids", "item_ids", "sequence_ids", "sequence_mask", "items"):
      np.testing.assert_array_equal(getattr(splits[split], field),
                                    getattr(memory[split], field))
  reader = tfds_base.RecordReader(tfds_base.split_files(builder, "train"),
                                  tfds_base.builder_shapes(builder))
  idx = np.array([[3, 0], [5, 3]])
  from_records = RecordSource(reader).gather(idx)
  from_memory = BatchSource(memory["train"]).gather(idx)
  for field in ("context_ids", "item_ids", "sequence_ids", "sequence_mask"):
    assert from_records[field].dtype == from_memory[field].dtype
    np.testing.assert_array_equal(from_records[field], from_memory[field])


def test_tabular_id_columns_are_hashed_into_the_batch(tmp_path):
  """source.context_id_columns / item_id_columns / sequence_column (a Parquet list column):
  the loader writes hash_ids of the values; the behaviour is the request's list, padded."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  from prerank_jax.batch import hash_ids
  from prerank_jax.config import validate_config
  from prerank_jax.config_files import repo_config
  from prerank_jax.data.registry import load_dataset

  rows = 12
  users = {"a": "u1", "b": "u2", "c": "u1"}
  behaviour = {"a": ["i9", "i3"], "b": [], "c": ["i1", "i2", "i3", "i4"]}
  request = [r for r in "abc" for _ in range(rows)]
  path = tmp_path / "raw" / "logs.parquet"
  path.parent.mkdir(parents=True)
  pq.write_table(pa.table({
      "request_id": request, "split": [{"a": "train", "b": "valid", "c": "test"}[r]
                                       for r in request],
      "user_f0": [0.0] * len(request), "item_f0": [1.0] * len(request),
      "label": [float(i % 2) for i in range(len(request))],
      "user": [users[r] for r in request],
      "item": [f"i{i}" for i in range(len(request))],
      "author": [None if i == 5 else f"au{i % 3}" for i in range(len(request))],
      "clicks": [behaviour[r] for r in request]}), path)
  config = repo_config("tabular", None)
  config.source.data_dir, config.source.manual_dir = str(tmp_path / "tfds"), str(path.parent)
  config.source.update(train_file="logs.parquet", split_column="split", list_size=16,
                       min_list_size=1, context_columns=("user_f0",), item_columns=("item_f0",),
                       cross_columns=(), context_id_columns=("user",),
                       item_id_columns=("item", "author"), sequence_column="clicks",
                       sequence_length=3, id_buckets=101)
  validate_config(config)
  splits = load_dataset(config).splits
  for split, rid in (("train", "a"), ("valid", "b"), ("test", "c")):
    batch = splits[split]
    validate_batch(batch, name=split, vocab=IdVocab(context=(101,), items=(101, 101)))
    assert batch.context_ids[0, 0] == hash_ids([users[rid]], 101)[0]
    rows_of = [i for i, r in enumerate(request) if r == rid]
    np.testing.assert_array_equal(batch.item_ids[0, :rows, 0],
                                  hash_ids([f"i{i}" for i in rows_of], 101))
    authors = [None if i == 5 else f"au{i % 3}" for i in rows_of]
    np.testing.assert_array_equal(batch.item_ids[0, :rows, 1], hash_ids(authors, 101))
    assert not batch.item_ids[0, rows:].any()                       # padding: row 0
    kept = behaviour[rid][:3]
    np.testing.assert_array_equal(batch.sequence_ids[0, :, 0],
                                  hash_ids(kept + [None] * (3 - len(kept)), 101))
    np.testing.assert_array_equal(batch.sequence_mask[0], np.arange(3) < len(kept))
  config.source.sequence_column = "user"  # not a list column
  config.source.data_dir = str(tmp_path / "tfds2")
  with pytest.raises(ValueError, match="column 'user' .* must be a list column"):
    load_dataset(config)
