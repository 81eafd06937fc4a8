"""Loaders: hand-written run dirs and result CSVs, then a real smoke run read back."""

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from prerank_jax.analysis import (find_run_dirs, flatten_config, load_history,
                                  load_results_csv, load_run, load_runs, mean_ci,
                                  normalize_history, normalize_name, normalize_results,
                                  setup_key, split_model)

METRICS = ["recall@10%", "recall@25%", "R@(10,25%)"]


def write_run(root, name, rows, *, seed=0, config=None, history=None):
  """A run dir as host/runner.py writes it: results.csv, config.json, history.json."""
  run_dir = root / name
  run_dir.mkdir(parents=True)
  columns = list(dict.fromkeys(c for r in rows for c in r))
  with (run_dir / "results.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  cfg = {"name": name, "workdir": str(root), "seed": seed,
         "student": {"loss": {"kd": "hinton_listwise"}, "model": {"hidden": [64, 32]}},
         "sweep": {"temperature": [1.0, 2.0], "programs": ""}, "wandb": {"mode": "disabled"}}
  cfg.update(config or {})
  (run_dir / "config.json").write_text(json.dumps(cfg))
  (run_dir / "history.json").write_text(json.dumps(history or {}))
  return run_dir


def grid_rows(offset=0.0):
  rows = []
  for t in (1.0, 2.0):
    for a in (0.5, 1.0):
      rows.append({"model": f"student temperature={t:g} alpha={a:g} learning_rate=0.003",
                   "temperature": t, "alpha": a, "learning_rate": 0.003, "recall@10%": 0.1 + t / 10 + a / 100 + offset,
                   "recall@25%": 0.3 + t / 10 + offset, "R@(10,25%)": 0.4 + a / 10 + offset,
                   "params": 100, "status": "ok"})
  rows.append({"model": "student gt-only", "temperature": 1.0, "alpha": 0.0,
               "learning_rate": 0.003,
               "recall@10%": 0.05 + offset, "recall@25%": 0.2 + offset,
               "R@(10,25%)": 0.3 + offset, "params": 100, "status": "ok"})
  rows.append({"model": "teacher", "recall@10%": 0.3, "recall@25%": 0.5, "R@(10,25%)": 1.0,
               "params": 1000, "status": "reference"})
  rows.append({"model": "oracle (truth)", "recall@10%": 0.6, "recall@25%": 0.9,
               "R@(10,25%)": 0.5, "status": "reference"})
  return rows


def test_flatten_config_and_setup_key():
  flat = flatten_config({"seed": 3, "student": {"loss": {"kd": "x", "options": {}},
                                                "model": {"hidden": [64, [1, 2]]}}})
  assert flat == {"seed": 3, "student.loss.kd": "x", "student.model.hidden": (64, (1, 2))}
  base = {"seed": 0, "name": "a", "workdir": "/x", "wandb.mode": "offline",
          "student.loss.kd": "x", "teacher.restore_from": ""}
  same = {**base, "seed": 7, "name": "b", "workdir": "/y", "wandb.mode": "disabled",
          "teacher.restore_from": "/runs/t"}
  assert setup_key(base) == setup_key(same)
  assert setup_key(base) != setup_key({**base, "student.loss.kd": "y"})


@pytest.mark.parametrize("model,expected", [
    ("student temperature=2 alpha=0.5 learning_rate=0.003",
     ("temperature=2 alpha=0.5 learning_rate=0.003", "student", "")),
    ("student [kd=logit_mse hidden=(32,)] gt-only", ("gt-only", "student",
                                                     "kd=logit_mse hidden=(32,)")),
    ("teacher", ("teacher", "teacher", "")),
    ("teacher 1", ("teacher 1", "teacher", "")),
    ("oracle (truth)", ("oracle (truth)", "reference", "")),
    ("random", ("random", "reference", "")),
])
def test_split_model(model, expected):
  assert split_model(model) == expected


def test_load_run_rows_ids_metrics_and_config_columns(tmp_path):
  rows = grid_rows()
  run_dir = write_run(tmp_path, "grid_s3", rows, seed=3)
  frame = load_run(run_dir)
  assert len(frame) == len(rows)
  assert list(frame.columns[:9]) == ["run", "seed", "replicate_seed", "setup", "model",
                                     "point", "role", "program", "results_model"]
  assert (frame["run"] == "grid_s3").all() and (frame["seed"] == 3).all()
  assert frame["replicate_seed"].isna().all()
  assert list(frame["role"]) == ["student"] * 5 + ["teacher", "reference"]
  assert frame["point"].iloc[0] == "temperature=1 alpha=0.5 learning_rate=0.003"
  for c in METRICS:
    np.testing.assert_allclose(frame[c], [r[c] for r in rows])
  assert math.isnan(frame.loc[frame["model"] == "oracle (truth)", "params"].iloc[0])
  assert (frame["student.loss.kd"] == "hinton_listwise").all()
  assert frame["student.model.hidden"].iloc[0] == (64, 32)
  assert frame["sweep.temperature"].iloc[-1] == (1.0, 2.0)
  # The results' own columns win over config fields of the same name; seed is config's.
  assert "temperature" in frame.columns and "name" in frame.columns
  assert len(load_run(run_dir, config_columns=False).columns) < len(frame.columns)


