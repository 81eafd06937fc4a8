"""Exported students (prerank_jax/host/artifact.py, host/scoring.py): ``export`` then
``score`` in a fresh process reproduces the run's own test scores for the MLP, two-tower and
linear students, keyed by the user's IDs; the export lowers for cuda and tpu on this CPU; a
damaged or mismatched artifact, or an input it cannot score, gives a clear error before
anything is written."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prerank_jax.host.artifact import (FEATURES_FILE, FUNCTION_FILE, MANIFEST, PARAMS_FILE,
                                       ArtifactError, export_point, load_artifact,
                                       results_row)
from prerank_jax.host.scoring import score_file

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parent / "score_fresh_process.py"
STUDENTS = ("mlp_student", "two_tower", "linear")
ITEMS = ("item_f0", "item_f1", "item_f2")


def write_logs(path: Path, *, requests: int = 60, candidates: int = 12, seed: int = 0):
  """A small click-log table: user IDs of requests and candidates, a split column, two
  context, three item and one cross feature, labels null where not shown."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  rng = np.random.default_rng(seed)
  n = requests * candidates
  user = np.repeat(rng.normal(size=(requests, 2)), candidates, axis=0)
  items = rng.normal(size=(n, 3))
  cross = rng.normal(size=n)
  logit = items @ [1.0, -0.5, 0.3] + user[:, 0] * items[:, 0] + cross
  label = (logit + rng.normal(size=n) > 0.5).astype(float)
  label[rng.random(n) < 0.3] = np.nan
  # Request and candidate IDs are the user's own strings, in a shuffled order.
  table = pa.table({
      "request_id": np.repeat([f"req-{i * 7 % requests:03d}" for i in range(requests)],
                              candidates),
      "candidate_id": [f"item-{i}" for i in rng.permutation(n)],
      "split": np.repeat(rng.choice(["train", "valid", "test"], size=requests,
                                    p=[0.6, 0.2, 0.2]), candidates),
      "user_f0": user[:, 0], "user_f1": user[:, 1],
      "item_f0": items[:, 0], "item_f1": items[:, 1], "item_f2": items[:, 2],
      "cross_f0": cross, "label": label})
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(table, path)
  return table


def point_name(model: str) -> str:
  """The results-table name of the one point of program ``name=<model>``."""
  return NAMES[model]


NAMES: dict[str, str] = {}  # filled by the fixture from results.csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """One tabular smoke run (1 teacher epoch, 2 student epochs) with the three students as
  programs, and an artifact of each."""
  from prerank_jax.config_files import repo_config
  from prerank_jax.host.runner import run

  tmp = tmp_path_factory.mktemp("artifact")
  table = write_logs(tmp / "raw" / "logs.parquet")
  config = repo_config("tabular", "smoke")
  config.workdir, config.name = str(tmp / "runs"), "served"
  config.progress, config.wandb.mode = False, "disabled"
  config.source.manual_dir, config.source.data_dir = str(tmp / "raw"), str(tmp / "tfds")
  config.source.split_column = "split"
  config.source.candidate_column = "candidate_id"  # the user's candidate IDs
  config.source.list_size, config.source.min_list_size = 16, 10
  config.teacher.num_epochs, config.student.num_epochs = 1, 2
  config.teacher.model.hidden = (32,)
  config.sweep.temperature, config.sweep.alpha = (2.0,), (0.5,)
  config.sweep.gt_only_baseline = False
  config.sweep.programs = "student.model.name=" + "|".join(STUDENTS)
  result = run(config)
  for m in STUDENTS:
    (NAMES[m],) = [r["model"] for r in result.rows if f"[name={m}]" in r["model"]]
  artifacts = {m: export_point(result.run_dir, point_name(m), tmp / "artifacts" / m)
               for m in STUDENTS}
  return {"tmp": tmp, "table": table, "run_dir": result.run_dir, "artifacts": artifacts}


def expected_test_scores(trained, model: str) -> dict[tuple[str, str], float]:
  """``{(request_id, candidate_id): score}`` of the run's scores.parquet, test split, keyed
  by the user's own ID columns that scores.parquet carries."""
  import pyarrow.parquet as pq

  scores = pq.read_table(trained["run_dir"] / "scores.parquet").to_pandas()
  scores = scores[(scores["model"] == point_name(model)) & (scores["split"] == "test")]
  return {(str(r), str(c)): s for r, c, s in
          zip(scores["request_id"], scores["candidate_id"], scores["score"])}


