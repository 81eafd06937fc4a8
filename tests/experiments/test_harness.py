"""experiments/harness.py: the statistics against scipy, the verdict rule, the raw rows."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import harness  # noqa: E402
from harness import Claim  # noqa: E402


@pytest.mark.parametrize("values", [[0.61, 0.58, 0.66, 0.60, 0.63],
                                    [0.0125, -0.004, 0.03], [1.0, 3.0]])
def test_paired_interval_is_scipys_t_interval(values):
  a = pd.Series(values, index=range(len(values)))
  b = pd.Series(np.linspace(0.1, 0.2, len(values)), index=range(len(values)))
  d = np.asarray(values) - b.to_numpy()
  lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
  out = harness.paired_interval(a, b)
  assert out["n"] == len(values)
  assert out["diff"] == pytest.approx(d.mean(), abs=1e-12)
  assert out["lo"] == pytest.approx(lo, rel=1e-9, abs=1e-12)
  assert out["hi"] == pytest.approx(hi, rel=1e-9, abs=1e-12)


def test_paired_interval_pairs_by_world_and_needs_two():
  a = pd.Series([1.0, 2.0, 4.0], index=[3, 1, 2])
  b = pd.Series([0.5, 1.0], index=[1, 3])   # world 2 has no partner: dropped
  out = harness.paired_interval(a, b)
  assert out["n"] == 2 and out["diff"] == pytest.approx(((2.0 - 0.5) + (1.0 - 1.0)) / 2)
  one = harness.paired_interval(pd.Series([1.0]), pd.Series([0.0]))
  assert one["n"] == 1 and math.isnan(one["ci"])


@pytest.mark.parametrize("lo, hi, direction, margin, expected", [
    (0.01, 0.05, +1, 0, "reproduced"),
    (-0.05, -0.01, +1, 0, "not reproduced"),
    (-0.01, 0.02, +1, 0, "inconclusive"),
    (-0.05, -0.01, -1, 0, "reproduced"),
    (0.01, 0.05, -1, 0, "not reproduced"),
    (-0.01, 0.0, -1, 0, "inconclusive"),     # touching 0 does not exclude it
    (-0.004, 0.006, 0, 0.01, "reproduced"),
    (0.002, 0.008, 0, 0.01, "reproduced"),   # inside the margin though it excludes 0
    (0.005, 0.03, 0, 0.01, "not reproduced"),
    (-0.02, 0.005, 0, 0.01, "inconclusive"),
    (math.nan, math.nan, +1, 0, "inconclusive"),
])
def test_verdict_rule(lo, hi, direction, margin, expected):
  assert harness.verdict(lo, hi, direction, margin) == expected


def test_verdict_rejects_bad_arguments():
  with pytest.raises(ValueError, match="direction"):
    harness.verdict(0.0, 1.0, 2)
  with pytest.raises(ValueError, match="margin"):
    harness.verdict(0.0, 1.0, 0, -0.1)


def _raw(rng):
  """Two methods × 4 worlds × 2 replicates, a gt-only student per run, a teacher row."""
  rows = []
  for method, shift in (("kd", 0.05), ("other", 0.0)):
    for world in range(4):
      base = 0.5 + 0.1 * world  # a world effect that pairing removes
      for rep in (0, 1):
        noise = rng.normal(0, 0.002)
        rows.append(dict(method=method, seed=world, replicate_seed=rep, role="student",
                         point="T=2 α=0.5", program="", T=2.0, alpha=0.5,
                         **{"ndcg@10": base + shift + noise}))
        rows.append(dict(method=method, seed=world, replicate_seed=rep, role="gt-only",
                         point="gt-only", program="", T=2.0, alpha=0.0,
                         **{"ndcg@10": base + rng.normal(0, 0.002)}))
      rows.append(dict(method=method, seed=world, replicate_seed="", role="teacher",
                       point="teacher", program="", **{"ndcg@10": base + 0.2}))
  return pd.DataFrame(rows)


def test_claims_pair_by_world_and_average_replicates():
  frame = _raw(np.random.default_rng(0))
  out = harness.claim_result(frame, Claim("kd beats gt-only", "kd", "ndcg@10", +1))
  # Independent computation: per world, mean over replicates, then the difference.
  kd = frame[(frame.method == "kd") & (frame.role == "student")].groupby("seed")["ndcg@10"].mean()
  gt = frame[(frame.method == "kd") & (frame.role == "gt-only")].groupby("seed")["ndcg@10"].mean()
  d = (kd - gt).to_numpy()
  lo, hi = stats.t.interval(0.95, 3, loc=d.mean(), scale=stats.sem(d))
  assert out["diff"] == pytest.approx(d.mean()) and out["lo"] == pytest.approx(lo)
  assert out["hi"] == pytest.approx(hi) and out["n"] == 4
  assert out["verdict"] == "reproduced"  # +0.05 with a tiny paired spread
  against = harness.claim_result(frame, Claim("other beats kd", "other", "ndcg@10", +1,
                                              against="kd", where={"T": 2.0}))
  assert against["verdict"] == "not reproduced"
  with pytest.raises(ValueError, match="no student rows of method 'nope'"):
    harness.claim_result(frame, Claim("x", "nope", "ndcg@10"))


def test_point_table_means_and_paired_difference():
  frame = _raw(np.random.default_rng(1))
  table = harness.point_table(frame, ["ndcg@10"])
  row = table[(table.method == "kd") & (table.role == "student")].iloc[0]
  assert row["worlds"] == 4 and row["replicates"] == 2
  per_world = frame[(frame.method == "kd") & (frame.role == "student")].groupby(
      "seed")["ndcg@10"].mean().to_numpy()
  lo, hi = stats.t.interval(0.95, 3, loc=per_world.mean(), scale=stats.sem(per_world))
  assert row["ndcg@10"] == pytest.approx(per_world.mean())
  assert row["ndcg@10_ci"] == pytest.approx((hi - lo) / 2)
  assert row["ndcg@10_diff"] == pytest.approx(0.05, abs=0.005)
  teacher = table[(table.method == "kd") & (table.role == "teacher")].iloc[0]
  assert "ndcg@10_diff" not in teacher or math.isnan(teacher["ndcg@10_diff"])


def test_rows_of_run_parses_points_replicates_and_programs():
  rows = harness.rows_of_run([
      {"model": "student [kd=logit_mse] T=2 α=0.5 lr=0.003 seed=3", "T": 2.0,
       "replicate_seed": 3, "ndcg@10": 0.6, "status": "ok"},
      {"model": "student gt-only seed=3", "replicate_seed": 3, "ndcg@10": 0.5,
       "status": "ok"},
      {"model": "teacher", "ndcg@10": 0.8, "status": "reference"},
      {"model": "oracle (truth)", "ndcg@10": 1.0, "status": "reference"},
  ], experiment="e", method="m", world_seed=7, run_s=1.234)
  assert [(r["role"], r["point"], r["program"], r["replicate_seed"]) for r in rows] == [
      ("student", "T=2 α=0.5 lr=0.003", "kd=logit_mse", 3), ("gt-only", "gt-only", "", 3),
      ("teacher", "teacher", "", ""), ("reference", "oracle (truth)", "", "")]
  assert all(r["seed"] == 7 and r["method"] == "m" and r["run_s"] == 1.23 for r in rows)
  assert all("load_1m" not in r for r in rows)
  loaded = harness.rows_of_run([{"model": "teacher", "ndcg@10": 0.8}], experiment="e",
                               method="m", world_seed=7, run_s=1.0, load_1m=3.456)
  assert loaded[0]["load_1m"] == 3.46 and list(loaded[0])[-2:] == ["run_s", "load_1m"]


def test_append_rows_keeps_old_rows_and_unions_columns(tmp_path):
  path = tmp_path / "e" / "raw.csv"
  harness.append_rows(path, [{"a": 1, "b": 2}])
  harness.append_rows(path, [{"a": 3, "b": 4}])
  harness.append_rows(path, [{"a": 5, "c": 6}])
  frame = pd.read_csv(path)
  assert list(frame.columns) == ["a", "b", "c"]
  assert frame["a"].tolist() == [1, 3, 5]
  assert frame["c"].isna().tolist() == [True, True, False]


def test_an_interrupted_run_keeps_the_kept_rows(tmp_path, monkeypatch):
  """run_methods writes raw.partial.csv and replaces raw.csv only when every world ran: a
  run that fails in its second world leaves the kept raw.csv as it was."""
  import types

  from prerank_jax.host import runner
  kept = tmp_path / "e" / "raw.csv"
  harness.append_rows(kept, [{"method": "old", "ndcg@10": 0.5}])
  before = kept.read_text()
  calls = []

  def fake_run(config):
    calls.append(int(config.seed))
    if len(calls) > 1:
      raise RuntimeError("killed in world 1")
    return types.SimpleNamespace(run_dir=tmp_path / "run", rows=[
        {"model": "teacher", "ndcg@10": 0.8, "status": "reference"}])

  monkeypatch.setattr(runner, "run", fake_run)
  methods = [harness.Method("m", {})]
  with pytest.raises(RuntimeError, match="world 1"):
    harness.run_methods("e", methods, (0, 1), out=tmp_path, smoke=True, log=lambda s: None)
  assert kept.read_text() == before and calls == [0, 1]
  calls.clear()
  monkeypatch.setattr(runner, "run", lambda config: (calls.append(0), types.SimpleNamespace(
      run_dir=tmp_path / "run", rows=[{"model": "teacher", "ndcg@10": 0.8}]))[1])
  assert harness.run_methods("e", methods, (0, 1), out=tmp_path, smoke=True,
                             log=lambda s: None) == kept
  assert pd.read_csv(kept)["seed"].tolist() == [0, 1]
  assert not (tmp_path / "e" / "raw.partial.csv").exists()


def test_set_path_refuses_a_typo():
  from prerank_jax.config_files import repo_config
  config = repo_config("quickstart", "smoke")
  harness.set_path(config, "student.loss.options.kd_temperature_squared", False)
  assert config.student.loss.options.kd_temperature_squared is False
  with pytest.raises(KeyError, match="student.loss.kdd"):
    harness.set_path(config, "student.loss.kdd", "x")


def test_summary_from_raw_rows_alone(tmp_path):
  frame = _raw(np.random.default_rng(2))
  frame.to_csv(tmp_path / "raw.csv", index=False)
  exp = harness.Experiment(
      name="t", title="T", methods=lambda smoke: [], metrics=("ndcg@10",),
      claims=[Claim("kd beats gt-only", "kd", "ndcg@10", +1)],
      figures=lambda f, t, d: [harness.diff_bars(t, "ndcg@10", d / "bars.png", title="x")])
  text = harness.summarize(exp, tmp_path, "python experiments/t.py")
  assert "Produced by `python experiments/t.py`" in text
  assert "| kd beats gt-only | ndcg@10 | gt-only (same runs) |" in text
  assert "**reproduced**" in text
  assert (tmp_path / "bars.png").stat().st_size > 1000
  assert (tmp_path / "summary.md").read_text() == text


@pytest.mark.parametrize("smoke", [True, False])
@pytest.mark.parametrize("name", ["e1_exposure", "e2_hinton", "e3_ba_caruana",
                                  "e4_ranking_distillation", "e5_teacher_quality",
                                  "e6_ensembles", "e7_loss_families", "e8_pareto"])
def test_every_method_of_every_experiment_is_a_valid_config(name, smoke):
  """Without training: each method's overrides apply and validate, names are distinct,
  and every claim names a method of the experiment."""
  import importlib
  from prerank_jax.config import validate_config
  module = importlib.import_module(name)
  exp = module.experiment(smoke) if hasattr(module, "experiment") else module.EXPERIMENT
  if name == "e3_ba_caruana":
    exp = module.experiment(16.0 if smoke else module.TEMPERATURES[-1])
  methods = exp.methods(smoke)
  assert len({m.name for m in methods}) == len(methods) >= 2
  for method in methods:
    config = harness.base_config(0, smoke=smoke, replicates=(0, 1))
    for path, value in method.overrides.items():
      harness.set_path(config, path, value)
    validate_config(config)
  names = {m.name for m in methods}
  for claim in exp.claims:
    assert claim.method in names and (claim.against is None or claim.against in names)
    assert claim.metric in harness.PRIMARY_METRICS, (claim.text, claim.metric)
  assert len(exp.world_seeds) >= 10  # new runs: 10 world seeds by default


def test_e3_gradient_check_tends_to_logit_matching():
  """Hinton et al. 2015 §2.1: for zero-mean logits the T²-scaled KD gradient tends to the
  logit-MSE gradient (up to a constant factor) as T grows."""
  import e3_ba_caruana
  check = e3_ba_caruana.gradient_cosines((1.0, 4.0, 16.0, 128.0))
  cos = check["cosine (zero-mean)"].to_numpy()
  assert np.all(np.diff(cos) > 0) and cos[0] < 0.95 and cos[-1] > 0.999
  ratio = check["‖∇ hinton‖ / ‖∇ mse‖"].to_numpy()
  assert abs(ratio[-1] - ratio[-2]) < 1e-3  # a constant rescaling at high T


@pytest.mark.parametrize("smoke", [True, False])
def test_simulator_soundness_methods_are_valid_configs(smoke):
  import simulator_soundness
  from prerank_jax.config import validate_config
  exp = simulator_soundness.EXPERIMENT
  for method in exp.methods(smoke):
    config = harness.base_config(0, smoke=smoke, replicates=(0, 1))
    for path, value in method.overrides.items():
      harness.set_path(config, path, value)
    validate_config(config)
  names = {m.name for m in exp.methods(smoke)}
  assert all(c.method in names and c.against in names | {None} for c in exp.claims)


def test_claims_compare_other_roles():
  """role / against_role: a method's teacher against another method's teacher, and a
  teacher against the gt-only student; an absent role names itself in the error."""
  frame = _raw(np.random.default_rng(3))
  out = harness.claim_result(frame, Claim("kd's teacher ≈ other's teacher", "kd", "ndcg@10",
                                          0, role="teacher", against="other",
                                          against_role="teacher", margin=0.01))
  assert out["diff"] == pytest.approx(0.0, abs=1e-12) and out["verdict"] == "reproduced"
  out = harness.claim_result(frame, Claim("teacher beats gt-only", "kd", "ndcg@10", +1,
                                          role="teacher", against="kd",
                                          against_role="gt-only"))
  gt = frame[(frame.method == "kd") & (frame.role == "gt-only")].groupby("seed")["ndcg@10"].mean()
  assert out["diff"] == pytest.approx((0.5 + 0.1 * np.arange(4) + 0.2 - gt.to_numpy()).mean())
  assert out["verdict"] == "reproduced" and out["against"] == "kd gt-only"
  with pytest.raises(ValueError, match="no reference rows of method 'kd'"):
    harness.claim_result(frame, Claim("x", "kd", "ndcg@10", role="reference"))


def test_letor_lines_are_libsvm_ranking_lines():
  import letor_world
  features = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) / 4
  grades = np.array([[3, 0, 1], [2, 2, 0]])
  valid = np.array([[True, True, False], [True, False, False]])
  assert letor_world.letor_lines(features, grades, valid, "te") == [
      "3 qid:te0 1:0 2:0.25", "0 qid:te0 1:0.5 2:0.75", "2 qid:te1 1:1.5 2:1.75"]


@pytest.fixture(scope="module")
def letor_workdir(tmp_path_factory):
  return tmp_path_factory.mktemp("letor")


@pytest.mark.parametrize("name", ["e1_exposure", "e2_hinton", "e7_loss_families"])
def test_letor_variants_write_the_world_and_validate(name, letor_workdir):
  """--letor (smoke): each method's config points at its world's LETOR files, which hold
  the world's true grades and features (a line per valid candidate, split qids disjoint),
  and validates; the full variant's overrides validate too (without writing its world)."""
  import importlib
  import letor_world
  from prerank_jax.config import validate_config
  from prerank_jax.data import letor
  from prerank_jax.data.simulator import simulate
  exp = letor_world.letor_experiment(importlib.import_module(name).EXPERIMENT)
  assert exp.name == f"{name}_letor" and exp.base == "letor"
  assert len(exp.world_seeds) >= 5 and tuple(exp.replicates) == (0,)  # ≥ 5 world seeds
  for method in exp.methods(True):
    config = harness.base_config(0, smoke=True, replicates=(0, 1), base=exp.base)
    for path, value in method.overrides.items():
      harness.set_path(config, path, value)
    config.workdir = str(letor_workdir)
    exp.configure(config, method)
    validate_config(config)
    assert config.dataset == "letor"
    assert config.source.num_exposed == config.data.num_exposed
    assert config.source.position_bias == config.data.position_bias
    assert (config.source.logging_feature != 0) == (config.data.logging_popularity > 0)
  folder = Path(config.source.manual_dir)
  parsed = {s: letor.parse_file(folder / f) for s, f, _ in letor_world.SPLIT_FILES}
  letor.check_disjoint_splits(parsed, {s: f for s, f, _ in letor_world.SPLIT_FILES})
  world = simulate(letor_world.world_params(dict(config.data)), seed=0)
  test, written = world["test"], parsed["test"]
  assert len(written.qids) == test.valid.shape[0]
  for r in (0, len(written.qids) - 1):
    keep = np.asarray(test.valid[r])
    np.testing.assert_array_equal(written.labels[r], np.asarray(test.true_relevance[r])[keep])
    np.testing.assert_allclose(written.features[r][:, 1 + len(test.context[r])],
                               np.asarray(test.items[r])[keep, 0], rtol=1e-5, atol=1e-6)
  for method in exp.methods(False):
    config = harness.base_config(0, smoke=False, replicates=(0,), base=exp.base)
    for path, value in method.overrides.items():
      harness.set_path(config, path, value)
    validate_config(config)