def test_replicates_inside_a_run_share_the_model_name(tmp_path):
  # Written in the names of earlier versions (T, α, lr): read in today's names.
  rows = []
  for s, v in ((0, 0.30), (1, 0.34)):
    rows.append({"model": f"student T=2 α=0.5 lr=0.003 seed={s}", "T": 2.0, "alpha": 0.5,
                 "replicate_seed": s, "recall@25%": v, "status": "ok"})
  rows.append({"model": "teacher", "recall@25%": 0.5, "status": "reference"})
  frame = load_run(write_run(tmp_path, "rep", rows))
  students = frame[frame["role"] == "student"]
  assert set(students["model"]) == {"student temperature=2 alpha=0.5 learning_rate=0.003"}
  assert set(students["point"]) == {"temperature=2 alpha=0.5 learning_rate=0.003"}
  assert "temperature" in frame.columns and "T" not in frame.columns
  assert list(students["replicate_seed"]) == [0, 1]
  assert list(students["results_model"]) == [
      f"student temperature=2 alpha=0.5 learning_rate=0.003 seed={s}" for s in (0, 1)]
  out = mean_ci(frame, "recall@25%", by="model")
  assert out.set_index("model").loc["student temperature=2 alpha=0.5 learning_rate=0.003",
                                    "recall@25%"] == pytest.approx(0.32)


def test_load_runs_pools_seeds_of_one_setup(tmp_path):
  a = write_run(tmp_path, "grid_s0", grid_rows(), seed=0)
  write_run(tmp_path, "grid_s1", grid_rows(0.02), seed=1)
  write_run(tmp_path, "other_s0", grid_rows(), seed=0,
            config={"student": {"loss": {"kd": "logit_mse"}, "model": {"hidden": [64, 32]}}})
  (tmp_path / "not_a_run").mkdir()
  assert find_run_dirs([tmp_path]) == [tmp_path / n for n in ("grid_s0", "grid_s1",
                                                              "other_s0")]
  assert find_run_dirs([a]) == [a]
  frame = load_runs(tmp_path)
  assert len(frame) == 3 * len(grid_rows())
  setups = frame.groupby("setup")["run"].unique()
  assert sorted(map(sorted, setups)) == [["grid_s0", "grid_s1"], ["other_s0"]]
  out = mean_ci(frame, "recall@25%", by=["setup", "model"])
  grid = out[out["setup"] == frame.loc[frame["run"] == "grid_s0", "setup"].iloc[0]]
  row = grid.set_index("model").loc["student gt-only"]
  assert row["n"] == 2 and row["recall@25%"] == pytest.approx(0.21)
  with pytest.raises(FileNotFoundError, match="no results.csv"):
    load_runs(tmp_path / "not_a_run")


def test_load_history_long_table(tmp_path):
  # An earlier version's history: its point names and metric keys are read in today's.
  history = {"teacher": {"loss": [[0.7, 0.6], [0.71, 0.62]]},
             "students": {"T=1 α=0.5": {"loss": [0.5, 0.4, 0.3],
                                        "valid_recall_teacher": [0.2, 0.3, 0.35]},
                          "gt-only seed=1": {"loss": [0.6, 0.5, 0.45],
                                             "valid_recall_teacher": [0.1, 0.2, 0.2]}}}
  write_run(tmp_path, "h", grid_rows(), seed=5, history=history)
  frame = load_history(tmp_path / "h")
  assert len(frame) == 2 * 2 + 2 * 3
  assert list(frame["model"].unique()) == ["teacher 0", "teacher 1",
                                           "student temperature=1 alpha=0.5",
                                           "student gt-only"]
  assert "valid_recall_teacher" not in frame.columns  # eval defaults: k = 10, 25%
  teacher1 = frame[frame["model"] == "teacher 1"]
  assert list(teacher1["epoch"]) == [1, 2] and list(teacher1["loss"]) == [0.71, 0.62]
  assert teacher1["valid/R@(10,25%)"].isna().all()
  gt = frame[frame["model"] == "student gt-only"]
  assert (gt["replicate_seed"] == 1).all() and (gt["seed"] == 5).all()
  assert list(gt["valid/R@(10,25%)"]) == [0.1, 0.2, 0.2]


