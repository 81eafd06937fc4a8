"""LETOR and the evaluation's conventions: the test split keeps its short queries, MSLR's
feature ids are refused on other files, and a missing MSLR dataset names the generic route."""

from __future__ import annotations

import numpy as np
import pytest

from prerank_jax.data import letor, tfds_base
from prerank_jax.data.registry import DatasetMissingError, load_dataset
from tests.data.test_tfds_datasets import data_config, letor_config, write_letor


def test_mslr_feature_ids_only_on_mslr():
  for dataset in ("letor", "istella/s", "yahoo_ltrc/set1"):
    with pytest.raises(ValueError, match=r"source\.student_features.*not MSLR-WEB.*\(\)"):
      letor.check_student_features(dataset, letor.MSLR_STUDENT_FEATURES)
  letor.check_student_features("mslr_web/10k_fold1", letor.MSLR_STUDENT_FEATURES)
  letor.check_student_features("letor", ())            # the documented default: all
  letor.check_student_features("letor", (1, 2, 3))


def test_configs_letor_on_your_own_files_refuses_mslr_ids(tmp_path):
  write_letor(tmp_path / "raw", names=("a.train", None, "a.test"))
  config = data_config(tmp_path)  # configs/letor.py: the student gets MSLR's 20 ids
  assert tuple(config.source.student_features) == letor.MSLR_STUDENT_FEATURES
  config.dataset = "letor"
  config.source.train_file, config.source.test_file = "a.train", "a.test"
  with pytest.raises(ValueError, match=r"source\.student_features: holds MSLR-WEB"):
    load_dataset(config)
  assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").rglob("*.array_record*"))


def test_missing_mslr_names_the_generic_letor_route(tmp_path):
  config = data_config(tmp_path, "letor", "mslr_web/10k_fold1", manual=tmp_path / "nowhere")
  with pytest.raises(DatasetMissingError) as info:
    load_dataset(config)
  text = str(info.value)
  assert "--config.dataset=letor" in text and "--config.source.train_file=" in text
  assert "student_features=()" in text


def _write(path, prefix, lengths, rng):
  lines = []
  for q, n in enumerate(lengths):
    for d in range(n):
      feats = " ".join(f"{f}:{rng.normal():.3f}" for f in range(1, 5))
      lines.append(f"{rng.integers(0, 3)} qid:{prefix}{q} {feats}")
  path.write_text("\n".join(lines) + "\n")


def test_test_split_keeps_short_queries(tmp_path):
  rng = np.random.default_rng(0)
  (tmp_path / "raw").mkdir()
  train_lengths, test_lengths = [12, 4, 15, 11, 13, 3, 14, 12, 16, 12], [12, 3, 15, 6, 11]
  _write(tmp_path / "raw" / "a.train", "tr", train_lengths, rng)
  _write(tmp_path / "raw" / "a.test", "te", test_lengths, rng)
  config = letor_config(tmp_path, train_file="a.train", test_file="a.test", min_list_size=10,
                        student_features=(), valid_fraction=0.2)
  config.dataset = "letor"
  loaded = load_dataset(config)
  # Test: every query, in file order, each over its own length (3 and 6 < min_list_size).
  assert tfds_base.request_ids(loaded.builder, "test") == [f"te{q}" for q in range(5)]
  np.testing.assert_array_equal(loaded.splits["test"].valid.sum(1), test_lengths)
  # Train and valid: the queries of at least min_list_size documents only.
  kept = (tfds_base.request_ids(loaded.builder, "train")
          + tfds_base.request_ids(loaded.builder, "valid"))
  assert sorted(kept) == sorted(f"tr{q}" for q, n in enumerate(train_lengths) if n >= 10)