# ------------------------------------------- issue 23: multiplicity, fragility, drops


def _world_frame(diffs, *, method="kd", status=None, extra=None):
  """One student and one gt-only row per world; the student is gt-only + diffs[w]."""
  rows = []
  for w, d in enumerate(diffs):
    base = 0.5 + 0.03 * w
    rows.append(dict(method=method, seed=w, replicate_seed=0, role="gt-only", point="gt-only",
                     program="", status="ok", **{"recall@25%": base, "ndcg@10": base}))
    rows.append(dict(method=method, seed=w, replicate_seed=0, role="student", point="p",
                     program="", status=(status or {}).get(w, "ok"),
                     **{"recall@25%": base + d, "ndcg@10": base + 2 * d}))
  return pd.DataFrame(rows + list(extra or []))


def _with_p(p: float, n: int = 10, mean: float = 0.01) -> np.ndarray:
  """n paired differences whose two-sided t-test p-value is exactly ``p``."""
  z = np.sin(np.arange(n) + 0.5)
  z = (z - z.mean()) / z.std(ddof=1)
  t = stats.t.ppf(1 - p / 2, n - 1)
  return mean + (mean * math.sqrt(n) / t) * z


def test_holm_is_applied_within_the_experiment_and_names_the_verdict():
  """Raw p 0.03, 0.04 and 0.5: each of the first two is 'reproduced' alone; Holm over the
  three gives 3 · 0.03 = 0.09 and max(0.09, 2 · 0.04) = 0.09, so both turn
  'inconclusive' while their raw verdicts stay 'reproduced'."""
  frame = pd.concat([_world_frame(_with_p(0.03), method="a"),
                     _world_frame(_with_p(0.04), method="b"),
                     _world_frame(_with_p(0.5), method="c")], ignore_index=True)
  claims = [Claim(n, n, "recall@25%", +1) for n in "abc"]
  out = harness.judge_claims(frame, claims)
  assert [r["p_t"] for r in out] == pytest.approx([0.03, 0.04, 0.5], rel=1e-6)
  assert [r["holm_t"] for r in out] == pytest.approx([0.09, 0.09, 0.5], rel=1e-6)
  assert [r["raw_verdict"] for r in out] == ["reproduced", "reproduced", "inconclusive"]
  assert [r["verdict"] for r in out] == ["inconclusive"] * 3
  alone = harness.claim_result(frame, claims[0])  # a family of one: Holm changes nothing
  assert alone["holm_t"] == pytest.approx(0.03) and alone["verdict"] == "reproduced"