@pytest.mark.slow
def test_fresh_process_reproduces_the_run_test_scores_by_user_ids(trained):
  import pyarrow.csv as pcsv
  import pyarrow.parquet as pq

  tmp = trained["tmp"]
  table = trained["table"]
  test = table.filter(np.asarray(table["split"].to_pylist()) == "test")
  pq.write_table(test, tmp / "new.parquet", row_group_size=50)  # several row groups
  pcsv.write_csv(test, tmp / "new.csv")
  triples = []
  for model, source in zip(STUDENTS, ("new.parquet", "new.csv", "new.parquet")):
    triples += [str(trained["artifacts"][model]), str(tmp / source),
                str(tmp / f"scored_{model}.parquet")]
  proc = subprocess.run([sys.executable, str(HELPER), *triples], capture_output=True,
                        text=True, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert report["training_side_modules"] == []  # loading needs jax + the small loader
  for model in STUDENTS:
    out = pq.read_table(tmp / f"scored_{model}.parquet")
    assert out.column_names == ["request_id", "candidate_id", "score"]
    assert out.num_rows == test.num_rows == report["rows"][str(tmp / f"scored_{model}.parquet")]
    # Input order is kept, IDs under the user's own names.
    assert out["request_id"].to_pylist() == test["request_id"].to_pylist()
    assert out["candidate_id"].to_pylist() == test["candidate_id"].to_pylist()
    want = expected_test_scores(trained, model)
    assert len(want) == test.num_rows
    keys = zip(out["request_id"].to_pylist(), out["candidate_id"].to_pylist())
    expected = np.array([want[k] for k in keys], np.float32)
    # rtol 1e-5; the atol covers a score near 0 that is a float32 sum with cancellation
    # (the two-tower's dot product: the export's kernel sums in another order, so a score
    # of 0.0125 from terms of order 1 may differ by 2 float32 units of those terms).
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-5, atol=1e-6,
                               err_msg=model)
    assert np.std(expected) > 0  # a trained student, not a constant


@pytest.mark.slow
def test_export_is_stablehlo_for_cpu_cuda_and_tpu_with_symbolic_candidates(trained):
  art = load_artifact(trained["artifacts"]["two_tower"])
  assert art.exported.platforms == ("cpu", "cuda", "tpu")
  assert art.manifest["platforms"] == ["cpu", "cuda", "tpu"]
  context, items = art.exported.in_avals[-2:]
  assert str(context.shape[0]) == "n" and str(items.shape[0]) == "n"
  assert (context.shape[1], items.shape[1]) == (2, 3)
  assert "stablehlo" in art.exported.mlir_module()
  assert [c["name"] for c in art.features["items"]] == list(ITEMS)
  assert [c["name"] for c in art.features["context"]] == ["user_f0", "user_f1"]
  assert art.metrics["model"] == point_name("two_tower")
  assert art.config["student"]["model"]["name"] == "two_tower"
  # Any number of candidates; each candidate's score depends on its own row only.
  rng = np.random.default_rng(1)
  c, x = rng.normal(size=(7, 2)), rng.normal(size=(7, 3))
  full = art.score(c, x)
  np.testing.assert_allclose(art.score(c[2:5], x[2:5]), full[2:5], rtol=1e-6)
  np.testing.assert_allclose(art.score(c[::-1], x[::-1]), full[::-1], rtol=1e-6)


