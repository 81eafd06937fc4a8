"""Exported students over categorical IDs (prerank_jax/host/artifact.py ``id_spec``,
host/scoring.py ``_IdReader``): a ``dssm`` trained on a tabular table with user, item and
author ID columns and a behaviour list column is exported, and a fresh process scoring the
test rows by the user's IDs reproduces the run's own test scores; unseen and null IDs score
through the rows the loader gives them (the reserved row 0 for nulls and, with
vocabulary-row IDs, for out-of-range ones); missing or mistyped ID columns, and a CSV that
cannot hold the behaviour list, are refused by name before anything is written; the ID
export lowers for cuda and tpu on this CPU. ``din`` is a teacher (it reads the cross
features) and is refused by the export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prerank_jax.host.artifact import (ArtifactError, export_point, id_spec, load_artifact,
                                       scoring_function, write_artifact)
from prerank_jax.host.scoring import hash_unique, score_file

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parent / "score_fresh_process.py"
BUCKETS = 101
LENGTH = 4


def write_id_logs(path: Path, *, requests: int = 60, candidates: int = 12, seed: int = 0):
  """A click log with IDs: a string user ID per request, integer item IDs and string author
  IDs per candidate (a few null), a behaviour list of earlier items (Parquet list of
  integers, on every row of its request, some empty), one float per side, labels that
  depend on the IDs."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  rng = np.random.default_rng(seed)
  n = requests * candidates
  users = rng.integers(0, 15, requests)
  taste = rng.normal(size=15)
  items = rng.integers(0, 40, n)
  quality = rng.normal(size=40)
  history = [list(map(int, rng.integers(0, 40, rng.integers(0, 7)))) for _ in range(requests)]
  user_f = rng.normal(size=requests)
  item_f = rng.normal(size=n)
  r = np.repeat(np.arange(requests), candidates)
  logit = quality[items] + taste[users][r] * item_f + 0.5 * user_f[r]
  label = (logit + rng.normal(size=n) > 0.3).astype(float)
  label[rng.random(n) < 0.3] = np.nan
  author = [None if i % 17 == 0 else f"au{items[i] % 6}" for i in range(n)]
  table = pa.table({
      "request_id": [f"req-{i:03d}" for i in r],
      "candidate_id": [f"c{i}" for i in rng.permutation(n)],
      "split": np.repeat(rng.choice(["train", "valid", "test"], size=requests,
                                    p=[0.6, 0.2, 0.2]), candidates),
      "user_f0": user_f[r], "item_f0": item_f, "cross_f0": rng.normal(size=n),
      "user_id": [f"u{users[i]}" for i in r],
      "item_id": pa.array(items, pa.int64()), "author_id": author,
      "history": pa.array([history[i] for i in r], pa.list_(pa.int64())),
      "label": label})
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)
  return table


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tabular smoke run (1 teacher, 2 student epochs) of a ``dssm`` over the user, item
  and author IDs and the behaviour list, and its exported artifact."""
  from prerank_jax.config_files import repo_config
  from prerank_jax.host.runner import run

  tmp = tmp_path_factory.mktemp("artifact_ids")
  table = write_id_logs(tmp / "raw" / "logs.parquet")
  config = repo_config("tabular", "smoke")
  config.workdir, config.name = str(tmp / "runs"), "ids"
  config.progress, config.wandb.mode = False, "disabled"
  config.source.manual_dir, config.source.data_dir = str(tmp / "raw"), str(tmp / "tfds")
  config.source.update(train_file="logs.parquet", split_column="split",
                       candidate_column="candidate_id", list_size=16, min_list_size=10,
                       context_columns=("user_f0",), item_columns=("item_f0",),
                       cross_columns=("cross_f0",), context_id_columns=("user_id",),
                       item_id_columns=("item_id", "author_id"), sequence_column="history",
                       sequence_length=LENGTH, id_buckets=BUCKETS)
  config.teacher.num_epochs, config.student.num_epochs = 1, 2
  config.teacher.model.hidden = (32,)
  config.student.model = {"name": "dssm", "id_tower": (16, 8), "id_embed_dim": 8,
                          "context_vocab": (BUCKETS,), "item_vocab": (BUCKETS, BUCKETS)}
  config.sweep.temperature, config.sweep.alpha = (2.0,), (0.5,)
  config.sweep.gt_only_baseline = False
  result = run(config)
  (point,) = [r["model"] for r in result.rows if r["model"].startswith("student")]
  artifact = export_point(result.run_dir, point, tmp / "artifact")
  return {"tmp": tmp, "table": table, "run_dir": result.run_dir, "point": point,
          "artifact": artifact}


def _test_rows(trained):
  table = trained["table"]
  return table.filter(np.asarray(table["split"].to_pylist()) == "test")


@pytest.mark.slow
def test_fresh_process_reproduces_the_dssm_id_run_test_scores_by_user_ids(trained):
  import pyarrow.parquet as pq

  tmp = trained["tmp"]
  test = _test_rows(trained)
  pq.write_table(test, tmp / "new.parquet", row_group_size=50)  # requests span batches
  out = tmp / "scored.parquet"
  proc = subprocess.run([sys.executable, str(HELPER), str(trained["artifact"]),
                         str(tmp / "new.parquet"), str(out)], capture_output=True, text=True,
                        cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["training_side_modules"] == []  # hash_ids lives in prerank_jax.batch
  scored = pq.read_table(out)
  assert scored.column_names == ["request_id", "candidate_id", "score"]
  assert scored["candidate_id"].to_pylist() == test["candidate_id"].to_pylist()
  run = pq.read_table(trained["run_dir"] / "scores.parquet").to_pandas()
  run = run[(run["model"] == trained["point"]) & (run["split"] == "test")]
  want = {(str(r), str(c)): s for r, c, s in
          zip(run["request_id"], run["candidate_id"], run["score"])}
  assert len(want) == test.num_rows > 0
  expected = np.array([want[k] for k in zip(scored["request_id"].to_pylist(),
                                            scored["candidate_id"].to_pylist())], np.float32)
  # As for the float two-tower (test_artifact.py): the dot product sums in another order.
  np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
  spec = json.loads((trained["artifact"] / "features.json").read_text())["ids"]
  assert spec["map"] == "hash" and spec["buckets"] == BUCKETS
  assert [c["name"] for c in spec["items"]] == ["item_id", "author_id"]
  assert spec["sequence"][0]["type"] == "list<integer>" and spec["sequence_length"] == LENGTH


def _model_batch(art, rows, *, context_ids, item_ids, sequence_ids):
  """Scores of the artifact's own parameters through the model (not the export): the
  reference for what an ID should map to."""
  import jax
  import jax.numpy as jnp

  from prerank_jax.batch import Batch
  from prerank_jax.models import build_model

  cfg = art.config["student"]["model"]
  model = build_model("dssm", feature_sizes={"context": 1, "items": 1, "cross": 1,
                                             "context_ids": 1, "item_ids": 2,
                                             "sequence_ids": 1, "sequence_length": LENGTH},
                      id_tower=tuple(cfg["id_tower"]), id_embed_dim=cfg["id_embed_dim"],
                      context_vocab=tuple(cfg["context_vocab"]),
                      item_vocab=tuple(cfg["item_vocab"]))
  abstract = model.init(jax.random.key(0))
  leaves, treedef = jax.tree.flatten(abstract)
  params = jax.tree.unflatten(treedef, [jnp.asarray(p) for p in art.params])
  n = len(rows)
  seq = jnp.asarray(sequence_ids, jnp.int32)[..., None]
  batch = Batch(context=jnp.asarray(rows["user_f0"], jnp.float32)[:, None],
                items=jnp.asarray(rows["item_f0"], jnp.float32)[:, None, None],
                cross=jnp.zeros((n, 1, 1)), label=jnp.zeros((n, 1)),
                exposed=jnp.zeros((n, 1), bool), valid=jnp.ones((n, 1), bool),
                context_ids=jnp.asarray(context_ids, jnp.int32),
                item_ids=jnp.asarray(item_ids, jnp.int32)[:, None],
                sequence_ids=seq, sequence_mask=seq[..., 0] > 0)
  return np.asarray(model.apply(params, batch)[:, 0])


@pytest.mark.slow
def test_unseen_and_null_ids_score_through_the_rows_the_loader_gives_them(trained, tmp_path):
  """A null (or empty) ID is the reserved row 0; a hashed ID never seen in training lands in
  its hash bucket, as the loader would put it; behaviour slots beyond the list are row 0 and
  masked; the list is read from the first row of each request's run of rows."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  from prerank_jax.batch import hash_ids

  rows = {"request_id": ["new-1"] * 3 + ["new-2"] * 2,
          "candidate_id": ["a", "b", "c", "d", "e"],
          "user_f0": [0.3, 0.3, 0.3, -1.0, -1.0], "item_f0": [0.5, -0.2, 1.0, 0.0, 2.0],
          "user_id": ["u-never-seen", "u-never-seen", "u-never-seen", None, None],
          "item_id": [10_000_019, None, 3, 7, 7],
          "author_id": ["au1", "", None, "au-unseen", "au2"]}
  history = [[3, None, 999_999, 5, 8, 9], [], None, None, []]  # rows 2-3: their request's first
  path = tmp_path / "unseen.parquet"
  pq.write_table(pa.table({**rows, "item_id": pa.array(rows["item_id"], pa.int64()),
                           "history": pa.array(history, pa.list_(pa.int64()))}), path)
  score_file(trained["artifact"], path, tmp_path / "out.parquet")
  got = pq.read_table(tmp_path / "out.parquet")["score"].to_numpy()
  # Read two rows at a time, request new-1's list comes from the batch before (carried).
  score_file(trained["artifact"], path, tmp_path / "out2.parquet", batch_rows=2)
  np.testing.assert_array_equal(pq.read_table(tmp_path / "out2.parquet")["score"].to_numpy(),
                                got)
  art = load_artifact(trained["artifact"])
  text = lambda values: np.asarray(["" if v is None else str(v) for v in values], object)
  context_ids = hash_ids(text(rows["user_id"]), BUCKETS)[:, None]
  item_ids = np.stack([hash_ids(text(rows["item_id"]), BUCKETS),
                       hash_ids(text(rows["author_id"]), BUCKETS)], 1)
  assert context_ids[3, 0] == 0 and item_ids[1, 0] == 0 and (item_ids[1:3, 1] == 0).all()
  first = hash_ids(np.asarray([3, None, 999_999, 5], object), BUCKETS)  # first L entries
  assert first[1] == 0
  sequence = np.stack([first, first, first, np.zeros(LENGTH, int), np.zeros(LENGTH, int)])
  want = _model_batch(art, {"user_f0": rows["user_f0"], "item_f0": rows["item_f0"]},
                      context_ids=context_ids, item_ids=item_ids, sequence_ids=sequence)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_missing_or_mistyped_id_columns_and_csv_behaviour_are_refused_by_name(trained,
                                                                             tmp_path):
  import pyarrow as pa
  import pyarrow.csv as pcsv
  import pyarrow.parquet as pq

  test = _test_rows(trained)
  out = tmp_path / "out.parquet"
  cases = {
      "no_author": (test.drop_columns(["author_id"]), r"no ID column\(s\) \['author_id'\]"),
      "no_history": (test.drop_columns(["history"]), r"no ID column\(s\) \['history'\]"),
      "item_as_text": (test.set_column(test.schema.get_field_index("item_id"), "item_id",
                                       test["item_id"].cast(pa.string())),
                       r"ID column 'item_id' is string .* trained on integer IDs"),
      "history_flat": (test.set_column(test.schema.get_field_index("history"), "history",
                                       test["item_id"]),
                       r"ID column 'history' is int64; the behaviour sequence must be a list"),
      "user_as_list": (test.set_column(test.schema.get_field_index("user_id"), "user_id",
                                       test["history"]),
                       r"ID column 'user_id' is a list column"),
  }
  for name, (table, message) in cases.items():
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    with pytest.raises(ArtifactError, match=message):
      score_file(trained["artifact"], path, out)
    assert not out.exists()
  pcsv.write_csv(test.drop_columns(["history"]).append_column(
      "history", pa.array(["[1, 2]"] * test.num_rows)), tmp_path / "ids.csv")
  with pytest.raises(ArtifactError, match=r"'history' is the behaviour sequence.*CSV cannot "
                                          r"hold.*Parquet"):
    score_file(trained["artifact"], tmp_path / "ids.csv", out)
  assert not out.exists()