def test_five_worlds_are_fragile_and_ten_are_not():
  """With 5 worlds the sign-flip test cannot go below 2^-4 = 0.0625, so a clear t-test
  call is labelled fragile; with 10 worlds all positive it reaches 2^-9 and is not."""
  five = harness.claim_result(_world_frame([0.05, 0.052, 0.049, 0.051, 0.05]),
                              Claim("kd beats gt-only", "kd", "recall@25%", +1))
  assert five["verdict"] == "reproduced" and five["fragile"]
  assert five["p_perm"] == pytest.approx(0.0625)
  ten = harness.claim_result(_world_frame(0.05 + 0.001 * np.sin(np.arange(10))),
                             Claim("kd beats gt-only", "kd", "recall@25%", +1))
  assert ten["verdict"] == "reproduced" and not ten["fragile"]
  assert ten["p_perm"] == pytest.approx(2.0 ** -9)


def test_mde_and_worlds_needed_come_from_the_paired_sd():
  d = np.array([0.01, 0.03, -0.01, 0.02, 0.0, 0.025])
  r = harness.claim_result(_world_frame(d), Claim("c", "kd", "recall@25%", +1))
  assert r["sd"] == pytest.approx(d.std(ddof=1))
  assert r["mde"] == pytest.approx(harness.stats.min_detectable_effect(d.std(ddof=1), 6))
  assert r["needs"] == harness.stats.worlds_needed(d.std(ddof=1), 0.01)
  assert harness._needs(r) == f"needs {r['needs']} worlds for 0.01"


