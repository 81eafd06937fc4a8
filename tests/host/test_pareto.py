"""Pareto report: the front, cost columns, the report files, and every student end to end."""

import csv
import json

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

from prerank_jax.host.pareto import (add_cost_columns, pareto_front,  # noqa: E402
                                     write_pareto_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_on_a_hand_made_case():
  costs = [1.0, 2.0, 3.0, 4.0, 2.0, 5.0]
  values = [0.1, 0.5, 0.4, 0.9, 0.5, 0.9]
  # (3, 0.4) is dominated by (2, 0.5); (5, 0.9) by (4, 0.9); the two (2, 0.5) tie.
  np.testing.assert_array_equal(pareto_front(costs, values),
                                [True, True, False, True, True, False])


def test_pareto_front_edge_cases():
  assert pareto_front([], []).shape == (0,)
  np.testing.assert_array_equal(pareto_front([1.0], [0.0]), [True])
  # A non-finite point is never on the front and dominates nothing.
  np.testing.assert_array_equal(pareto_front([1.0, np.nan, 2.0], [0.5, 1.0, np.inf]),
                                [True, False, False])
  np.testing.assert_array_equal(pareto_front([0.5, 1.0], [np.nan, 0.2]), [False, True])
  rng = np.random.default_rng(0)
  c, v = rng.uniform(size=50), rng.uniform(size=50)
  front = pareto_front(c, v)
  for i in np.flatnonzero(front):  # definition, by brute force
    assert not np.any((c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i])))
  for i in np.flatnonzero(~front):
    assert np.any((c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i])))
  with pytest.raises(ValueError, match="same length"):
    pareto_front([1.0, 2.0], [1.0])


def test_add_cost_columns():
  rows = [{"model": "student a", "status": "ok"}, {"model": "teacher", "status": "reference"},
          {"model": "random", "status": "reference"}]
  costs = {"student_params": 10, "student_flops_per_candidate": 21.0,
           "teacher_params": 100, "teacher_flops_per_candidate": 300.0}
  columns = add_cost_columns(rows, ["model", "ndcg@10", "status"], costs, num_teachers=2)
  assert columns == ["model", "ndcg@10", "params", "flops/cand", "status"]
  assert rows[0]["params"] == 10 and rows[0]["flops/cand"] == 21.0
  assert rows[1]["params"] == 200 and rows[1]["flops/cand"] == 600.0  # ensemble of 2
  assert "params" not in rows[2]


def _fake_run(root, name, rows, *, costs=None, student="mlp_student", teacher="mlp_teacher"):
  run_dir = root / name
  run_dir.mkdir(parents=True)
  columns = list(rows[0])
  with (run_dir / "results.csv").open("w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  (run_dir / "config.json").write_text(json.dumps(
      {"student": {"model": {"name": student}}, "teacher": {"model": {"name": teacher}}}))
  (run_dir / "history.json").write_text(json.dumps({"costs": costs or {}}))
  return run_dir


def _check_png(path):
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_report_from_run_dirs_with_and_without_cost_columns(tmp_path):
  # Validation values equal to the test values here: the fronts are the test fronts.
  row = lambda model, r, rec, status="ok", **extra: {
      "model": model, "recall@25%": rec, "R@(10,25%)": r, "valid/recall@25%": rec,
      "valid/R@(10,25%)": r, **extra, "status": status}
  new = _fake_run(tmp_path, "new", [
      row("student temperature=1", 0.6, 0.5, params=10, **{"flops/cand": 20.0}),
      row("student temperature=2", 0.7, 0.4, params=10, **{"flops/cand": 20.0}),
      row("student diverged", "nan", "nan", status="diverged", params=10,
          **{"flops/cand": 20.0}),
      row("teacher", 1.0, 0.6, status="reference", params=1000, **{"flops/cand": 2000.0}),
      row("oracle (truth)", 0.7, 1.0, status="reference", params="", **{"flops/cand": ""}),
  ], student="linear")
  # Written before the cost columns (history.json costs) and in the old names (T=1): read
  # in today's names.
  old = _fake_run(tmp_path, "old", [
      row("student T=1", 0.65, 0.55), row("teacher", 1.0, 0.6, status="reference"),
  ], costs={"student_params": 300, "student_flops_per_candidate": 600.0,
            "teacher_params": 1000, "teacher_flops_per_candidate": 2000.0}, student="two_tower")
  png, md = write_pareto_report([new, old], out_dir=new)
  assert (png, md) == (new / "pareto.png", new / "pareto.md")
  _check_png(png)
  text = md.read_text()
  table = [line for line in text.splitlines() if line.startswith("| new") or
           line.startswith("| old")]
  # 3 students (the diverged one dropped) + 1 teacher (the shared one deduplicated).
  assert len(table) == 4
  assert "diverged" not in text and "oracle" not in text
  by_model = {(line.split(" | ")[0][2:], line.split(" | ")[1]): line for line in table}
  assert "two_tower" in by_model[("old", "student temperature=1")] and "| 600 |" in by_model[
      ("old", "student temperature=1")]
  assert "T=1" not in text
  # Fronts: R@ panel: T=2 (0.7 at 20) and teacher (1.0); recall panel: T=1 (0.5 at 20),
  # the two_tower student (0.55 at 600) and the teacher (0.6).
  cells = {k: [c.strip() for c in v.split("|")] for k, v in by_model.items()}
  front = lambda key: (cells[key][8], cells[key][11])
  assert front(("new", "student temperature=2")) == ("✓", "")
  assert front(("new", "student temperature=1")) == ("", "✓")
  assert front(("old", "student temperature=1")) == ("", "✓")
  assert front(("new", "teacher")) == ("✓", "✓")
  with pytest.raises(ValueError, match="at least one run dir"):
    write_pareto_report([], out_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="no results.csv"):
    write_pareto_report([tmp_path / "missing"], out_dir=tmp_path)