@pytest.mark.slow
def test_the_id_export_lowers_for_cpu_cuda_and_tpu_with_symbolic_candidates(trained):
  art = load_artifact(trained["artifact"])
  assert set(art.exported.platforms) == {"cpu", "cuda", "tpu"}
  assert art.manifest["format_version"] == 2
  assert art.manifest["inputs"] == {"context": 1, "items": 1, "context_ids": 1, "item_ids": 2,
                                    "sequence_ids": 1, "sequence_length": LENGTH}
  *_, context_ids, item_ids, sequence_ids, mask = art.exported.in_avals
  assert str(context_ids.shape[0]) == "n" and context_ids.dtype == np.int32
  assert (item_ids.shape[1], sequence_ids.shape[1:], mask.dtype) == (2, (LENGTH, 1), np.bool_)
  for n in (1, 7):  # one export, any number of candidates
    ids = {f: np.zeros(s, bool if f == "sequence_mask" else np.int32)
           for f, s in art.id_shapes(n).items()}
    assert art.score(np.zeros((n, 1)), np.zeros((n, 1)), ids).shape == (n,)
  with pytest.raises(ArtifactError, match="reads categorical IDs; pass ids="):
    art.score(np.zeros((2, 1)), np.zeros((2, 1)))


def _tiny_id_model(name="dssm", *, cross=0):
  from prerank_jax.models import build_model

  sizes = {"context": 2, "items": 3, "cross": cross, "context_ids": 1, "item_ids": 2,
           "sequence_ids": 1, "sequence_length": 5}
  ids = dict(id_embed_dim=4, context_vocab=(11,), item_vocab=(13, 7))
  if name == "dssm":
    return build_model("dssm", feature_sizes=sizes, id_tower=(8, 4), **ids)
  return build_model("din", feature_sizes=sizes, hidden=(8,), attention_hidden=(4,), **ids)


