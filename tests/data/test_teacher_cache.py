"""The teacher-score cache: ArrayRecord next to the dataset, keyed by dataset and teacher,
reused, and refused when the key does not match."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prerank_jax.data import simulator_tfds
from prerank_jax.data.teacher_cache import (TeacherCacheMismatch, TeacherScoreCache,
                                            params_fingerprint, score_splits_cached)


@pytest.fixture()
def prepared(tmp_path):
  splits, builder = simulator_tfds.load(simulator_tfds.PRESETS["tiny"], seed=0,
                                        data_dir=str(tmp_path))
  return splits, builder


def _scorer(params, calls):
  def score(splits):
    calls.append(sorted(splits))
    return {name: b._replace(teacher_scores=np.stack(
        [b.items.sum(-1) * w for w in params["w"]], axis=-1).astype(np.float32))
        for name, b in splits.items()}
  return score


def test_scores_computed_once_then_read_from_the_cache(prepared):
  splits, builder = prepared
  params, calls = {"w": np.array([1.0, -2.0], np.float32)}, []
  first, how = score_splits_cached(builder, params, splits, _scorer(params, calls))
  assert how == {"train": "computed", "valid": "computed", "test": "computed"}
  again, how = score_splits_cached(builder, params, splits, _scorer(params, calls))
  assert how == {"train": "cache", "valid": "cache", "test": "cache"} and len(calls) == 1
  for name in splits:
    assert again[name].teacher_scores.shape == (*splits[name].valid.shape, 2)
    np.testing.assert_array_equal(again[name].teacher_scores, first[name].teacher_scores)
  directory = builder.data_path / "teacher_scores" / params_fingerprint(params)[:16]
  key = json.loads((directory / "key.json").read_text())
  assert key["dataset"] == "prerank_simulator/tiny/1.2.0"
  assert key["teacher"] == params_fingerprint(params)
  assert key["splits"]["train"] == [64, 20, 2]
  assert (directory / "train.array_record").exists()
  # Another teacher gets its own cache (computed again), never the first one's scores.
  other = {"w": np.array([1.0, -2.5], np.float32)}
  _, how = score_splits_cached(builder, other, splits, _scorer(other, calls))
  assert set(how.values()) == {"computed"} and len(calls) == 2


def test_mismatched_key_is_refused(prepared, tmp_path):
  splits, builder = prepared
  scores = np.zeros((*splits["valid"].valid.shape, 1), np.float32)
  TeacherScoreCache(tmp_path / "c", dataset="prerank_simulator/tiny/1.0.0",
                    teacher="aaa").save("valid", scores)
  with pytest.raises(TeacherCacheMismatch, match=r"teacher: cache has 'aaa', this run needs "
                                                 r"'bbb'"):
    TeacherScoreCache(tmp_path / "c", dataset="prerank_simulator/tiny/1.0.0",
                      teacher="bbb").load("valid", num_requests=32, list_size=20)
  with pytest.raises(TeacherCacheMismatch, match="dataset: cache has"):
    TeacherScoreCache(tmp_path / "c", dataset="prerank_simulator/tiny/2.0.0",
                      teacher="aaa").load("valid", num_requests=32, list_size=20)
  with pytest.raises(TeacherCacheMismatch, match=r"R=64, N=20; refusing it"):
    TeacherScoreCache(tmp_path / "c", dataset="prerank_simulator/tiny/1.0.0",
                      teacher="aaa").load("valid", num_requests=64, list_size=20)


def test_fingerprint_follows_the_parameters():
  a = {"layer": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}}
  b = {"layer": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}}
  assert params_fingerprint(a) == params_fingerprint(b)
  b["layer"]["b"][1] = 1e-7
  assert params_fingerprint(a) != params_fingerprint(b)
