"""Figures: what each draws is checked against the data it was given (not pixels)."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from prerank_jax.analysis import (grid_table, headline_metrics, heatmap_figure,
                                  keep_ratio_columns, keep_ratio_families, keep_ratio_figure,
                                  learning_curves_figure, report_figures)

TS, ALPHAS = (1.0, 2.0, 5.0), (0.5, 1.0)


def results(seeds=(0,), *, replicate=False):
  """Rows like load_runs: a T × α grid, gt-only, teacher, oracle and random, per seed."""
  rng = np.random.default_rng(0)
  rows = []
  for s in seeds:
    ids = dict(setup="s", run="run", program="",
               **({"seed": 0, "replicate_seed": s} if replicate else {"seed": s}))
    for t in TS:
      for a in ALPHAS:
        base = 0.3 + 0.02 * t - 0.05 * abs(a - 0.5)
        rows.append(dict(ids, model=f"student temperature={t:g} alpha={a:g}",
                         point=f"temperature={t:g} alpha={a:g}",
                         role="student", status="ok", temperature=t, alpha=a,
                         **{f"recall@{p}%": base * p / 25 + rng.normal(0, 0.01)
                            for p in (10, 25, 50)},
                         **{"R@(10,25%)": base + rng.normal(0, 0.01),
                            "sys_ndcg@10@10%": 0.5 + 0.001 * t, "sys_ndcg@10@25%": 0.6},
                         # Validation prefers low T and α = 1, the test split high T and
                         # α = 0.5: the best cell on validation is not the test's.
                         **{"valid/R@(10,25%)": 0.4 - 0.02 * t + 0.05 * abs(a - 0.5)
                            + rng.normal(0, 0.001),
                            "valid/recall@25%": 0.3 - 0.01 * t + 0.02 * a}))
    rows.append(dict(ids, model="student gt-only", point="gt-only", role="student",
                     status="ok", temperature=1.0, alpha=0.0, **{"recall@10%": 0.1, "recall@25%": 0.2,
                                                        "recall@50%": 0.4,
                                                        "R@(10,25%)": 0.25}))
    rows.append(dict(ids, model="student temperature=9 alpha=9",
                     point="temperature=9 alpha=9", role="student",
                     status="diverged", temperature=9.0, alpha=9.0,
                     **{"recall@10%": 9.0, "recall@25%": 9.0, "recall@50%": 9.0,
                        "R@(10,25%)": 9.0}))
    for model, v in (("teacher", 0.5), ("oracle (truth)", 0.9), ("random", 0.2)):
      rows.append(dict(ids, model=model, point=model,
                       role="teacher" if model == "teacher" else "reference",
                       status="reference", **{"recall@10%": v / 2, "recall@25%": v,
                                              "recall@50%": min(1.0, 1.5 * v),
                                              "R@(10,25%)": v}))
  return pd.DataFrame(rows)


def test_keep_ratio_columns_and_families():
  cols = ["recall@10", "recall@50%", "recall@10%", "R@(10,25%)", "sys_ndcg@10@25%",
          "retention@25%", "sys_loss@10%"]
  assert keep_ratio_columns(cols, "recall") == [(0.1, "recall@10%"), (0.5, "recall@50%")]
  assert keep_ratio_columns(cols, "sys_ndcg@10") == [(0.25, "sys_ndcg@10@25%")]
  assert keep_ratio_families(cols) == ["recall", "sys_ndcg@10", "sys_loss"]
  # The keep ratio closest to 25%: 10% is nearer than 50%.
  assert headline_metrics(cols) == ["R@(10,25%)", "recall@10%", "sys_ndcg@10@25%"]
  assert headline_metrics(cols, keep_ratio=0.5)[1] == "recall@50%"


@pytest.mark.parametrize("replicate", [False, True])
def test_grid_table_is_the_mean_over_seeds(replicate):
  frame = results(seeds=(0, 1, 2), replicate=replicate)
  mean, half, seeds = grid_table(frame, "R@(10,25%)")
  assert seeds == 3 and list(mean.index) == list(TS) and list(mean.columns) == list(ALPHAS)
  for t in TS:
    for a in ALPHAS:
      x = frame[(frame["temperature"] == t) & (frame["alpha"] == a)]["R@(10,25%)"].to_numpy()
      assert mean.loc[t, a] == pytest.approx(x.mean())
      assert half.loc[t, a] > 0
  # gt-only (α = 0) and the diverged point are not grid cells.
  assert 0.0 not in mean.columns and 9.0 not in mean.index
  with pytest.raises(ValueError, match="rows='learning_rate' is not a column"):
    grid_table(frame, "R@(10,25%)", rows="learning_rate")


def test_heatmap_shows_the_table_and_outlines_the_cell_chosen_on_validation():
  frame = results(seeds=(0, 1))
  fig = heatmap_figure(frame, "R@(10,25%)")
  assert isinstance(fig, Figure)
  ax = fig.axes[0]
  mean, half, _ = grid_table(frame, "R@(10,25%)")
  np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), mean.to_numpy())
  texts = [t.get_text() for t in ax.texts]
  assert len(texts) == mean.size and all("±" in t for t in texts)
  assert f"{mean.loc[5.0, 0.5]:.3f}\n±{half.loc[5.0, 0.5]:.3f}" in texts
  (box,) = ax.patches
  chosen, _, _ = grid_table(frame, "valid/R@(10,25%)")
  i, j = np.unravel_index(np.nanargmax(chosen.to_numpy()), chosen.shape)
  assert box.get_xy() == (j - 0.5, i - 0.5)
  assert (chosen.index[i], chosen.columns[j]) == (1.0, 1.0)
  # ... which is not the cell with the best test value (never the one outlined).
  ti, tj = np.unravel_index(np.nanargmax(mean.to_numpy()), mean.shape)
  assert (ti, tj) != (i, j)
  assert "gt-only: 0.250" in ax.get_title() and "best valid/R@(10,25%)" in ax.get_title()
  # A run without validation columns: no cell is chosen, and the title says so.
  old = heatmap_figure(frame.drop(columns=["valid/R@(10,25%)"]), "R@(10,25%)").axes[0]
  assert not old.patches and "no valid/R@(10,25%) column" in old.get_title()
  # One seed: values only, no interval.
  single = heatmap_figure(results(seeds=(0,)), "R@(10,25%)").axes[0]
  assert not any("±" in t.get_text() for t in single.texts)
  assert "one seed" in single.get_title()


def test_heatmap_panels_per_program():
  frame = pd.concat([results().assign(program="kd=a"), results().assign(program="kd=b")])
  fig = heatmap_figure(frame, "recall@25%")
  titles = [ax.get_title() for ax in fig.axes if ax.images]
  assert len(titles) == 2 and "[kd=a]" in titles[0] and "[kd=b]" in titles[1]


def test_keep_ratio_figure_draws_every_model_beside_the_references():
  frame = results(seeds=(0, 1))
  fig = keep_ratio_figure(frame, families=["recall"])
  (ax,) = [a for a in fig.axes if a.lines]
  lines = {line.get_label(): line for line in ax.lines}
  expected = set(frame.loc[frame["status"] != "diverged", "model"])
  assert set(lines) == expected
  teacher = lines["teacher"]
  np.testing.assert_allclose(teacher.get_xdata(), [10, 25, 50])
  np.testing.assert_allclose(teacher.get_ydata(), [0.25, 0.5, 0.75])
  assert teacher.get_color() == "black"
  student = frame[frame["model"] == "student temperature=2 alpha=1"]
  np.testing.assert_allclose(lines["student temperature=2 alpha=1"].get_ydata(),
                             student[["recall@10%", "recall@25%", "recall@50%"]].mean())
  assert len(ax.collections) == len(expected)  # one shaded interval per line (2 seeds)
  # Default families: recall and the cascade's sys_* columns.
  assert len([a for a in keep_ratio_figure(frame).axes if a.lines]) == 2
  with pytest.raises(ValueError, match="no '<family>@<r>%' columns"):
    keep_ratio_figure(frame[["model", "setup", "R@(10,25%)"]])


def test_learning_curves_and_report_figures():
  history = pd.DataFrame([
      {"setup": "s", "run": "r", "seed": s, "model": m, "role": "student", "epoch": e,
       "loss": 1.0 / e + 0.1 * s, "valid/R@(10,25%)": 0.1 * e}
      for s in (0, 1) for m in ("student a", "student b") for e in (1, 2, 3)])
  fig = learning_curves_figure(history)
  panels = [a for a in fig.axes if a.lines]
  assert [a.get_title() for a in panels] == ["loss", "valid/R@(10,25%)"]
  a_loss = [line for line in panels[0].lines if line.get_label() == "student a"][0]
  np.testing.assert_allclose(a_loss.get_ydata(), [1.05, 0.55, 1 / 3 + 0.05])
  figures = report_figures(results(seeds=(0, 1)), history)
  assert list(figures) == ["heatmap_R_10_25.png", "heatmap_recall_25.png",
                           "heatmap_sys_ndcg_10_25.png", "keep_ratio.png",
                           "learning_curves.png"]
  # No T × α grid (one α): no heatmaps, the rest still drawn.
  flat = results()
  assert "heatmap_recall_25.png" not in report_figures(flat[flat["alpha"] != 1.0])


def test_report_write_figures_saves_pngs_next_to_the_tables(tmp_path):
  from prerank_jax.host.report import write_figures

  from tests.analysis.test_load import grid_rows, write_run

  history = {"students": {"temperature=1 alpha=0.5 learning_rate=0.003": {"loss": [0.5, 0.4]}}}
  runs = [write_run(tmp_path, f"grid_s{s}", grid_rows(0.01 * s), seed=s, history=history)
          for s in (0, 1)]
  written = write_figures(runs, out_dir=runs[0])
  assert [p.name for p in written] == ["heatmap_R_10_25.png", "heatmap_recall_25.png",
                                       "keep_ratio.png", "learning_curves.png"]
  for path in written:
    assert path.parent == runs[0] and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
