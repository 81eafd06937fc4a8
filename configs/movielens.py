"""MovieLens (GroupLens ml-100k or ml-1m files): a request is a user; candidates are the
user's later-rated items plus sampled unrated ones; the teacher also sees user×genre
affinities from the user's earlier ratings (see prerank_jax/data/movielens.py).

  python -m prerank_jax.data --config=configs/movielens.py --config.source.manual_dir=~/data/ml-100k
  prerank-jax sweep --config=configs/movielens.py --config.source.manual_dir=~/data/ml-100k
`--config.dataset=movielens/1m` picks ml-1m; plain `movielens` takes whichever is there.

Expected runtime on a 2-core CPU: not measured on ml-100k itself (the data are not on
these machines); ml-100k has 943 users, fewer requests than the quickstart's 2,000, so
about a minute is expected. `:smoke` on the test fixture: seconds.
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.sources import MOVIELENS_SOURCE


def get_config(arg: str | None = None):
  """``arg``: comma-separated flags out of 'smoke'; ``smoke`` shrinks the run for
  tests (the quickstart's smoke sizes: few epochs, small batches, lists of 20)."""
  config, flags = quickstart_based(__file__, arg, ("smoke",))
  smoke = "smoke" in flags
  config.name = "movielens"
  config.dataset = "movielens"
  config.source.update(MOVIELENS_SOURCE)  # lists of 100, 50 negatives: data/sources.py
  config.eval.relevant_grade = 4.0     # ratings 4 and 5 count as relevant
  for role in ("teacher", "student"):
    # Every exposed label is a rating >= 1, so a pointwise "label > 0" loss sees only
    # positives; the listwise softmax loss uses the grades.
    config[role].loss.gt = "softmax"
  if smoke:
    config.source.list_size = 30
    config.source.num_negatives = 10
    config.source.min_list_size = config.eval.k
  return config