def test_diverged_and_non_finite_rows_are_counted_and_a_missing_world_is_marked():
  d = [0.02, 0.021, 0.019, 0.02, 0.022]
  frame = _world_frame(d, status={1: "diverged"})
  frame.loc[(frame.seed == 3) & (frame.role == "student"), "recall@25%"] = np.nan
  r = harness.claim_result(frame, Claim("c", "kd", "recall@25%", +1))
  assert r["dropped"] == {"diverged": 1, "non-finite": 1}
  assert r["missing"] == [1, 3] and r["n"] == 3
  kept = np.array([d[0], d[2], d[4]])
  assert r["diff"] == pytest.approx(kept.mean())  # computed on the worlds present
  text = harness.markdown_claims([harness.judge_claims(frame, [Claim("c", "kd", "recall@25%")])[0]])
  assert "1 diverged, 1 non-finite; **missing worlds [1, 3]**" in text
  # A world that keeps one of two replicates still counts, on the replicate it has.
  two = pd.concat([frame, frame[(frame.seed == 1) & (frame.role == "student")].assign(
      status="ok", replicate_seed=1)], ignore_index=True)
  assert harness.claim_result(two, Claim("c", "kd", "recall@25%", +1))["missing"] == [3]


def test_equivalence_uses_the_metrics_own_margin():
  frame = _world_frame([0.003, -0.002, 0.001, 0.0, 0.002, -0.001, 0.001, 0.0, 0.002, -0.001])
  recall = harness.claim_result(frame, Claim("≈", "kd", "recall@25%", 0))
  assert recall["margin"] == harness.MARGINS["recall@25%"] == 0.005
  assert recall["verdict"] == "reproduced"
  assert recall["p_t"] == pytest.approx(harness.stats.equivalence_p(
      np.array([0.003, -0.002, 0.001, 0.0, 0.002, -0.001, 0.001, 0.0, 0.002, -0.001]), 0.005))
  wide = harness.claim_result(frame, Claim("≈", "kd", "recall@25%", 0, margin=0.001))
  assert wide["margin"] == 0.001 and wide["verdict"] == "inconclusive"
  assert recall["secondary"]["ndcg@10"]["margin"] == harness.MARGINS["ndcg@10"]