@pytest.mark.slow
def test_every_student_end_to_end_on_tiny_with_a_report(smoke_config):
  """Each student trains with one distillation loss (hinton_listwise), is evaluated with its
  costs in the table, and the runs render a Pareto report. The first run trains a 2-member
  DCN-v2 ensemble; the others reuse it (teacher.restore_from). A last run uses the oracle
  teacher (an ensemble of 2 as well)."""
  from prerank_jax.host.runner import run

  def configure(name, student, teacher="dcn_v2", restore=""):
    config = smoke_config  # every field below is set on each call
    config.name = f"zoo_{name}"
    config.sweep.temperature, config.sweep.alpha = (1.0,), (1.0,)
    config.sweep.gt_only_baseline = False
    config.student.model.name = student
    config.student.model.hidden = (16,)
    config.teacher.model.name = teacher
    config.teacher.model.hidden = (32,)
    config.teacher.model.cross_layers = 2
    config.teacher.num_teachers = 2
    config.teacher.restore_from = restore
    return config

  run_dirs, first = [], ""
  for student in ("linear", "mlp_student", "two_tower", "int_tower"):
    result = run(configure(student, student, restore=first))
    first = first or str(result.run_dir)
    run_dirs.append(result.run_dir)
    rows = {r["model"]: r for r in result.rows}
    students = [r for r in result.rows if r["model"].startswith("student")]
    assert len(students) == 1 and students[0]["status"] == "ok"
    assert np.isfinite(students[0]["ndcg@10"]) and np.isfinite(students[0]["R@(10,25%)"])
    costs = result.history["costs"]
    assert students[0]["params"] == costs["student_params"]
    assert students[0]["flops/cand"] == costs["student_flops_per_candidate"]
    assert rows["teacher"]["flops/cand"] == 2 * costs["teacher_flops_per_candidate"]
    assert "params" in result.columns and "flops/cand" in result.columns
    header = next(csv.reader((result.run_dir / "results.csv").open()))
    assert "flops/cand" in header
    if student == "mlp_student":  # the smoke student: an order of magnitude below its teacher
      assert costs["student_flops_per_candidate"] < costs["teacher_flops_per_candidate"]

  oracle = run(configure("oracle", "mlp_student", teacher="oracle"))
  rows = {r["model"]: r for r in oracle.rows}
  for metric in ("ndcg@10", "recall@25%"):  # the teacher scores exactly the truth
    assert rows["teacher"][metric] == pytest.approx(rows["oracle (truth)"][metric])
  run_dirs.append(oracle.run_dir)

  png, md = write_pareto_report(run_dirs, out_dir=run_dirs[0])
  assert png.parent == md.parent == run_dirs[0]
  _check_png(png)
  text = md.read_text()
  for name in ("linear", "mlp_student", "two_tower", "int_tower", "dcn_v2", "oracle"):
    assert f"| {name} |" in text, name


def test_the_front_is_chosen_on_validation_and_reported_on_test(tmp_path):
  """A point that is best on test but not on validation is not on the front; a run
  without valid/ columns gets no front at all (the test split never chooses)."""
  row = lambda model, rec, valid_rec, flops: {
      "model": model, "recall@25%": rec, "R@(10,25%)": rec, "valid/recall@25%": valid_rec,
      "valid/R@(10,25%)": valid_rec, "params": 1, "flops/cand": flops, "status": "ok"}
  run = _fake_run(tmp_path, "run", [
      row("student cheap", 0.50, 0.50, 10.0),
      row("student lucky", 0.70, 0.40, 20.0),   # best on test, poor on validation
      row("student steady", 0.60, 0.60, 20.0),  # best on validation at this cost
  ])
  _, md = write_pareto_report([run], out_dir=run)
  cells = {line.split(" | ")[1]: [c.strip() for c in line.split("|")]
           for line in md.read_text().splitlines() if line.startswith("| run")}
  assert cells["student steady"][11] == "✓" and cells["student lucky"][11] == ""
  assert cells["student cheap"][11] == "✓"
  assert cells["student lucky"][10] == "0.7000" and cells["student lucky"][9] == "0.4000"
  # On test alone, "lucky" would dominate "steady": the choice really is validation's.
  assert pareto_front([10.0, 20.0, 20.0], [0.5, 0.7, 0.6]).tolist() == [True, True, False]
  old = _fake_run(tmp_path, "old", [{k: v for k, v in row("student a", 0.5, 0.5, 10.0).items()
                                     if not k.startswith("valid/")}])
  png, md = write_pareto_report([old], out_dir=old)
  _check_png(png)
  text = md.read_text()
  assert "No front" in text and "prerank-jax eval" in text and "✓" not in text
