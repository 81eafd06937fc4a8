"""E9 (experiments/e9_recflow.py): its arms configure valid RecFlow runs without training,
``--recflow-dir`` points them at RecFlow's own days and refuses missing files before
anything is written, and (slow) a tiny run of the harness trains both protocols end to end
and rebuilds its summary from ``raw.csv`` alone."""

import dataclasses
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
import e9_recflow  # noqa: E402
import harness  # noqa: E402


@pytest.fixture
def state(monkeypatch, tmp_path):
  """A fresh ``e9_recflow._STATE`` (worlds written under ``tmp_path``)."""
  fresh = {"recflow_dir": None, "smoke": False, "worlds": {}, "tmp": tmp_path}
  monkeypatch.setattr(e9_recflow, "_STATE", fresh)
  return fresh


def _configured(method, smoke):
  config = harness.base_config(3, smoke=smoke, base="recflow")
  for path, value in method.overrides.items():
    harness.set_path(config, path, value)
  e9_recflow.configure(config, method)
  return config


def test_every_arm_is_a_valid_recflow_run_on_its_world(state):
  from prerank_jax.config import validate_config
  from prerank_jax.data.recflow import id_vocab, load_pickle
  from prerank_jax.losses.registry import KD_LOSSES
  methods = e9_recflow.methods(True)
  assert [m.name for m in methods] == ["coarse", "lcron"]
  for method in methods:
    config = _configured(method, True)
    validate_config(config)
    assert config.source.recflow_protocol == method.name
    assert (config.student.model.name, config.teacher.model.name) == ("dssm", "din")
    world = Path(config.source.manual_dir)
    assert world == state["tmp"] / "world3" and (world / "all_stage").is_dir()
    assert config.source.data_dir == str(world / "prepared" / method.name)
    vocab = id_vocab(load_pickle(world / "others" / "id_cnt.pkl"))
    assert tuple(config.student.model.item_vocab) == tuple(vocab.items)
    assert tuple(config.teacher.model.context_vocab) == tuple(vocab.context)
    assert config.source.valid_fraction == 0.1  # the simulated worlds' kept results
  assert list(state["worlds"]) == [3]  # one world per seed, shared by both protocols
  assert set(e9_recflow.LOSSES) <= set(KD_LOSSES)
  claims = e9_recflow.CLAIMS
  assert len(claims) == 2 * len(e9_recflow.LOSSES)
  for claim in claims:
    assert claim.method in {"coarse", "lcron"} and claim.against is None
    assert claim.metric == e9_recflow.PRIMARY[claim.method] and claim.direction == +1
  assert {c.metric for c in claims} == {"joint_recall@10@20", "recflow_recall@50"}


def test_recflow_dir_uses_recflows_days_and_writes_no_world(state, tmp_path):
  state["recflow_dir"] = str(tmp_path / "RecFlow")
  for method in e9_recflow.methods(False):
    config = _configured(method, False)
    assert config.source.manual_dir == str(tmp_path / "RecFlow")
    assert config.source.data_dir == ""  # RecFlow is prepared once, where TFDS keeps data
    days = {"coarse": "2024-01-13:2024-02-17", "lcron": "2024-01-13:2024-02-03"}
    assert config.source.recflow_train_days == days[method.name]
    # The valid split, read whole, stays under a day of RecFlow's requests; the train
    # split stays in its records.
    assert config.source.valid_fraction == 0.02
    assert (config.input_pipeline, config.streaming.read_from) == ("grain", "records")
  assert state["worlds"] == {}


def test_missing_recflow_files_are_refused_before_anything_is_written(state, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(SystemExit, match=r"(?s)id_cnt\.pkl.*missing.*Licence.*CC BY-SA 4\.0"):
    e9_recflow.main(["--recflow-dir", str(tmp_path / "empty"), "--out", str(out)])
  assert not out.exists()


@pytest.mark.slow
def test_tiny_run_then_rebuild_from_results(tmp_path, monkeypatch):
  """The harness end to end, cut to fit CI: the coarse protocol's --smoke config
  (DSSM from DIN) on one tiny world (SMOKE_REQUESTS=30 requests a day), one loss
  (FS-LambdaLoss, the newest) beside the BCE baseline, in this process. One world: a
  second one would compile every program again (its split sizes differ), and the
  harness's paired statistics over several worlds are tested on E3's smoke run
  (test_experiments_smoke.py) and on every kept result. The lcron protocol's arm is configured and
  validated without training above; every kept full result, E9's included, is rebuilt
  from its raw rows in test_kept_results.py; the full --smoke run (both protocols, every
  loss) is ``python experiments/e9_recflow.py --smoke``."""
  name, protocol = "fs_lambdaloss", e9_recflow.COARSE
  monkeypatch.setattr(e9_recflow, "LOSSES", {name: e9_recflow.LOSSES[name]})
  monkeypatch.setattr(e9_recflow, "SMOKE_REQUESTS", 30)
  # With one structural program the runner does not label the students by program.
  claims = [dataclasses.replace(c, where={"program": ""}) for c in e9_recflow.CLAIMS
            if c.where == {"program": f"kd={name}"} and c.method == protocol]
  every_method = e9_recflow.EXPERIMENT.methods
  monkeypatch.setattr(e9_recflow, "EXPERIMENT", dataclasses.replace(
      e9_recflow.EXPERIMENT, claims=claims,
      methods=lambda smoke: [m for m in every_method(smoke) if m.name == protocol]))
  monkeypatch.setattr(e9_recflow, "_STATE", {"recflow_dir": None, "smoke": False,
                                             "worlds": {}, "tmp": tmp_path / "worlds"})
  (tmp_path / "worlds").mkdir()
  monkeypatch.setattr(harness, "use_compilation_cache", lambda path=None: None)
  out = tmp_path / "out"
  e9_recflow.main(["--smoke", "--world-seeds", "0", "--out", str(out)])
  out_dir = out / "e9_recflow-smoke"
  raw = harness.load_raw(out_dir / "raw.csv")
  assert sorted(raw["seed"].unique()) == [0]
  assert set(raw["method"]) == {protocol}
  assert (raw["role"] == "student").sum() == 1  # one distilled student
  assert (raw["role"] == harness.GT_ONLY).any() and (raw["role"] == "teacher").any()
  for metric in e9_recflow.METRICS:  # both protocols' metrics, finite, in every row
    assert raw[metric].notna().all(), metric
  # Learning happened: the DIN teacher beats the random reference on RecFlow's recall in
  # each world (the students are trained 2 epochs only: no claim about them).
  teacher = raw[raw["role"] == "teacher"].groupby("seed")["recflow_recall@50"].mean()
  random = raw[raw["point"] == "random"].groupby("seed")["recflow_recall@50"].mean()
  assert (teacher > random).all(), (teacher, random)
  first = (out_dir / "summary.md").read_text()
  claims_text = first.split("## Claims")[1].split("##")[0]
  rows = [line for line in claims_text.splitlines() if line.startswith("| ") and "**" in line]
  assert len(rows) == len(claims) == 1
  assert all(any(f"**{v}**" in line for v in harness.VERDICTS) for line in rows)
  assert "LCRON's Table 2 trains both stages jointly" in first
  pngs = sorted(out_dir.glob("*.png"))
  assert [p.name for p in pngs] == ["e9_coarse_diff.png"]
  for p in pngs:
    p.unlink()
  (out_dir / "summary.md").unlink()
  e9_recflow.main(["--smoke", "--world-seeds", "0", "--out", str(out), "--from-results"])
  assert (out_dir / "summary.md").read_text() == first
  assert sorted(out_dir.glob("*.png")) == pngs