def test_vocabulary_row_ids_outside_the_table_read_the_reserved_row(tmp_path):
  """The simulator's IDs are table rows (``map: rows``): an ID >= rows, a negative one or a
  null scores exactly as row 0; an ID inside the table as itself."""
  import jax
  import ml_collections
  import pyarrow as pa
  import pyarrow.parquet as pq

  model = _tiny_id_model()
  params = model.init(jax.random.key(1))
  config = ml_collections.ConfigDict({"dataset": "simulator"})
  spec = {"kind": "arrays", "request_column": "", "candidate_column": "",
          "context": [{"name": f"context_{i}", "transform": "raw"} for i in range(2)],
          "items": [{"name": f"items_{i}", "transform": "raw"} for i in range(3)],
          "ids": id_spec(config, model)}
  assert spec["ids"]["map"] == "rows"
  art = load_artifact(write_artifact(tmp_path / "a", model=model, params=params, spec=spec,
                                     config={}, metrics={}, point="p"))
  rng = np.random.default_rng(0)
  floats = {f"context_{i}": np.full(4, rng.normal()) for i in range(2)}
  floats.update({f"items_{i}": np.full(4, rng.normal()) for i in range(3)})

  def table(user, item, author, history):
    return pa.table({**floats, "context_ids_0": pa.array(user, pa.int64()),
                     "item_ids_0": pa.array(item, pa.int64()),
                     "item_ids_1": pa.array(author, pa.int64()),
                     "sequence_ids_0": pa.array(history, pa.list_(pa.int64()))})

  outside = table([11, -3, None, 0], [13, 500, None, 0], [7, -1, None, 0],
                  [[13, 99], [-4], None, []])
  inside = table([5] * 4, [12] * 4, [6] * 4, [[2, 3]] * 4)
  scores = {}
  for name, t in (("outside", outside), ("inside", inside)):
    pq.write_table(t, tmp_path / f"{name}.parquet")
    score_file(art, tmp_path / f"{name}.parquet", tmp_path / f"{name}.out.parquet")
    scores[name] = pq.read_table(tmp_path / f"{name}.out.parquet")["score"].to_numpy()
  np.testing.assert_array_equal(scores["outside"], scores["outside"][3])  # all as row 0
  assert not np.allclose(scores["inside"], scores["outside"])
  zeros = {f: np.zeros(s, bool if f == "sequence_mask" else np.int32)
           for f, s in art.id_shapes(1).items()}
  direct = art.score(np.asarray([[floats["context_0"][0], floats["context_1"][0]]]),
                     np.asarray([[floats[f"items_{i}"][0] for i in range(3)]]), zeros)
  np.testing.assert_allclose(scores["outside"][0], direct[0], rtol=1e-6)