def test_figure_data_holds_what_is_plotted(tmp_path):
  import json
  plt = harness.pyplot()
  fig, ax = plt.subplots()
  ax.plot([1, 2, 3], [0.1, 0.2, 0.3], label="a")
  ax.barh([0, 1], [0.5, -0.25])
  ax.set_title("t")
  path = harness.save_figure(fig, tmp_path / "f.png")
  data = json.loads(path.with_suffix(".json").read_text())
  axes = data["axes"][0]
  assert axes["title"] == "t" and axes["lines"][0]["y"] == [0.1, 0.2, 0.3]
  assert [p[2] for p in axes["patches"]] == [0.5, -0.25]  # bar widths: the plotted values
  fig, ax = plt.subplots()
  harness.save_figure(fig, tmp_path / "blank.png")
  blank = json.loads((tmp_path / "blank.json").read_text())["axes"][0]
  assert not blank["lines"] and not blank["patches"]


def test_every_experiment_declares_a_primary_metric_and_e9_is_listed():
  """Every experiment the findings page reads (E1–E9, soundness, the LETOR variants)
  declares a primary metric of PRIMARY_METRICS per claim; claims across teachers (the
  oracle claims, E5's over-parameterised teacher, E6's ensembles against one teacher)
  declare the common-reference cascade metric."""
  import print_findings
  names = [d for d, _, _ in print_findings.EXPERIMENTS]
  assert "e9_recflow" in names and len(names) == len(set(names))
  cross = []
  for results_dir, script, _ in print_findings.EXPERIMENTS:
    exp = print_findings.experiment_of(results_dir, script)
    for claim in exp.claims:
      assert claim.metric in harness.PRIMARY_METRICS, (results_dir, claim.text, claim.metric)
      if claim.metric == harness.CROSS_TEACHER:
        cross.append((results_dir, claim.method, claim.against))
        assert claim.against is not None and claim.against != claim.method
        assert "re-ranked by the oracle" in claim.text  # stated in the claim itself
    # New runs: 10 world seeds. E9's script (not this file's area) still defaults to the
    # 4 worlds of its kept run; its owner raises it with the re-run.
    assert len(exp.world_seeds) >= 10 or results_dir == "e9_recflow", results_dir
  assert sorted({d for d, _, _ in cross}) == ["e1_exposure", "e1_exposure_letor",
                                             "e5_teacher_quality", "e6_ensembles"]