def test_load_results_csv_reads_experiment_rows(tmp_path):
  exp = tmp_path / "loss_comparison"
  exp.mkdir()
  pd.DataFrame({"model": ["student [kd=logit_mse] T=1 α=1", "student gt-only", "teacher"] * 2,
                "seed": [0, 0, 0, 1, 1, 1], "recall@25%": [0.3, 0.2, 0.5, 0.32, 0.21, 0.52]}
               ).to_csv(exp / "raw.csv", index=False)
  frame = load_results_csv(exp / "raw.csv")
  assert (frame["run"] == "loss_comparison").all()
  assert list(frame["seed"]) == [0, 0, 0, 1, 1, 1]
  assert list(frame["program"][:2]) == ["kd=logit_mse", ""]
  assert (frame["setup"] == str(exp / "raw.csv")).all()
  # An experiment's raw.csv: one setup per method, replicates named by their suffix.
  pd.DataFrame({"experiment": "e2", "method": ["kd", "kd", "gt", "gt"], "seed": [0, 1, 0, 1],
                "replicate_seed": [0, 0, 0, 0],
                "program": "",  # written as blank cells
                "model": ["student T=4 α=1 seed=0"] * 2 + ["student gt-only seed=0"] * 2,
                "recall@25%": [0.3, 0.32, 0.2, 0.21]}).to_csv(exp / "raw.csv", index=False)
  frame = load_results_csv(exp / "raw.csv")
  assert list(frame["setup"]) == ["kd", "kd", "gt", "gt"]
  assert (frame["program"] == "").all()
  assert list(frame["model"]) == ["student temperature=4 alpha=1"] * 2 + [
      "student gt-only"] * 2
  assert list(mean_ci(frame, "recall@25%")["n"]) == [2, 2]
  with pytest.raises(ValueError, match="'model' column"):
    (tmp_path / "bad.csv").write_text("name,x\na,1\n")
    load_results_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("old,new", [
    ("student T=1 α=0.5", "student temperature=1 alpha=0.5"),
    ("student [kd=logit_mse] T=2 α=1 lr=0.003 seed=3",
     "student [kd=logit_mse] temperature=2 alpha=1 learning_rate=0.003 seed=3"),
    ("gt-only lr=0.01", "gt-only learning_rate=0.01"),
    ("student temperature=1 alpha=0.5", "student temperature=1 alpha=0.5"),  # current
    ("teacher", "teacher"), ("oracle (truth)", "oracle (truth)"),
    ("student [lr_decay=T=1] x", "student [lr_decay=T=1] x"),  # only whole words
])
def test_normalize_name_maps_old_spellings(old, new):
  assert normalize_name(old) == new
  assert normalize_name(new) == new  # idempotent


def test_normalize_results_renames_columns_and_names():
  old = pd.DataFrame({"model": ["student T=1 α=0.5 lr=0.003", "student gt-only"],
                      "T": [1.0, 1.0], "alpha": [0.5, 0.0], "lr": [0.003, 0.003],
                      "ndcg@10": [0.6, 0.5]})
  new = normalize_results(old)
  assert list(new.columns) == ["model", "temperature", "alpha", "learning_rate", "ndcg@10"]
  assert list(new["model"]) == ["student temperature=1 alpha=0.5 learning_rate=0.003",
                                "student gt-only"]
  assert list(old.columns)[1] == "T"  # the input is not changed
  pd.testing.assert_frame_equal(normalize_results(new), new)  # current names: unchanged
  # New rows appended to an old file (the union of the columns): one column per name.
  mixed = pd.DataFrame({"model": ["student T=1", "student temperature=2"],
                        "T": [1.0, np.nan], "temperature": [np.nan, 2.0]})
  out = normalize_results(mixed)
  assert list(out.columns) == ["model", "temperature"]
  assert list(out["temperature"]) == [1.0, 2.0]
  assert list(out["model"]) == ["student temperature=1", "student temperature=2"]


def test_normalize_history_keys_are_results_names():
  old = {"loss": [1], "valid_ndcg_true": [2], "valid_ndcg_exposed": [3],
         "valid_recall_teacher": [4]}
  assert normalize_history(old, k=5, keep_ratio=0.1) == {
      "loss": [1], "valid/ndcg@5": [2], "valid/ndcg@5_logs": [3], "valid/R@(5,10%)": [4]}