@pytest.mark.slow
def test_export_refuses_an_existing_dir_an_unknown_point_and_overwrites_atomically(trained):
  run_dir, tmp = trained["run_dir"], trained["tmp"]
  out = trained["artifacts"]["linear"]
  with pytest.raises(FileExistsError, match="--overwrite"):
    export_point(run_dir, point_name("linear"), out)
  # An old spelling (T=, α=) is read in today's names (student temperature=9).
  with pytest.raises(ValueError, match=r"no row 'student temperature=9' .* the students are "
                                       r"\['student \[name=mlp_student\]"):
    export_point(run_dir, "student T=9", tmp / "nowhere")
  name = point_name("linear")
  old = name.replace("temperature=", "T=").replace("alpha=", "α=").replace(
      "learning_rate=", "lr=")
  assert old != name and results_row(run_dir, old) == results_row(run_dir, name)
  with pytest.raises(ValueError, match="reference row"):
    export_point(run_dir, "teacher", tmp / "nowhere")
  assert not (tmp / "nowhere").exists()
  again = export_point(run_dir, point_name("mlp_student"), tmp / "replaced")
  export_point(run_dir, point_name("linear"), again, overwrite=True)
  assert load_artifact(again).manifest["model"] == "linear"
  assert sorted(p.name for p in again.parent.iterdir() if p.name.startswith(".")) == []


def _copy(trained, tmp_path, model="linear") -> Path:
  target = tmp_path / "copy"
  shutil.copytree(trained["artifacts"][model], target)
  return target


def _rewrite_manifest(path: Path, edit) -> None:
  manifest = json.loads((path / MANIFEST).read_text())
  edit(manifest)
  (path / MANIFEST).write_text(json.dumps(manifest))


def _reseal(path: Path, name: str) -> None:
  """Recomputes ``name``'s checksum in the manifest: an edit that passes the checksums."""
  data = (path / name).read_bytes()
  _rewrite_manifest(path, lambda m: m["files"].update(
      {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}))