def test_a_primary_metric_absent_from_the_rows_is_not_judged_and_stays_in_the_family():
  """Rows kept from before a metric existed: the claim says 'needs a re-run' (no fall-back
  to another metric), its secondary metrics are still computed, and it counts in Holm's m
  (the other claim is corrected over 2, not 1)."""
  d = _with_p(0.02)
  frame = _world_frame(d)
  claims = [Claim("kd beats gt-only", "kd", "recall@25%", +1),
            Claim("kd beats gt-only on the common-reference cascade", "kd",
                  harness.CROSS_TEACHER, +1)]
  assert harness.CROSS_TEACHER not in frame.columns
  judged, absent = harness.judge_claims(frame, claims)
  assert absent["verdict"] == absent["raw_verdict"] == harness.NOT_JUDGED
  assert absent["n"] == 0 and math.isnan(absent["p_t"]) and not absent["fragile"]
  assert absent["secondary"]["recall@25%"]["diff"] == pytest.approx(d.mean())
  assert judged["holm_t"] == pytest.approx(2 * 0.02)
  text = harness.markdown_claims([judged, absent])
  row = [line for line in text.splitlines() if "common-reference" in line][0]
  assert f"**{harness.NOT_JUDGED}**" in row and "needs a re-run" in row
  assert "n/a" in row and f"no {harness.CROSS_TEACHER} column" in row
  # Once the column exists, the same claim is judged on it.
  frame[harness.CROSS_TEACHER] = frame["recall@25%"]
  again = harness.judge_claims(frame, claims)[1]
  assert again["verdict"] != harness.NOT_JUDGED and again["n"] == len(d)


