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


# ------------------------------------------------- Holm, sign-flip test, power (issue 23)

import itertools  # noqa: E402

from prerank_jax.analysis import stats as pstats  # noqa: E402


def test_holm_on_a_hand_worked_example():
  # m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06,
  # 1·0.04 = 0.04 -> monotone: 0.06; back in the input order.
  np.testing.assert_allclose(pstats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  # The E1 example: p = 0.013 as the smallest of 16 claims -> 16 · 0.013 = 0.208;
  # as the 12th smallest (5 larger ones left) -> at least 5 · 0.013 = 0.065.
  assert pstats.holm([0.013] + [0.5] * 15)[0] == pytest.approx(0.208)
  assert pstats.holm([1e-4] * 11 + [0.013] + [0.5] * 4)[11] == pytest.approx(0.065)
  # 2 · 0.8 = 1.6 is capped at 1, and the larger p-value cannot get a smaller adjustment.
  np.testing.assert_allclose(pstats.holm([0.9, 0.8]), [1.0, 1.0])
  np.testing.assert_allclose(pstats.holm([0.04, 0.01]), [0.04, 0.02])


def _holm_rejects(p, alpha):
  """Holm's procedure as he stated it (the independent reference): sort ascending, reject
  H_(i) while p_(i) ≤ alpha / (m − i + 1), stop at the first that is not."""
  order = np.argsort(p, kind="stable")
  rejected = np.zeros(len(p), bool)
  for i, j in enumerate(order):
    if p[j] > alpha / (len(p) - i):
      break
    rejected[j] = True
  return rejected


@pytest.mark.parametrize("seed", range(5))
def test_holm_adjusted_p_rejects_what_holms_procedure_rejects(seed):
  p = np.random.default_rng(seed).uniform(0, 0.2, size=9) ** 2
  adjusted = pstats.holm(p)
  for alpha in (0.001, 0.01, 0.02, 0.05, 0.1):
    np.testing.assert_array_equal(adjusted <= alpha, _holm_rejects(p, alpha))


def test_holm_keeps_nan_in_the_family_and_refuses_bad_p():
  out = pstats.holm([0.01, math.nan, 0.02])
  assert math.isnan(out[1]) and out[0] == pytest.approx(0.03)  # m = 3, not 2
  with pytest.raises(ValueError, match="pvalues"):
    pstats.holm([0.5, 1.5])


def _brute_sign_flip(d, alternative, null=0.0):
  """Every one of the 2^n sign vectors, enumerated with itertools (independent reference)."""
  e = np.asarray(d, float) - null
  obs, hits, total = e.sum(), 0, 0
  for signs in itertools.product((1.0, -1.0), repeat=len(e)):
    s = float(np.dot(signs, e))
    total += 1
    hits += {"greater": s >= obs - 1e-12, "less": s <= obs + 1e-12,
             "two-sided": abs(s) >= abs(obs) - 1e-12}[alternative]
  return hits / total


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("d", [[0.02, 0.01, 0.03, -0.005, 0.015],
                               [0.004, -0.002, 0.011, 0.007, 0.001, -0.003, 0.009],
                               [-0.01, -0.02, -0.015], [0.5, 0.25, -0.25, 0.125]])
def test_sign_flip_is_brute_force_enumeration_and_scipys_permutation_test(d, alternative):
  p = pstats.sign_flip_test(d, alternative=alternative)
  assert p == pytest.approx(_brute_sign_flip(d, alternative), abs=1e-15)
  ref = sps.permutation_test((np.asarray(d),), np.mean, permutation_type="samples",
                             alternative=alternative, n_resamples=np.inf).pvalue
  assert p == pytest.approx(ref, abs=1e-12)
  shifted = pstats.sign_flip_test(d, alternative=alternative, null=0.004)
  assert shifted == pytest.approx(_brute_sign_flip(d, alternative, null=0.004), abs=1e-15)


@pytest.mark.parametrize("n", [1, 3, 5, 10])
def test_sign_flip_floor_is_two_to_the_one_minus_n(n):
  d = np.linspace(0.01, 0.02, n)  # every world positive: the most extreme pattern
  assert pstats.sign_flip_test(d) == pytest.approx(min(1.0, 2.0 ** (1 - n)))
  assert pstats.sign_flip_test(d, alternative="greater") == pytest.approx(2.0 ** -n)
  with pytest.raises(ValueError, match="non-finite"):
    pstats.sign_flip_test([0.1, math.nan])
  with pytest.raises(ValueError, match="alternative"):
    pstats.sign_flip_test(d, alternative="bigger")


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_t_p_is_scipys_ttest(alternative):
  d = np.asarray(A) - np.asarray(BASE)
  for null in (0.0, 0.03):
    ref = sps.ttest_1samp(d, null, alternative=alternative).pvalue
    assert pstats.paired_t_p(d, alternative=alternative, null=null) == pytest.approx(ref, rel=1e-9)


def test_equivalence_p_is_the_larger_one_sided_p_of_tost():
  d = np.array([0.002, -0.001, 0.004, 0.0, 0.003, -0.002])
  margin = 0.005
  ref = max(sps.ttest_1samp(d, -margin, alternative="greater").pvalue,
            sps.ttest_1samp(d, margin, alternative="less").pvalue)
  assert pstats.equivalence_p(d, margin) == pytest.approx(ref, rel=1e-9)
  # TOST at α rejects exactly when the (1 − 2α) t-interval lies inside ±margin.
  lo, hi = sps.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
  assert (pstats.equivalence_p(d, margin) < 0.05) == (-margin < lo and hi < margin)
  perm = max(_brute_sign_flip(d, "greater", -margin), _brute_sign_flip(d, "less", margin))
  assert pstats.equivalence_p(d, margin, test="sign-flip") == pytest.approx(perm)
  with pytest.raises(ValueError, match="margin"):
    pstats.equivalence_p(d, 0.0)


@pytest.mark.parametrize("n", [5, 10, 23])
def test_t_power_is_scipys_noncentral_t(n):
  sd, effect = 0.012, 0.008
  lam, c = effect * math.sqrt(n) / sd, sps.t.ppf(0.975, n - 1)
  ref = sps.nct.sf(c, n - 1, lam) + sps.nct.cdf(-c, n - 1, lam)
  assert pstats.t_power(effect, sd, n) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("n", [5, 10, 20])
def test_mde_has_80_percent_power_and_matches_the_closed_forms(n):
  sd = 0.01
  mde = pstats.min_detectable_effect(sd, n)
  lam, c = mde * math.sqrt(n) / sd, sps.t.ppf(0.975, n - 1)
  power = sps.nct.sf(c, n - 1, lam) + sps.nct.cdf(-c, n - 1, lam)
  assert power == pytest.approx(0.8, abs=1e-9)
  # The textbook closed form (t_{1-α/2} + t_{power}) · sd / √n, a close approximation.
  approx = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
  assert mde == pytest.approx(approx, rel=0.03)


def test_mde_tends_to_the_normal_closed_form_and_scales_with_sd():
  n, sd = 4000, 0.02
  normal = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / math.sqrt(n)
  assert pstats.min_detectable_effect(sd, n) == pytest.approx(normal, rel=2e-3)
  assert pstats.min_detectable_effect(2 * sd, 10) == pytest.approx(
      2 * pstats.min_detectable_effect(sd, 10), rel=1e-9)
  assert math.isnan(pstats.min_detectable_effect(sd, 1))
  assert pstats.min_detectable_effect(0.0, 5) == 0.0


@pytest.mark.parametrize("sd", [0.005, 0.012, 0.03])
def test_worlds_needed_is_the_first_world_count_that_reaches_the_target(sd):
  n = pstats.worlds_needed(sd, 0.01)
  assert pstats.min_detectable_effect(sd, n) <= 0.01
  assert n == 2 or pstats.min_detectable_effect(sd, n - 1) > 0.01
  m = pstats.worlds_needed(sd, 0.005, equivalence=True)
  assert pstats.tost_power(sd, m, 0.005) >= 0.8 > pstats.tost_power(sd, m - 1, 0.005)
  # Large n: TOST at true difference 0 needs (z_{1-α} + z_{1-β/2})² sd² / δ² worlds.
  big = pstats.worlds_needed(0.05, 0.005, equivalence=True)
  normal = (sps.norm.ppf(0.95) + sps.norm.ppf(0.9)) ** 2 * 0.05 ** 2 / 0.005 ** 2
  assert big == pytest.approx(normal, rel=0.02)
  assert pstats.worlds_needed(math.nan, 0.01) == -1


def test_power_stays_finite_far_in_the_tail():
  """scipy's noncentral t CDF is NaN for a large noncentrality; the power is then ~1 and
  the world count search must stay monotone (a NaN once made it answer 626 for 6)."""
  for n in (100, 500, 5000):
    assert pstats.t_power(0.01, 0.005, n) == pytest.approx(1.0)
    assert pstats.tost_power(0.02, n, 0.005) <= 1.0
  needs = [pstats.worlds_needed(sd, 0.01) for sd in (0.002, 0.005, 0.01, 0.02, 0.05)]
  assert needs == sorted(needs) and all(n >= 2 for n in needs)


@pytest.mark.parametrize("n", [5, 7, 12])
def test_tost_power_bounds_a_simulated_tost(n):
  """The 2q − 1 approximation is a lower bound of TOST's power at a true difference of 0
  (checked by simulation, 20,000 draws)."""
  sd, margin = 0.004, 0.005
  d = np.random.default_rng(n).normal(0.0, sd, size=(20_000, n))
  mean, se = d.mean(1), d.std(1, ddof=1) / math.sqrt(n)
  t = sps.t.ppf(0.95, n - 1)
  simulated = np.mean((mean - t * se > -margin) & (mean + t * se < margin))
  assert pstats.tost_power(sd, n, margin) <= simulated + 0.01
  assert pstats.tost_power(sd, n, margin) >= simulated - 0.08
