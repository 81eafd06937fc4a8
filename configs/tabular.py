"""Bring your own data: a Parquet or CSV table, one row per (request, candidate), with the
columns named below (see prerank_jax/data/tabular.py for every field and rule).

  python -m prerank_jax.data --config=configs/tabular.py --config.source.manual_dir=~/data/mine \
      --config.source.train_file=logs.parquet
  prerank-jax sweep --config=configs/tabular.py --config.source.manual_dir=~/data/mine \
      --config.source.train_file=logs.parquet

Expected runtime on a 2-core CPU, on the README's example table (300 requests × 40
candidates), measured by ``python benchmarks/tabular_example.py`` on the shared 2-core CPU
(load 16–18; benchmarks/results/tabular_example.json): `:smoke` 68 CPU-s including
preparation, the full config 75 CPU-s once prepared (199 s and 224 s wall at that load).
Training time grows with the number of requests (the quickstart's 2,000: about 35 s).
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.sources import TABULAR_SOURCE


def get_config(arg: str | None = None):
  """``arg``: comma-separated flags out of 'smoke'; ``smoke`` shrinks the run for
  tests (the quickstart's smoke sizes: few epochs, small batches, lists of 20)."""
  config, flags = quickstart_based(__file__, arg, ("smoke",))
  smoke = "smoke" in flags
  config.name = "tabular"
  config.dataset = "tabular"
  # The example table's columns (request_id, label, user_f*, item_f*, cross_f0) and lists
  # of up to 100: prerank_jax/data/sources.py.
  config.source.update(TABULAR_SOURCE)
  config.eval.relevant_grade = 1.0     # binary clicks: a label of 1 is relevant
  if smoke:
    config.source.list_size = 20
    config.source.min_list_size = config.eval.k
  return config
