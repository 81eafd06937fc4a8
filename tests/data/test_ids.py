"""The user's IDs on the loader side (issue 20 §2): ``registry.load_dataset(...).ids``.

Tabular: the request column and ``source.candidate_column`` (else the 1-based data row
number); LETOR: the qid and the ``#docid = …`` comment, else the 1-based line number. The
IDs travel through the TFDS/ArrayRecord preparation (a JSON text field of each record) and
come back identical when the prepared dataset is reused. Every check is against the raw
file read independently here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prerank_jax.config_files import repo_config
from prerank_jax.data.ids import SplitIds
from prerank_jax.data.registry import load_dataset

from tests.data.test_logged_teacher import write_logs


def tabular_config(tmp_path: Path, train_file: str = "logs.parquet", **source):
  config = repo_config("tabular", "smoke")
  config.source.data_dir = str(tmp_path / "tfds")
  config.source.manual_dir = str(tmp_path / "raw")
  config.source.train_file = train_file
  for k, v in source.items():
    config.source[k] = v
  return config


def features_by_id(cols, key):
  return {k: (cols["item_f0"][i], cols["item_f1"][i]) for i, k in enumerate(key)}


@pytest.mark.parametrize("candidate_column", ["doc", ""])
def test_tabular_ids_align_with_features(tmp_path, candidate_column):
  cols = write_logs(tmp_path / "raw" / "logs.parquet")
  config = tabular_config(tmp_path, split_column="split", candidate_column=candidate_column)
  loaded = load_dataset(config)
  assert set(loaded.ids) == {"train", "valid", "test"}
  row_ids = [str(i + 1) for i in range(len(cols["doc"]))]  # 1-based data row numbers
  key = list(zip(cols["request_id"], cols["doc"] if candidate_column else row_ids))
  expected = features_by_id(cols, key)
  for split, batch in loaded.splits.items():
    ids = loaded.ids[split]
    assert isinstance(ids, SplitIds)
    assert ids.request_column == "request_id"
    assert ids.candidate_column == (candidate_column or "candidate_id")
    assert ids.candidate.shape == batch.valid.shape
    assert (ids.candidate[~batch.valid] == "").all()
    assert all(s == split for q, s in zip(cols["request_id"], cols["split"])
               if q in set(ids.request))
    for r in range(batch.num_requests):
      for n in np.flatnonzero(batch.valid[r]):
        x0, x1 = expected[(ids.request[r], ids.candidate[r, n])]
        np.testing.assert_allclose(batch.items[r, n, :2], [x0, x1], rtol=1e-6)
  # Reused from disk (no preparation): the same IDs.
  again = load_dataset(config)
  for split in loaded.ids:
    np.testing.assert_array_equal(again.ids[split].candidate, loaded.ids[split].candidate)
    np.testing.assert_array_equal(again.ids[split].request, loaded.ids[split].request)


def write_libsvm(path: Path, *, seed=0, num_queries=8, docids=True, prefix="q"):
  """A small LibSVM file with blank and comment lines; returns {(qid, id): features}."""
  rng = np.random.default_rng(seed)
  lines, expected = ["# header comment", ""], {}
  for q in range(num_queries):
    for d in range(int(rng.integers(10, 16))):
      x = np.round(rng.normal(size=3), 3)
      comment = f" #docid = {prefix}{q}-doc{d} inc = 1" if docids and d % 4 else ""
      lines.append(f"{int(rng.integers(0, 3))} qid:{prefix}{q}00 1:{x[0]} 2:{x[1]} 3:{x[2]}"
                   f"{comment}")
      doc = f"{prefix}{q}-doc{d}" if comment else str(len(lines))  # else its line number
      expected[(f"{prefix}{q}00", doc)] = x
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")
  return expected


def letor_config(tmp_path: Path, **source):
  config = repo_config("letor")
  config.dataset = "letor"
  config.source.data_dir = str(tmp_path / "tfds")
  config.source.manual_dir = str(tmp_path / "raw")
  config.source.student_features = ()
  config.source.normalize = "none"
  config.source.list_size = 20
  config.source.min_list_size = 5
  config.source.num_exposed = 5
  for k, v in source.items():
    config.source[k] = v
  return config


def test_letor_ids_are_qid_and_docid_else_line_number(tmp_path):
  expected = {}
  for split, name, seed in (("train", "train.txt", 0), ("valid", "vali.txt", 1),
                            ("test", "test.txt", 2)):
    expected.update(write_libsvm(tmp_path / "raw" / name, seed=seed, prefix=split[:2]))
  loaded = load_dataset(letor_config(tmp_path))
  for split, batch in loaded.splits.items():
    ids = loaded.ids[split]
    assert (ids.request_column, ids.candidate_column) == ("qid", "docid")
    seen = 0
    for r in range(batch.num_requests):
      for n in np.flatnonzero(batch.valid[r]):
        x = expected[(ids.request[r], ids.candidate[r, n])]
        np.testing.assert_allclose(batch.items[r, n], x, rtol=1e-6)
        seen += 1
    assert seen == batch.valid.sum()
    # Both kinds occur: docid comments and plain line numbers.
    valid_ids = ids.candidate[batch.valid]
    assert any("-doc" in c for c in valid_ids) and any(c.isdigit() for c in valid_ids)


def test_null_candidate_id_refused_with_file_and_line(tmp_path):
  import pyarrow as pa
  import pyarrow.csv as pcsv

  write_logs(tmp_path / "raw" / "plain.csv")
  table = pcsv.read_csv(tmp_path / "raw" / "plain.csv")
  docs = table.column("doc").to_pylist()
  docs[6] = None
  pcsv.write_csv(table.set_column(table.column_names.index("doc"), "doc", pa.array(docs)),
                 tmp_path / "raw" / "logs.csv")
  config = tabular_config(tmp_path, "logs.csv", split_column="split", candidate_column="doc")
  with pytest.raises(ValueError, match=r"logs.csv:8: column 'doc' is null"):
    load_dataset(config)