def test_din_is_a_teacher_and_the_export_refuses_it():
  import jax

  model = _tiny_id_model("din", cross=1)
  with pytest.raises(ValueError, match="reads cross features.*din is a teacher"):
    scoring_function(model, model.init(jax.random.key(0)), platforms=("cpu",))


def test_vectorised_hash_gives_the_loaders_hash_ids_rows():
  """Scoring hashes with ``hash_unique`` (FNV-1a over all keys at once); the loader with
  ``prerank_jax.batch.hash_ids``. They must agree on every kind of ID."""
  from prerank_jax.batch import hash_ids

  rng = np.random.default_rng(0)
  alphabet = list("abcxyz019-_é漢😀")
  values = [None, "", b"", b"\x00\xff", "a", "é漢字", 0, 7, -3, 2**63, 1.5, "x" * 300,
            "y" * 257 + "z"]
  values += ["".join(rng.choice(alphabet, rng.integers(0, 20))) for _ in range(3000)]
  values += [int(v) for v in rng.integers(-10**12, 10**12, 500)]
  for buckets in (2, 101, 100_003, 2**31 - 1):
    np.testing.assert_array_equal(hash_unique(values, buckets),
                                  hash_ids(np.asarray(values, dtype=object), buckets))
  assert hash_unique([], 101).shape == (0,)