@pytest.mark.slow
def test_damaged_or_mismatched_artifacts_are_refused_with_the_file_named(trained, tmp_path):
  art = _copy(trained, tmp_path)
  data = (art / PARAMS_FILE).read_bytes()
  (art / PARAMS_FILE).write_bytes(data[:-10])
  with pytest.raises(ArtifactError, match=r"params.npz: \d+ bytes, the manifest says \d+: "
                                          "the file is truncated"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "b")
  blob = bytearray((art / FUNCTION_FILE).read_bytes())
  blob[len(blob) // 2] ^= 0xFF  # same size, one byte edited
  (art / FUNCTION_FILE).write_bytes(bytes(blob))
  with pytest.raises(ArtifactError, match=r"scoring.jax_export: SHA-256 differs"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "c")
  _rewrite_manifest(art, lambda m: m["files"][FEATURES_FILE].update(sha256="0" * 64))
  with pytest.raises(ArtifactError, match=r"features.json: SHA-256 differs"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "d")
  (art / PARAMS_FILE).unlink()
  with pytest.raises(ArtifactError, match=r"params.npz: missing"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "e")
  _rewrite_manifest(art, lambda m: m.update(format_version=99))
  with pytest.raises(ArtifactError, match=r"format_version 99; this prerank-jax reads format "
                                          r"versions \[1, 2\]"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "f")  # a feature spec that is not this function's
  spec = json.loads((art / FEATURES_FILE).read_text())
  spec["items"].append({"name": "item_f3", "transform": "raw"})
  (art / FEATURES_FILE).write_text(json.dumps(spec))
  _reseal(art, FEATURES_FILE)
  with pytest.raises(ArtifactError, match=r"features.json: lists 4 items column\(s\), the "
                                          r"exported function takes 3"):
    load_artifact(art)

  art = _copy(trained, tmp_path / "g")  # parameters of another model
  other = trained["artifacts"]["mlp_student"]
  shutil.copy(other / PARAMS_FILE, art / PARAMS_FILE)
  _reseal(art, PARAMS_FILE)
  with pytest.raises(ArtifactError, match=r"params.npz: \d+ parameter arrays and 2 inputs "
                                          r"\(features.json\), the exported function takes "
                                          r"\d+ arguments"):
    load_artifact(art)

  with pytest.raises(ArtifactError, match="not a prerank-jax artifact"):
    load_artifact(tmp_path)


@pytest.mark.slow
def test_score_refuses_missing_or_mistyped_columns_before_writing(trained, tmp_path,
                                                                 monkeypatch):
  import pyarrow as pa
  import pyarrow.csv as pcsv
  import pyarrow.parquet as pq

  art = trained["artifacts"]["linear"]
  table = trained["table"].slice(0, 40)
  out = tmp_path / "scores.parquet"
  pq.write_table(table.drop_columns(["item_f1"]), tmp_path / "missing.parquet")
  with pytest.raises(ArtifactError, match=r"no feature column\(s\) \['item_f1'\]"):
    score_file(art, tmp_path / "missing.parquet", out)
  mistyped = table.set_column(table.schema.get_field_index("item_f2"), "item_f2",
                              pa.array(["x"] * table.num_rows))
  pq.write_table(mistyped, tmp_path / "mistyped.parquet")
  with pytest.raises(ArtifactError, match=r"feature column 'item_f2' is string, not numeric"):
    score_file(art, tmp_path / "mistyped.parquet", out)
  pcsv.write_csv(mistyped, tmp_path / "mistyped.csv")
  with pytest.raises(ArtifactError, match=r"feature column 'item_f2' is string, not numeric"):
    score_file(art, tmp_path / "mistyped.csv", out)
  pq.write_table(table.drop_columns(["request_id"]), tmp_path / "no_ids.parquet")
  with pytest.raises(ArtifactError, match=r"no ID column\(s\) \['request_id'\]"):
    score_file(art, tmp_path / "no_ids.parquet", out)
  infinite = table.set_column(table.schema.get_field_index("user_f1"), "user_f1",
                              pa.array([0.0] * 30 + [np.inf] + [0.0] * 9))
  pq.write_table(infinite, tmp_path / "inf.parquet")
  with pytest.raises(ArtifactError, match=r"inf.parquet \(row 31\): feature column 'user_f1' "
                                          "is inf"):
    score_file(art, tmp_path / "inf.parquet", out, batch_rows=16)
  # A value that is not a number in a later CSV block (the first block parsed as numbers).
  import prerank_jax.host.scoring as scoring

  monkeypatch.setattr(scoring, "CSV_BLOCK_BYTES", 1024)
  pcsv.write_csv(table, tmp_path / "late.csv")
  lines = (tmp_path / "late.csv").read_text().splitlines()
  header = lines[0].replace('"', "").split(",")
  cells = lines[-1].split(",")
  cells[header.index("item_f1")] = "oops"
  (tmp_path / "late.csv").write_text("\n".join(lines[:-1] + [",".join(cells)]) + "\n")
  assert (tmp_path / "late.csv").stat().st_size > 2048
  with pytest.raises(ArtifactError, match=r"late.csv: feature column 'item_f1': .*'oops'"):
    score_file(art, tmp_path / "late.csv", out)
  assert not out.exists() and list(tmp_path.glob(".scores*")) == []
  # An earlier output stays as it was when a later scoring fails.
  pq.write_table(table, tmp_path / "good.parquet")
  score_file(art, tmp_path / "good.parquet", out)
  before = out.read_bytes()
  with pytest.raises(ArtifactError):
    score_file(art, tmp_path / "inf.parquet", out)
  assert out.read_bytes() == before


@pytest.mark.slow
def test_streamed_batches_and_nulls_score_as_one_batch(trained, tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  art = load_artifact(trained["artifacts"]["mlp_student"])
  table = trained["table"].slice(0, 100)
  nulls = pa.array([None if i % 9 == 0 else v for i, v in
                    enumerate(table["item_f0"].to_pylist())], pa.float64())
  table = table.set_column(table.schema.get_field_index("item_f0"), "item_f0", nulls)
  pq.write_table(table, tmp_path / "t.parquet", row_group_size=13)
  score_file(art, tmp_path / "t.parquet", tmp_path / "a.parquet", batch_rows=7)
  got = pq.read_table(tmp_path / "a.parquet")["score"].to_numpy()
  frame = table.to_pandas().fillna({"item_f0": 0.0})  # a null feature reads as 0
  want = art.score(frame[["user_f0", "user_f1"]].to_numpy(), frame[list(ITEMS)].to_numpy())
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cuda12_extra_pins_the_constraints_jax_version():
  pyproject = (ROOT / "pyproject.toml").read_text()
  constraints = (ROOT / "constraints.txt").read_text()
  jax_pin = re.search(r"^jax==(\S+)$", constraints, flags=re.M).group(1)
  extra = re.search(r"^cuda12 = \[\n((?:.*\n)*?)\]", pyproject, flags=re.M).group(1)
  assert f'"jax[cuda12]=={jax_pin}"' in extra
  assert re.search(r"^flatbuffers==", constraints, flags=re.M)
  script = (ROOT / "benchmarks" / "accelerator.sh").read_text()
  assert 'pip install -q -c constraints.txt -e ".[cuda12]"' in script


@pytest.mark.slow
def test_letor_artifact_turns_raw_lines_into_the_loaders_inputs(tmp_path):
  """A LETOR artifact scores raw LibSVM lines exactly as the model scores the loader's
  test split: features normalised with the train statistics kept in features.json, the
  context input from the query's length (an untrained student: the transform is tested)."""
  import jax
  import pyarrow.parquet as pq

  from prerank_jax.batch import feature_sizes
  from prerank_jax.data.registry import load_dataset
  from prerank_jax.host.artifact import feature_spec, write_artifact
  from prerank_jax.models import build_model
  from tests.data.test_tfds_datasets import letor_config, write_letor

  written = write_letor(tmp_path / "raw")           # queries of 8..29 documents
  config = letor_config(tmp_path, list_size=30, min_list_size=5)  # no truncation
  loaded = load_dataset(config)
  test = loaded.splits["test"]
  model = build_model("mlp_student", feature_sizes=feature_sizes(test), hidden=(8,))
  params = model.init(jax.random.key(0))
  spec = feature_spec(config, loaded, model)
  assert spec["kind"] == "letor" and [c["feature_id"] for c in spec["items"]] == [1, 2, 3]
  art = write_artifact(tmp_path / "art", model=model, params=params, spec=spec, config={},
                       metrics={}, point="untrained")
  score_file(art, tmp_path / "raw" / "Fold1" / "test.txt", tmp_path / "scores.parquet")
  out = pq.read_table(tmp_path / "scores.parquet")
  assert out.column_names == ["qid", "docid", "score"]
  want = np.asarray(model.apply(params, test))[np.asarray(test.valid)]  # request-major
  assert out["qid"].to_pylist() == [q for q, labels, _ in written["test"]
                                    for _ in range(len(labels))]
  valid = np.asarray(test.valid)  # the loader's candidate IDs: here the line numbers
  assert out["docid"].to_pylist() == loaded.ids["test"].candidate[valid].tolist()
  assert out["qid"].to_pylist() == np.repeat(loaded.ids["test"].request,
                                             valid.sum(1)).tolist()
  np.testing.assert_allclose(out["score"].to_numpy(), want, rtol=1e-5, atol=1e-6)
  assert np.std(want) > 0
  with pytest.raises(ArtifactError, match="give a LibSVM ranking file"):
    score_file(art, tmp_path / "scores.parquet", tmp_path / "again.parquet")


@pytest.mark.slow
def test_cli_export_then_score_and_one_line_errors(trained, tmp_path, capsys):
  import pyarrow.parquet as pq

  from prerank_jax.cli import main

  run_dir, table = trained["run_dir"], trained["table"]
  out = tmp_path / "cli_artifact"
  assert main(["prerank-jax", "export", str(run_dir), "--point", point_name("linear"),
               "--out", str(out), "--platforms", "cpu"]) == 0
  assert load_artifact(out).exported.platforms == ("cpu",)
  pq.write_table(table.slice(0, 30), tmp_path / "in.parquet")
  assert main(["prerank-jax", "score", str(out), "--input", str(tmp_path / "in.parquet"),
               "--output", str(tmp_path / "s.parquet"), "--keep", "split"]) == 0
  assert "30 candidates scored" in capsys.readouterr().out
  assert pq.read_table(tmp_path / "s.parquet").column_names[-2:] == ["split", "score"]
  pq.write_table(table.slice(0, 30).drop_columns(["user_f0"]), tmp_path / "bad.parquet")
  assert main(["prerank-jax", "score", str(out), "--input", str(tmp_path / "bad.parquet"),
               "--output", str(tmp_path / "b.parquet")]) == 2
  err = capsys.readouterr().err
  assert "prerank-jax score:" in err and "['user_f0']" in err and "Traceback" not in err
  assert not (tmp_path / "b.parquet").exists()
  assert main(["prerank-jax", "export", str(run_dir), "--point", point_name("linear"),
               "--out", str(out)]) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert main(["prerank-jax", "export", str(run_dir), "--out", str(out)]) == 2  # no --point
  assert "--point" in capsys.readouterr().err
