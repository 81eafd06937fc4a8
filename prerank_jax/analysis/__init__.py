"""Results as DataFrames, statistics over seeds, and figures: the analyst's desk.

  >>> from prerank_jax import analysis
  >>> runs = analysis.load_runs(["runs/quickstart_s0", "runs/quickstart_s1"])
  >>> analysis.mean_ci(runs, ["recall@25%"], by=["setup", "model"])
  >>> per_seed, summary = analysis.paired_diff(runs, "recall@25%",
  ...                                          baseline="student gt-only")
  >>> analysis.heatmap_figure(runs, "R@(10,25%)").savefig("heatmap.png")
  >>> analysis.best_on_valid(runs, "ndcg@10")  # chosen on valid/ndcg@10, test reported

This floor reads the files the host writes (results.csv, config.json, history.json) and
imports nothing from the rest of the package, so the host (``prerank-jax report``) and
notebooks can both use it.
"""

from prerank_jax.analysis.load import (find_run_dirs, flatten_config, load_history,
                                       load_results_csv, load_run, load_runs,
                                       normalize_history, normalize_name, normalize_results,
                                       setup_key, split_model)
from prerank_jax.analysis.plots import (best_valid_cell, grid_table, headline_metrics,
                                        heatmap_figure, keep_ratio_columns,
                                        keep_ratio_families, keep_ratio_figure,
                                        learning_curves_figure, report_figures)
from prerank_jax.analysis.select import best_on_valid, require_valid, valid_column
from prerank_jax.analysis.stats import mean_ci, paired_diff, t_interval, t_quantile

__all__ = [
    "find_run_dirs", "flatten_config", "load_history", "load_results_csv", "load_run",
    "load_runs", "normalize_history", "normalize_name", "normalize_results", "setup_key",
    "split_model", "grid_table", "headline_metrics",
    "heatmap_figure", "keep_ratio_columns", "keep_ratio_families", "keep_ratio_figure",
    "learning_curves_figure", "report_figures", "best_on_valid", "best_valid_cell",
    "require_valid", "valid_column", "mean_ci", "paired_diff", "t_interval",
    "t_quantile",
]