@pytest.mark.slow
def test_cached_item_and_user_vectors_reproduce_the_scores_by_dot_products(trained, tmp_path,
                                                                            capsys):
  """``score --embed items`` on a catalogue and ``--embed users`` on the requests give
  vectors whose dot products are the exported scores of the same rows."""
  import pyarrow.parquet as pq

  from prerank_jax.cli import main

  test = _test_rows(trained)
  pq.write_table(test, tmp_path / "rows.parquet")
  art = trained["artifact"]
  score_file(art, tmp_path / "rows.parquet", tmp_path / "scores.parquet")
  catalogue = test.select(["item_id", "author_id", "item_f0", "candidate_id"])
  pq.write_table(catalogue, tmp_path / "catalogue.parquet")
  assert main(["prerank-jax", "score", str(art), "--input", str(tmp_path / "catalogue.parquet"),
               "--output", str(tmp_path / "items.parquet"), "--embed", "items",
               "--keep", "candidate_id"]) == 0
  assert f"{test.num_rows} item vectors" in capsys.readouterr().out
  users = test.select(["request_id", "user_id", "user_f0", "history"])
  pq.write_table(users, tmp_path / "users.parquet")
  assert main(["prerank-jax", "score", str(art), "--input", str(tmp_path / "users.parquet"),
               "--output", str(tmp_path / "users_out.parquet"), "--embed", "users",
               "--keep", "request_id", "--batch-rows", "7"]) == 0
  items = pq.read_table(tmp_path / "items.parquet")
  users = pq.read_table(tmp_path / "users_out.parquet")
  assert items.column_names == ["item_id", "author_id", "candidate_id", "embedding"]
  assert users.column_names == ["user_id", "request_id", "embedding"]
  assert items["candidate_id"].to_pylist() == test["candidate_id"].to_pylist()
  v = np.stack(items["embedding"].to_numpy(zero_copy_only=False))
  u = np.stack(users["embedding"].to_numpy(zero_copy_only=False))
  assert v.shape == u.shape == (test.num_rows, 8)  # id_tower (16, 8): D = 8
  scores = pq.read_table(tmp_path / "scores.parquet")["score"].to_numpy()
  np.testing.assert_allclose((u * v).sum(-1), scores, rtol=1e-5, atol=1e-6)


