"""Choosing a sweep point on validation (prerank_jax/analysis/select.py): the choice
follows valid/<metric>, the test value is only reported, and a frame without validation
columns is refused rather than chosen on test."""

import numpy as np
import pandas as pd
import pytest

from prerank_jax.analysis import best_on_valid


def frame():
  """Two setups; in each, the test argmax and the validation argmax are different points.
  Two seeds per point (the means decide), a diverged point with the best values of all, and
  a gt-only point."""
  rows = []
  for setup, flip in (("a", False), ("b", True)):
    for seed in (0, 1):
      noise = 0.01 * seed
      points = {"T=1": (0.50, 0.70), "T=2": (0.60, 0.55), "T=4": (0.55, 0.60)}
      if flip:  # setup b: T=4 is validation's choice, T=1 the test's
        points = {"T=1": (0.70, 0.40), "T=2": (0.50, 0.50), "T=4": (0.60, 0.65)}
      for point, (test, valid) in points.items():
        rows.append(dict(setup=setup, program="", seed=seed, role="student", status="ok",
                         model=f"student {point}", point=point,
                         **{"ndcg@10": test + noise, "valid/ndcg@10": valid - noise}))
      rows.append(dict(setup=setup, program="", seed=seed, role="student", status="diverged",
                       model="student T=9", point="T=9",
                       **{"ndcg@10": 9.0, "valid/ndcg@10": 9.0}))
      rows.append(dict(setup=setup, program="", seed=seed, role="student", status="ok",
                       model="student gt-only", point="gt-only",
                       **{"ndcg@10": 0.9, "valid/ndcg@10": 0.9}))
      rows.append(dict(setup=setup, program="", seed=seed, role="teacher", status="reference",
                       model="teacher", point="teacher",
                       **{"ndcg@10": 0.95, "valid/ndcg@10": 0.95}))
  return pd.DataFrame(rows)


def test_best_point_is_the_validation_argmax_not_the_test_argmax():
  runs = frame()
  best = best_on_valid(runs, "ndcg@10", exclude=r"^gt-only").set_index("setup")
  assert best.loc["a", "point"] == "T=1" and best.loc["b", "point"] == "T=4"
  for setup in ("a", "b"):
    students = runs[(runs.setup == setup) & (runs.status == "ok")
                    & (runs.point != "gt-only") & (runs.role == "student")]
    means = students.groupby("point")[["ndcg@10", "valid/ndcg@10"]].mean()
    assert best.loc[setup, "point"] == means["valid/ndcg@10"].idxmax()
    assert best.loc[setup, "point"] != means["ndcg@10"].idxmax()  # the test would differ
    # What is reported is the chosen point's test mean over its two seeds.
    assert best.loc[setup, "ndcg@10"] == pytest.approx(
        means.loc[best.loc[setup, "point"], "ndcg@10"])
    assert best.loc[setup, "valid/ndcg@10"] == pytest.approx(means["valid/ndcg@10"].max())
    assert best.loc[setup, "n"] == 2 and best.loc[setup, "candidates"] == 3
  # Without exclude, the gt-only student competes (and wins on validation here).
  assert set(best_on_valid(runs, "ndcg@10")["point"]) == {"gt-only"}


def test_without_validation_columns_nothing_is_chosen():
  runs = frame().drop(columns=["valid/ndcg@10"])
  with pytest.raises(ValueError, match=r"no 'valid/ndcg@10' column.*prerank-jax eval"):
    best_on_valid(runs, "ndcg@10")
  with pytest.raises(ValueError, match="'mrr' is not a column"):
    best_on_valid(frame(), "mrr")
  only_nan = frame().assign(**{"valid/ndcg@10": np.nan})
  with pytest.raises(ValueError, match="no student point with a finite"):
    best_on_valid(only_nan, "ndcg@10")
