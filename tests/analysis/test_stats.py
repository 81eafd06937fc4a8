"""Statistics over seeds against scipy.stats and textbook t tables, on fixed numbers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from prerank_jax.analysis.stats import mean_ci, paired_diff, t_interval, t_quantile

# Fixed per-seed values of two models (5 seeds), and a baseline.
SEEDS = [0, 1, 2, 3, 4]
A = [0.612, 0.640, 0.581, 0.663, 0.629]
B = [0.598, 0.611, 0.590, 0.634, 0.602]
BASE = [0.570, 0.602, 0.551, 0.611, 0.590]


def _frame():
  rows = []
  for model, values in (("student a", A), ("student b", B), ("student gt-only", BASE)):
    for s, v in zip(SEEDS, values):
      rows.append({"setup": "x", "model": model, "seed": s, "recall@25%": v,
                   "R@(10,25%)": 1.0 - v})
  return pd.DataFrame(rows)


@pytest.mark.parametrize("dof,expected", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262),
                                          (30, 2.042)])
def test_t_quantile_matches_a_printed_table(dof, expected):
  assert t_quantile(0.95, dof) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("level", [0.8, 0.9, 0.99])
def test_t_quantile_matches_scipy(level):
  for dof in (1, 3, 7, 50):
    assert t_quantile(level, dof) == pytest.approx(sps.t.ppf(0.5 + level / 2, dof), rel=1e-9)
  assert math.isnan(t_quantile(level, 0))


def test_t_interval_matches_scipy_and_ignores_non_finite():
  x = np.array(A)
  lo, hi = sps.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sps.sem(x))
  mean, half, n = t_interval([*A, math.nan, math.inf], level=0.95)
  assert n == 5 and mean == pytest.approx(x.mean())
  assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-9)
  # One value: a mean without an interval; none: nothing.
  assert t_interval([0.3])[0] == 0.3 and math.isnan(t_interval([0.3])[1])
  assert t_interval([])[2] == 0 and math.isnan(t_interval([])[0])


def test_mean_ci_per_group_matches_scipy():
  out = mean_ci(_frame(), ["recall@25%", "R@(10,25%)"], by=["setup", "model"])
  assert list(out["model"]) == ["student a", "student b", "student gt-only"]
  for values, (_, row) in zip((A, B, BASE), out.iterrows()):
    x = np.array(values)
    lo, hi = sps.t.interval(0.95, 4, loc=x.mean(), scale=sps.sem(x))
    assert row["n"] == 5 and row["recall@25%_n"] == 5
    assert row["recall@25%"] == pytest.approx(x.mean())
    assert row["recall@25%_lo"] == pytest.approx(lo) and row["recall@25%_hi"] == pytest.approx(hi)
    assert row["recall@25%_std"] == pytest.approx(x.std(ddof=1))
    # 1 − v has the same spread, mirrored.
    assert row["R@(10,25%)_ci"] == pytest.approx(row["recall@25%_ci"])
    assert row["R@(10,25%)"] == pytest.approx(1.0 - x.mean())


def test_mean_ci_narrows_with_level_and_refuses_bad_input():
  frame = _frame()
  wide = mean_ci(frame, "recall@25%", by="model", level=0.99)["recall@25%_ci"]
  narrow = mean_ci(frame, "recall@25%", by="model", level=0.8)["recall@25%_ci"]
  assert (wide > narrow).all()
  with pytest.raises(ValueError, match=r"level.*\(0, 1\)"):
    mean_ci(frame, "recall@25%", level=1.0)
  with pytest.raises(ValueError, match="no column"):
    mean_ci(frame, "ndcg@10")
  # The same seed twice in a group: a run loaded twice, or setups pooled.
  with pytest.raises(ValueError, match="more than once"):
    mean_ci(pd.concat([frame, frame]), "recall@25%", by="model")
  # ... unless the rows differ by a replicate inside a run.
  doubled = pd.concat([frame.assign(replicate_seed=0), frame.assign(replicate_seed=1)])
  out = mean_ci(doubled, "recall@25%", by="model")
  assert (out["n"] == 5).all() and (out["rows"] == 10).all() and (out["unit"] == "seed").all()


def test_mean_ci_averages_replicates_within_a_world():
  # Worlds are the units: each world's value is the mean of its replicates; the interval
  # is scipy's over those world means, not over all rows.
  rng = np.random.default_rng(1)
  rows = [{"model": "m", "seed": w, "replicate_seed": r, "x": A[w] + rng.normal(0, 0.05)}
          for w in range(5) for r in range(3)]
  frame = pd.DataFrame(rows)
  worlds = frame.groupby("seed")["x"].mean().to_numpy()
  lo, hi = sps.t.interval(0.95, 4, loc=worlds.mean(), scale=sps.sem(worlds))
  row = mean_ci(frame, "x", by="model").iloc[0]
  assert row["unit"] == "seed" and row["n"] == 5 and row["rows"] == 15
  assert (row["x_lo"], row["x_hi"]) == pytest.approx((lo, hi), rel=1e-9)
  # One world: the replicates are the units.
  one = frame[frame["seed"] == 0]
  row = mean_ci(one, "x", by="model").iloc[0]
  lo, hi = sps.t.interval(0.95, 2, loc=one["x"].mean(), scale=sps.sem(one["x"]))
  assert row["unit"] == "replicate_seed" and row["n"] == 3
  assert (row["x_lo"], row["x_hi"]) == pytest.approx((lo, hi), rel=1e-9)


def test_paired_diff_matches_scipy_ttest_rel():
  per_seed, summary = paired_diff(_frame(), "recall@25%", baseline="student gt-only")
  assert list(summary["model"]) == ["student a", "student b"]
  for values, (_, row) in zip((A, B), summary.iterrows()):
    test = sps.ttest_rel(values, BASE)
    ci = test.confidence_interval(0.95)
    d = np.subtract(values, BASE)
    assert row["n"] == 5 and row["diff"] == pytest.approx(d.mean())
    assert (row["diff_lo"], row["diff_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert row["p"] == pytest.approx(test.pvalue, rel=1e-9)
  a = per_seed[per_seed["model"] == "student a"].sort_values("seed")
  np.testing.assert_allclose(a["diff"], np.subtract(A, BASE))
  np.testing.assert_allclose(a["baseline"], BASE)


def test_paired_diff_over_worlds_pairs_replicates_then_averages_them():
  rng = np.random.default_rng(2)
  rows = []
  for w in range(4):
    for r in range(2):
      noise = rng.normal(0, 0.05)  # shared by both models of a (world, replicate)
      rows += [{"model": "kd", "seed": w, "replicate_seed": r, "x": A[w] + noise + 0.01 * r},
               {"model": "gt", "seed": w, "replicate_seed": r, "x": BASE[w] + noise}]
  frame = pd.DataFrame(rows)
  per_seed, summary = paired_diff(frame, "x", baseline="gt")
  assert len(per_seed) == 8
  kd = frame[frame.model == "kd"].groupby("seed")["x"].mean()
  gt = frame[frame.model == "gt"].groupby("seed")["x"].mean()
  test = sps.ttest_rel(kd, gt)
  row = summary.iloc[0]
  assert row["unit"] == "seed" and row["n"] == 4
  assert row["p"] == pytest.approx(test.pvalue, rel=1e-9)
  ci = test.confidence_interval(0.95)
  assert (row["diff_lo"], row["diff_hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_paired_diff_removes_a_shared_seed_effect():
  # Adding a per-seed offset to every model (a harder or easier world) widens the
  # unpaired interval but leaves the paired differences exactly as they were.
  frame = _frame()
  offset = frame["seed"].map({0: 0.2, 1: -0.1, 2: 0.05, 3: -0.2, 4: 0.1})
  shifted = frame.assign(**{"recall@25%": frame["recall@25%"] + offset})
  _, before = paired_diff(frame, "recall@25%", baseline="student gt-only")
  _, after = paired_diff(shifted, "recall@25%", baseline="student gt-only")
  np.testing.assert_allclose(after[["diff", "diff_ci", "p"]], before[["diff", "diff_ci", "p"]])
  assert (mean_ci(shifted, "recall@25%", by="model")["recall@25%_ci"]
          > mean_ci(frame, "recall@25%", by="model")["recall@25%_ci"]).all()


def test_paired_diff_pairs_only_shared_seeds_and_checks_its_input():
  frame = _frame()
  frame = frame[~((frame["model"] == "student a") & (frame["seed"] == 4))]  # a lost seed
  frame = frame.sample(frac=1.0, random_state=0)  # row order does not matter
  _, summary = paired_diff(frame, "recall@25%", baseline="student gt-only")
  row = summary.set_index("model").loc["student a"]
  test = sps.ttest_rel(A[:4], BASE[:4])
  assert row["n"] == 4 and row["p"] == pytest.approx(test.pvalue, rel=1e-9)
  with pytest.raises(ValueError, match="baseline 'teacher' is not a value"):
    paired_diff(frame, "recall@25%", baseline="teacher")
  with pytest.raises(ValueError, match="more than once"):
    paired_diff(pd.concat([frame, frame]), "recall@25%", baseline="student gt-only")
  with pytest.raises(ValueError, match="replicate column"):
    paired_diff(frame.drop(columns="seed"), "recall@25%", baseline="student gt-only")
