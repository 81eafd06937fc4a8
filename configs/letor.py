"""LETOR / LibSVM ranking files (MSLR-WEB10K/30K, Istella, Yahoo C14, your own): the
quickstart's teacher → distillation sweep → evaluation on real relevance judgements, with
exposure simulated by a noisy logging ranker (see prerank_jax/data/letor.py).

Prepare once (raw files from the manual dir → ArrayRecord under source.data_dir), then run:
  python -m prerank_jax.data --config=configs/letor.py --config.source.manual_dir=~/data/MSLR-WEB10K
  prerank-jax sweep --config=configs/letor.py --config.source.manual_dir=~/data/MSLR-WEB10K
Your own files: --config.dataset=letor --config.source.student_features="()"
--config.source.train_file=a.train (and optionally valid_file/test_file; a `<file>.query`
group file replaces qid: tokens). MSLR's feature ids below are refused on other datasets:
give the ids of your file's cheap features, or () for all of them.

Feature sets (MSLR ids, 1-based): the student sees 20 cheap, mostly query-independent or
single-stream features; the teacher sees all 136. `arg="all"` gives the student all 136.

Expected runtime on a 2-core CPU, measured on a synthetic file of the MSLR shape (136
features, 120 documents a query): preparing 96,000 lines (135 MB) took 9.6 s and the sweep
on 600 train queries 17 s. An MSLR-WEB10K fold (about 6,000 train queries, 1.2M lines)
should take about 2 minutes to prepare and 3 to run (extrapolated: the data are not on
these machines). `:smoke` on the test fixtures: seconds.
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.sources import LETOR_SOURCE


def get_config(arg: str | None = None):
  """``arg``: comma-separated flags out of 'all', 'smoke'; ``smoke`` shrinks the run for
  tests (the quickstart's smoke sizes: few epochs, small batches, lists of 20)."""
  config, flags = quickstart_based(__file__, arg, ("all", "smoke"))
  smoke = "smoke" in flags
  config.name = "letor"
  config.dataset = "mslr_web/10k_fold1"
  # Lists of 120, 10 exposed, the student's 20 cheap MSLR features (MSLR_STUDENT_FEATURES),
  # the teacher's all 136: prerank_jax/data/sources.py.
  config.source.update(LETOR_SOURCE)
  if "all" in flags:
    config.source.student_features = ()
  config.eval.relevant_grade = 2.0     # MSLR grades 0..4
  for role in ("teacher", "student"):
    config[role].loss.gt = "softmax"   # graded labels: a listwise ground-truth loss
  if smoke:
    config.source.list_size = 20
    config.source.min_list_size = config.eval.k
  return config
