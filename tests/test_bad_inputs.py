"""Bad input through the CLI: refused with a message naming the field (or column, or
file:line) and its allowed range, before anything is written.

Every case runs ``prerank_jax.cli.main([...])`` in-process (the path of the
``prerank-jax`` entry point); a few also run as a subprocess. Each must exit non-zero and
leave the work directory and the data directory exactly as they were (a snapshot of the
trees, file contents included, is compared).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prerank_jax.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _tree(root: Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
          for p in sorted(root.rglob("*"))} if root.exists() else {}


# --- input files, written here with their own generator --------------------------------

TABLE_COLUMNS = ("request_id", "label", "user_f0", "item_f0", "item_f1", "truth", "prop")


def table_rows(num_requests: int = 30, size: int = 12, seed: int = 0) -> list[dict]:
  """Rows of a valid table: ``size`` candidates per request, the first 5 shown."""
  rng = np.random.default_rng(seed)
  rows = []
  for r in range(num_requests):
    user = float(rng.normal())
    for c in range(size):
      truth = int(rng.integers(0, 3))
      shown = c < 5
      rows.append({"request_id": f"r{r}", "label": (min(truth, 1) if shown else ""),
                   "user_f0": user, "item_f0": float(rng.normal()),
                   "item_f1": float(rng.normal()), "truth": truth,
                   "prop": (round(1.0 / (c + 1), 4) if shown else "")})
  return rows


def write_csv(path: Path, rows: list[dict], extra_line: str | None = None) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  if extra_line is not None:
    with open(path, "a") as f:
      f.write(extra_line + "\n")


def write_parquet(path: Path, rows: list[dict]) -> None:
  import pyarrow as pa
  import pyarrow.parquet as pq

  path.parent.mkdir(parents=True, exist_ok=True)
  columns = {c: [None if r[c] == "" else r[c] for r in rows] for c in TABLE_COLUMNS}
  pq.write_table(pa.table(columns), path)


def letor_lines(num_queries: int = 12, size: int = 12, seed: int = 0, first_qid: int = 0
                ) -> list[str]:
  rng = np.random.default_rng(seed)
  return [f"{int(rng.integers(0, 3))} qid:{q} "
          + " ".join(f"{j}:{rng.normal():.4f}" for j in range(1, 7))
          for q in range(first_qid, first_qid + num_queries) for _ in range(size)]


def write_letor(folder: Path, *, train=None, vali=None, test=None) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for name, lines, first in (("train.txt", train, 0), ("vali.txt", vali, 100),
                             ("test.txt", test, 200)):
    lines = letor_lines(first_qid=first, seed=first) if lines is None else lines
    (folder / name).write_text("\n".join(lines) + "\n")


# --- the cases ---------------------------------------------------------------------------

# (id, config overrides, expected message (regex)). The quickstart smoke config.
CONFIG_CASES = [
    ("T=0", ["--config.sweep.temperature=(0.,)"], r"sweep\.temperature: must be in \(0, inf\)"),
    ("T<0", ["--config.sweep.temperature=(-1.,)"], r"sweep\.temperature: must be in \(0, inf\)"),
    ("alpha>1", ["--config.sweep.alpha=(1.5,)"], r"sweep\.alpha: must be in \[0, 1\]"),
    ("alpha<0", ["--config.sweep.alpha=(-0.1,)"], r"sweep\.alpha: must be in \[0, 1\]"),
    ("lr=0", ["--config.sweep.learning_rate=(0.,)"], r"sweep\.learning_rate: must be in \(0"),
    ("teacher lr<0", ["--config.teacher.learning_rate=-1."],
     r"teacher\.learning_rate: must be in \(0"),
    ("keep ratio 0", ["--config.eval.keep_ratios=(0.,)"],
     r"eval\.keep_ratios\[0\]: must be a keep ratio in \(0, 1\]"),
    ("keep ratio 1.5", ["--config.eval.keep_ratios=(0.5, 1.5)"],
     r"eval\.keep_ratios\[1\]: must be a keep ratio in \(0, 1\]"),
    ("monitor keep ratio", ["--config.eval.monitor_keep_ratio=0."],
     r"eval\.monitor_keep_ratio: must be a keep ratio in \(0, 1\]"),
    ("k=0", ["--config.eval.k=0"], r"eval\.k: must be an int in \[1, inf\]"),
    ("top-k > list", ["--config.student.loss.kd=ranking_distillation", "--config.sweep.rd_topk=(500.,)"],
     r"sweep\.rd_topk: must be in \[1, 20\] \(the lists hold 20 candidates"),
    ("unknown dataset", ["--config.dataset=nope"], r"dataset: unknown name 'nope'; valid names"),
    ("unknown model", ["--config.student.model.name=nope"],
     r"student\.model\.name: unknown name 'nope'; valid names"),
    ("unknown kd", ["--config.student.loss.kd=nope"],
     r"student\.loss\.kd: unknown name 'nope'; valid names"),
    ("unknown gt", ["--config.student.loss.gt=nope"],
     r"student\.loss\.gt: unknown name 'nope'; valid names"),
    ("unknown ensemble", ["--config.teacher.loss.ensemble=nope"],
     r"teacher\.loss\.ensemble: unknown name 'nope'; valid names"),
    ("unknown wandb mode", ["--wandb=nope"], r"wandb\.mode: unknown name 'nope'; valid names"),
    ("unknown ndcg_empty", ["--config.eval.ndcg_empty=nope"],
     r"eval\.ndcg_empty: unknown name 'nope'; valid names"),
    ("unknown field", ["--config.student.nope=1"], r"bad flag or config override.*nope"),
    ("processes=0", ["--config.distributed.num_processes=0"],
     r"distributed\.num_processes: must be an int in \[1, 65536\]"),
    ("process id", ["--config.distributed.process_id=3"],
     r"distributed\.process_id: must be an int in \[0, 0\]"),
    ("no coordinator", ["--config.distributed.num_processes=2"],
     r"distributed\.coordinator_address: must be 'host:port'"),
    ("bad coordinator", ["--config.distributed.num_processes=2",
                         "--config.distributed.coordinator_address=localhost"],
     r"distributed\.coordinator_address: must be 'host:port' with a port in \[1, 65535\]"),
    ("cpu devices", ["--config.distributed.cpu_devices_per_process=-2"],
     r"distributed\.cpu_devices_per_process: must be an int in \[0, 4096\]"),
    ("epochs=0", ["--config.student.num_epochs=0"],
     r"student\.num_epochs: must be an int in \[1, inf\]"),
    ("chunk", ["--config.student.epochs_per_chunk=3"],
     r"student\.epochs_per_chunk: must divide student\.num_epochs=4"),
    ("batch=0", ["--config.student.batch_size=0"], r"student\.batch_size: must be an int in \[1"),
    ("batch > requests", ["--config.teacher.batch_size=100000"],
     r"teacher\.batch_size: must be in \[1, \d+\] \(the train split has"),
    ("seed", ["--config.seed=-1"], r"seed: must be an int in \[0, 2147483647\]"),
    ("name", ["--config.name=a/b"], r"name: must be a non-empty run name"),
    ("checkpoint_every", ["--config.checkpoint_every=-1"],
     r"checkpoint_every: must be an int in \[0, inf\]"),
    ("propensity_floor", ["--config.student.loss.propensity_floor=0."],
     r"student\.loss\.propensity_floor: must be in \(0, 1\]"),
    # The old name (loss.ipw_clip) is refused, naming the new one.
    ("ipw_clip renamed", ["--config.student.loss.ipw_clip=0.1"],
     r"student\.loss\.ipw_clip: renamed to student\.loss\.propensity_floor"),
    ("relevant grade", ["--config.eval.relevant_grade=0."],
     r"eval\.relevant_grade: must be a number > 0"),
    ("teachers=0", ["--config.teacher.num_teachers=0"],
     r"teacher\.num_teachers: must be an int in \[1, 64\]"),
    ("resume+overwrite", ["--resume", "--overwrite"], r"resume, overwrite: choose one"),
    ("simulator list", ["--config.data.list_size=0"], r"data\.list_size: .*\[?1"),
]


def _tabular_args(raw: Path, data: Path, train: str = "logs.csv", *extra: str) -> list[str]:
  return ["--config=configs/tabular.py:smoke", f"--config.source.manual_dir={raw}",
          f"--config.source.data_dir={data}", f"--config.source.train_file={train}",
          "--config.source.context_columns=('user_f0',)",
          "--config.source.item_columns=('item_f0','item_f1')",
          "--config.source.cross_columns=()", "--config.source.truth_column=truth",
          "--config.source.propensity_column=prop", *extra]


def _edit(rows: list[dict], index: int, **values) -> list[dict]:
  rows = [dict(r) for r in rows]
  rows[index].update(values)
  return rows


def _tabular_case(kind: str, raw: Path, data: Path) -> tuple[list[str], str]:
  """Writes the table(s) of one bad tabular input; returns (CLI args, expected message)."""
  rows = table_rows()
  csv_file = raw / "logs.csv"
  if kind == "inf feature":
    write_csv(csv_file, _edit(rows, 40, item_f1="inf"))
    return _tabular_args(raw, data), rf"{csv_file}:42: column 'item_f1' is inf.*finite"
  if kind == "-inf context":
    write_csv(csv_file, _edit(rows, 3, user_f0="-inf"))
    return _tabular_args(raw, data), rf"{csv_file}:5: column 'user_f0' is -inf.*finite"
  if kind == "propensity 0":
    write_csv(csv_file, _edit(rows, 2, prop=0.0))
    return _tabular_args(raw, data), rf"{csv_file}:4: column 'prop' is 0.0.*in \(0, 1\]"
  if kind == "propensity > 1":
    write_csv(csv_file, _edit(rows, 14, prop=1.5))
    return _tabular_args(raw, data), rf"{csv_file}:16: column 'prop' is 1.5.*in \(0, 1\]"
  if kind == "NaN truth":
    write_csv(csv_file, _edit(rows, 7, truth=""))
    return _tabular_args(raw, data), rf"{csv_file}:9: column 'truth' is null.*no nulls"
  if kind == "negative label":
    write_csv(csv_file, _edit(rows, 1, label=-1))
    return _tabular_args(raw, data), rf"{csv_file}:3: column 'label' is -1.0.*>= 0"
  if kind == "inf label":
    write_csv(csv_file, _edit(rows, 0, label="inf"))
    return _tabular_args(raw, data), rf"{csv_file}:2: column 'label' is inf.*>= 0"
  if kind == "malformed line":
    write_csv(csv_file, rows, extra_line="r0,1,0.5,0.1,0.2,1,0.5,EXTRA")
    return _tabular_args(raw, data), rf"{csv_file}:{len(rows) + 2}: malformed CSV line"
  if kind == "text feature":
    write_csv(csv_file, _edit(rows, 5, item_f0="abc"))
    return _tabular_args(raw, data), rf"column 'item_f0' .*must be numeric"
  if kind == "missing column":
    write_csv(csv_file, rows)
    return (_tabular_args(raw, data, "logs.csv", "--config.source.item_columns=('nope',)"),
            rf"{csv_file}: no column\(s\) \['nope'\]")
  if kind == "request in two splits":
    write_csv(csv_file, rows)
    write_csv(raw / "test.csv", [r for r in table_rows(seed=1) if r["request_id"] in
                                 ("r3", "r4")])
    return (_tabular_args(raw, data, "logs.csv", "--config.source.test_file=test.csv"),
            r"test.csv: column 'request_id': request 'r3' also occurs in the train file")
  if kind == "parquet inf":
    write_parquet(raw / "logs.parquet", _edit(rows, 9, item_f0=float("inf")))
    return (_tabular_args(raw, data, "logs.parquet"),
            r"logs.parquet \(row 10\): column 'item_f0' is inf.*finite")
  if kind == "parquet bad propensity":
    write_parquet(raw / "logs.parquet", _edit(rows, 0, prop=-0.5))
    return (_tabular_args(raw, data, "logs.parquet"),
            r"logs.parquet \(row 1\): column 'prop' is -0.5.*in \(0, 1\]")
  raise AssertionError(kind)


TABULAR_CASES = ["inf feature", "-inf context", "propensity 0", "propensity > 1",
                 "NaN truth", "negative label", "inf label", "malformed line", "text feature",
                 "missing column", "request in two splits", "parquet inf",
                 "parquet bad propensity"]


def _letor_args(raw: Path, data: Path, *extra: str) -> list[str]:
  return ["--config=configs/letor.py:smoke", "--config.dataset=letor",
          f"--config.source.manual_dir={raw}", f"--config.source.data_dir={data}",
          "--config.source.student_features=()", *extra]


def _letor_case(kind: str, raw: Path, data: Path) -> tuple[list[str], str]:
  lines = letor_lines()
  train = raw / "train.txt"
  if kind == "malformed line":
    write_letor(raw, train=lines[:20] + ["2 qid:0 1:0.5 2:abc"] + lines[20:])
    return _letor_args(raw, data), rf"{train}:21: not a LibSVM ranking line"
  if kind == "inf feature":
    write_letor(raw, train=lines[:6] + ["1 qid:0 1:0.5 2:inf"] + lines[6:])
    return _letor_args(raw, data), rf"{train}:7: feature 2 is inf; .*finite"
  if kind == "negative label":
    write_letor(raw, train=lines[:3] + ["-1 qid:0 1:0.5"] + lines[3:])
    return _letor_args(raw, data), rf"{train}:4: label -1.0 is not a grade; .*>= 0"
  if kind == "fractional label":
    write_letor(raw, train=lines[:9] + ["1.5 qid:0 1:0.5"] + lines[9:])
    return _letor_args(raw, data), rf"{train}:10: label 1.5 is not a grade; .*integer"
  if kind == "qid in two splits":
    write_letor(raw, test=letor_lines(first_qid=5, seed=3))
    return _letor_args(raw, data), r"test.txt: qid:5 also occurs in the train file"
  if kind == "logging feature":
    write_letor(raw)
    return (_letor_args(raw, data, "--config.source.logging_feature=99"),
            r"source\.logging_feature: feature 99 does not occur")
  if kind == "unknown feature id":
    write_letor(raw)
    return (_letor_args(raw, data, "--config.source.student_features=(1, 77)"),
            r"source\.student_features/teacher_features: feature ids \[77\]")
  raise AssertionError(kind)


LETOR_CASES = ["malformed line", "inf feature", "negative label", "fractional label",
               "qid in two splits", "logging feature", "unknown feature id"]

ALL_CASES = ([pytest.param("config", *c[1:], id=f"config: {c[0]}") for c in CONFIG_CASES]
             + [pytest.param("tabular", k, None, id=f"tabular: {k}") for k in TABULAR_CASES]
             + [pytest.param("letor", k, None, id=f"letor: {k}") for k in LETOR_CASES])


def test_the_matrix_has_at_least_40_cases():
  assert len(ALL_CASES) >= 40


def _run_case(kind, spec, expected, tmp_path):
  work, raw, data = tmp_path / "runs", tmp_path / "raw", tmp_path / "data"
  work.mkdir()
  data.mkdir()
  (work / "keep.txt").write_text("a file the failed run must not touch")
  if kind == "config":
    args = ["--config=configs/quickstart.py:smoke", *spec]
  elif kind == "tabular":
    args, expected = _tabular_case(spec, raw, data)
  else:
    args, expected = _letor_case(spec, raw, data)
  args += [f"--config.workdir={work}", "--config.progress=False"]
  if not any(a.startswith("--wandb") for a in args):
    args.append("--wandb=disabled")
  return args, expected, (work, raw, data)


@pytest.mark.parametrize("kind,spec,expected", ALL_CASES)
def test_bad_input_is_refused_before_anything_is_written(kind, spec, expected, tmp_path,
                                                         capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  args, expected, dirs = _run_case(kind, spec, expected, tmp_path)
  before = [_tree(d) for d in dirs]
  code = main(["prerank-jax", "sweep", *args])
  err = capsys.readouterr().err
  assert code != 0
  assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
  assert __import__("re").search(expected, err), err
  assert [_tree(d) for d in dirs] == before


@pytest.mark.parametrize("kind,spec", [("config", ["--config.sweep.alpha=(2.,)"]),
                                       ("tabular", "inf feature"),
                                       ("letor", "malformed line")])
def test_bad_input_through_the_installed_entry_point(kind, spec, tmp_path):
  args, expected, dirs = _run_case(kind, spec, r"sweep\.alpha: must be in \[0, 1\]",
                                   tmp_path)
  before = [_tree(d) for d in dirs]
  out = subprocess.run([sys.executable, "-m", "prerank_jax.cli", "sweep", *args], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ})
  assert out.returncode == 2, out.stderr[-2000:]
  assert __import__("re").search(expected, out.stderr), out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  assert [_tree(d) for d in dirs] == before


def test_an_internal_bug_shows_its_traceback(tmp_path, monkeypatch):
  """A ValueError raised inside a library (a bug, not bad input) is not swallowed."""
  from prerank_jax.host import runner

  def bug(*args, **kwargs):
    import numpy as np
    return np.reshape(np.arange(3), (2, 2))  # numpy raises ValueError

  monkeypatch.setattr(runner, "load_data", bug)
  monkeypatch.chdir(ROOT)
  with pytest.raises(ValueError, match="cannot reshape"):
    main(["prerank-jax", "quickstart", "--config=configs/quickstart.py:smoke",
          f"--config.workdir={tmp_path}", "--config.progress=False", "--wandb=disabled"])