def test_embed_needs_a_dssm_artifact(tmp_path):
  import jax
  import pyarrow as pa
  import pyarrow.parquet as pq

  from prerank_jax.host.scoring import embed_file
  from prerank_jax.models import build_model

  model = build_model("linear", feature_sizes={"context": 1, "items": 1, "cross": 0})
  spec = {"kind": "arrays", "request_column": "", "candidate_column": "",
          "context": [{"name": "context_0", "transform": "raw"}],
          "items": [{"name": "items_0", "transform": "raw"}]}
  art = write_artifact(tmp_path / "a", model=model, params=model.init(jax.random.key(0)),
                       spec=spec, config={}, metrics={}, point="p", platforms=("cpu",))
  pq.write_table(pa.table({"items_0": [1.0]}), tmp_path / "c.parquet")
  with pytest.raises(ArtifactError, match="no items tower .*only a dssm"):
    embed_file(art, tmp_path / "c.parquet", tmp_path / "o.parquet", side="items")
  assert not (tmp_path / "o.parquet").exists()


def test_csv_carries_id_columns_when_there_is_no_behaviour_list(tmp_path):
  """Without a behaviour sequence a CSV input works for a student over IDs and gives the
  Parquet input's scores; its ID columns are typed as pyarrow infers them."""
  import jax
  import ml_collections
  import pyarrow as pa
  import pyarrow.csv as pcsv
  import pyarrow.parquet as pq

  from prerank_jax.models import build_model

  model = build_model("dssm", feature_sizes={"context": 1, "items": 1, "cross": 0,
                                             "context_ids": 1, "item_ids": 1},
                      id_tower=(8, 4), id_embed_dim=4, context_vocab=(9,), item_vocab=(9,))
  spec = {"kind": "arrays", "request_column": "", "candidate_column": "",
          "context": [{"name": "context_0", "transform": "raw"}],
          "items": [{"name": "items_0", "transform": "raw"}],
          "ids": id_spec(ml_collections.ConfigDict({"dataset": "simulator"}), model)}
  assert spec["ids"]["sequence"] == [] and spec["ids"]["sequence_length"] == 0
  art = load_artifact(write_artifact(tmp_path / "a", model=model,
                                     params=model.init(jax.random.key(2)), spec=spec,
                                     config={}, metrics={}, point="p", platforms=("cpu",)))
  table = pa.table({"context_0": [0.1, 0.2, 0.3], "items_0": [1.0, -1.0, 0.5],
                    "context_ids_0": [1, 8, 9], "item_ids_0": [3, 0, 4]})
  pq.write_table(table, tmp_path / "in.parquet")
  pcsv.write_csv(table, tmp_path / "in.csv")
  for source in ("in.parquet", "in.csv"):
    score_file(art, tmp_path / source, tmp_path / f"{source}.out.parquet")
  got = {s: pq.read_table(tmp_path / f"{s}.out.parquet")["score"].to_numpy()
         for s in ("in.parquet", "in.csv")}
  np.testing.assert_array_equal(got["in.csv"], got["in.parquet"])
  assert len(set(np.round(got["in.csv"], 6))) == 3