def _e8_frame(valid: bool) -> pd.DataFrame:
  """Two distilled students and their gt-only points over 3 worlds: 'cheap' (10 FLOPs) and
  'dear' (100 FLOPs). On test the dear one is better; on validation the cheap one is."""
  rows = []
  for method, flops, test, val in (("cheap", 10.0, 0.50, 0.60), ("dear", 100.0, 0.55, 0.58)):
    for w in range(3):
      for role, shift in (("student", 0.0), ("gt-only", -0.05)):
        row = dict(method=method, seed=w, replicate_seed=0, role=role, point=role,
                   program="", status="ok", **{"flops/cand": flops,
                                               "recall@25%": test + shift + 0.01 * w,
                                               "ndcg@10": 0.4, "R@(10,25%)": 0.3})
        if valid:
          row["valid/recall@25%"] = val + shift + 0.01 * w
        rows.append(row)
  return pd.DataFrame(rows)


@pytest.mark.parametrize("valid", [True, False])
def test_e8_front_is_chosen_on_validation_or_not_drawn(valid, tmp_path):
  """With valid/ columns the front holds the points no other dominates on validation
  (here only 'cheap', though 'dear' is better on test); without them there is no front
  and the summary says a re-run is needed."""
  import json
  import e8_pareto
  frame = _e8_frame(valid)
  exp = e8_pareto.experiment(False)
  table = harness.point_table(frame, exp.metrics)
  (path,) = e8_pareto.figures(frame, table, tmp_path)
  lines = json.loads(path.with_suffix(".json").read_text())["axes"][0]["lines"]
  front = [line for line in lines if line["label"].startswith("Pareto front")]
  note = e8_pareto.notes(frame)
  if valid:
    assert len(front) == 1 and front[0]["x"] == [10.0] and front[0]["y"] == [pytest.approx(0.51)]
    assert "valid/recall@25%" in front[0]["label"] and "test split never chooses" in note
  else:
    assert not front and "needs a re-run" in note and "No Pareto front" in note


def _two_claims(d_a, d_b):
  return pd.concat([_world_frame(d_a, method="a"), _world_frame(d_b, method="b")],
                   ignore_index=True)


_STABILITY_CLAIMS = [Claim("a beats gt-only", "a", "recall@25%", +1),
                     Claim("b beats gt-only", "b", "recall@25%", +1)]


def test_compare_verdicts_flags_a_non_fragile_flip_only():
  """10 worlds: claim a is firmly reproduced in the kept run (sign-flip p 2^-9) and
  inconclusive in the other layout: a non-fragile flip, flagged. Claim b is the same in
  both: not changed."""
  firm = 0.05 + 0.001 * np.sin(np.arange(10))
  noisy = 0.05 * np.sin(np.arange(10))
  steady = 0.03 + 0.002 * np.cos(np.arange(10))
  kept, other = _two_claims(firm, steady), _two_claims(noisy, steady)
  rows = harness.compare_verdicts(kept, other, _STABILITY_CLAIMS)
  a, b = rows
  assert a["kept"]["verdict"] == "reproduced" and not a["kept"]["fragile"]
  assert a["other"]["verdict"] == "inconclusive"
  assert a["changed"] and a["flagged"] and not b["changed"] and not b["flagged"]
  text = harness.markdown_comparison(rows, "kept", "group4")
  assert "non-fragile flips: 1 — **a beats gt-only**" in text
  assert "| a beats gt-only | recall@25% |" in text and "**non-fragile flip**" in text
  # Identical runs: nothing changes.
  same = harness.compare_verdicts(kept, kept.copy(), _STABILITY_CLAIMS)
  assert not any(r["changed"] for r in same)


def test_compare_verdicts_allows_a_fragile_flip_and_uses_the_shared_worlds():
  """5 worlds: every called verdict is fragile (sign-flip floor 0.0625), so a flip is
  reported as changed but not flagged. The other run's extra worlds are left out."""
  firm = 0.05 + 0.001 * np.sin(np.arange(5))
  noisy = 0.05 * np.sin(np.arange(5))
  kept = _two_claims(firm, firm)
  other = _two_claims(np.r_[noisy, [0.3, 0.3]], np.r_[firm, [-0.5, -0.5]])
  a, b = harness.compare_verdicts(kept, other, _STABILITY_CLAIMS)
  assert a["kept"]["fragile"] and a["changed"] and not a["flagged"]
  assert a["worlds"] == [0, 1, 2, 3, 4] and a["other"]["n"] == 5
  assert not b["changed"]  # worlds 5 and 6 (strongly negative) are not compared
  with pytest.raises(ValueError, match="share no world"):
    harness.compare_verdicts(kept, other[other.seed >= 5], _STABILITY_CLAIMS)


def test_cli_group_size_folder_and_compare_to(tmp_path, capsys):
  """``--group-size 4`` names its own results folder and ``--compare-to`` writes
  stability.md and exits 1 on a non-fragile flip (here from kept raw rows, no training)."""
  firm = 0.05 + 0.001 * np.sin(np.arange(10))
  steady = 0.03 + 0.002 * np.cos(np.arange(10))
  exp = harness.Experiment(name="t", title="T", methods=lambda smoke: [],
                           claims=_STABILITY_CLAIMS, metrics=("recall@25%",),
                           figures=lambda f, t, d: [])
  (tmp_path / "t").mkdir()
  (tmp_path / "t-group4").mkdir()
  _two_claims(firm, steady).to_csv(tmp_path / "t" / "raw.csv", index=False)
  _two_claims(firm, steady).to_csv(tmp_path / "t-group4" / "raw.csv", index=False)
  argv = ["--from-results", "--group-size", "4", "--out", str(tmp_path),
          "--compare-to", str(tmp_path / "t")]
  assert harness.main(exp, argv) == tmp_path / "t-group4"
  report = (tmp_path / "t-group4" / "stability.md").read_text()
  assert "verdicts changed: 0; non-fragile flips: 0." in report
  summary = (tmp_path / "t-group4" / "summary.md").read_text()
  assert "`python experiments/t.py --group-size 4 --out" in summary
  assert "--compare-to" not in summary  # a check, not part of how the rows were made
  _two_claims(0.05 * np.sin(np.arange(10)), steady).to_csv(tmp_path / "t-group4" / "raw.csv",
                                                           index=False)
  with pytest.raises(SystemExit, match="1 non-fragile verdict flip"):
    harness.main(exp, argv)
  assert "**non-fragile flip**" in (tmp_path / "t-group4" / "stability.md").read_text()
  with pytest.raises(SystemExit, match="no raw.csv"):
    harness.main(exp, [*argv[:-1], str(tmp_path / "absent")])
