"""RecFlow (Kuaishou, ICLR 2025) in its two published pre-ranking protocols.

  :coarse  RecFlow's coarse-ranking benchmark (RecFlow-ICLR/RecFlow, coarse/): train on the
           all_stage rows of 2024-01-13..02-17 with BCE on effective_view of the exposed
           (realshow) rows, test on 2024-02-18's coarse test file padded to 470;
           recflow_recall@50/100/200 and recflow_ndcg@50/100/200 (RecFlow's own "ndcg":
           divided by the number of targets, not an NDCG).
  :lcron   LCRON's two-stage protocol (kwai/LCRON, deep_components/dataset2.py): 40
           candidates a request (10 each of rank_pos, rank_neg, coarse_neg, prerank_neg),
           train 2024-01-13..02-03, test 02-04; the headline joint_recall@10@20: this
           pre-ranker keeps its top 30, the teacher (the ranker, fixed) its top 20 of those.
  ,world   the days of experiments/recflow_world.py's 6-day world (train 01-13..01-17,
           test 01-18) instead of RecFlow's; ,smoke implies it and shrinks the run.
  ,ids     RecFlow's own models: a DSSM student (towers 128-64-32) and a DIN teacher over
           the ID embeddings and the behaviour sequence. Their table sizes come from the
           data's others/id_cnt.pkl: pass the overrides that
           prerank_jax.data.recflow.vocab_flags(DIR) prints (recflow_world.py prints them).

Prepare once, then run (the data cannot be downloaded automatically; see
docs/guides/recflow.md):
  python -m prerank_jax.data --config=configs/recflow.py:coarse --config.source.manual_dir=~/data/RecFlow
  prerank-jax sweep --config=configs/recflow.py:coarse --config.source.manual_dir=~/data/RecFlow
On the simulated world:
  python experiments/recflow_world.py --out /tmp/recflow --smoke
  prerank-jax sweep --config=configs/recflow.py:coarse,smoke --config.source.manual_dir=/tmp/recflow

Every run's results.csv carries both protocols' columns (config.eval.protocol="recflow":
prerank_jax/metrics/recflow.py); the protocol's headline columns are named above.

Models: without ,ids the float students and teachers of the quickstart over features
derived from RecFlow's IDs (prerank_jax/data/recflow.py); the records always carry the ID
fields (batch.context_ids, item_ids, sequence_ids) that ,ids's DSSM and DIN read.

Expected runtime on the shared 2-core CPU (at a load of 6 other jobs): ``:coarse,smoke``
89 s and ``:lcron,smoke`` 71 s wall on the --smoke world, 2 sweep points (25 s of CPU
each; tests/data/test_recflow.py), mostly preparation and compilation; ``:lcron,ids,smoke``
(DSSM and DIN) 223 s wall, 66 s CPU; ``:lcron,smoke`` streaming from the records
(``--config.input_pipeline=grain --config.streaming.read_from=records
--config.streaming.order=block``, the full configs' input) 145 s wall, 32 s CPU. Preparing
the default 6-day world (30,000 requests) for ``:lcron,world`` took 93 s wall. Full RecFlow (about 50 M stage rows a day) was not run
here: the data are not on these machines.
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.sources import RECFLOW_SOURCE
from prerank_jax.models import model_config

WORLD_DAYS = dict(recflow_train_days="2024-01-13:2024-01-17", recflow_test_day="2024-01-18")


def get_config(arg: str | None = None):
  """``arg``: one of 'coarse', 'lcron' (default 'coarse'), plus optional flags 'world',
  'ids' and 'smoke', separated by commas (e.g. ``coarse,smoke``)."""
  config, flags = quickstart_based(__file__, arg, ("coarse", "lcron", "world", "ids",
                                                  "smoke"))
  protocols = flags & {"coarse", "lcron"}
  if len(protocols) > 1:
    raise ValueError(f"configs/recflow.py: pick one protocol, 'coarse' or 'lcron'; got {arg!r}")
  protocol = next(iter(protocols), "coarse")
  smoke = "smoke" in flags
  config.name = f"recflow_{protocol}"
  config.dataset = "recflow"
  with config.unlocked():
    config.source.update(RECFLOW_SOURCE)
    config.source.recflow_protocol = protocol
    if protocol == "lcron":
      config.source.recflow_train_days = "2024-01-13:2024-02-03"
      config.source.recflow_test_day = "2024-02-04"
    if smoke or "world" in flags:
      config.source.update(WORLD_DAYS)
      # The world's lists: 120 candidates a request (60 with --smoke), not RecFlow's 470.
      config.source.list_size = 60 if smoke else 120
      # RecFlow's days keep 2% (RECFLOW_SOURCE); the small worlds' valid split, 10%.
      config.source.valid_fraction = 0.1
    # RecFlow's and LCRON's metrics in results.csv (prerank_jax/metrics/recflow.py).
    config.eval.protocol = "recflow"
  # The graded truth: the stage label (6 = click) in coarse, LCRON's 30 - rank_index
  # (rank_pos: 21..30) in lcron.
  config.eval.relevant_grade = 6.0 if protocol == "coarse" else 20.0
  config.eval.gain = "linear"
  if not smoke:
    # Train from the prepared ArrayRecord files (per-point orders within blocks of
    # records), not from a train split held on the device.
    config.input_pipeline = "grain"
    config.streaming.read_from = "records"
    config.streaming.order = "block"
  if "ids" in flags:  # the vocabularies: vocab_flags(manual_dir), see the docstring
    config.teacher.model = model_config(
        "din", hidden=(64, 32) if smoke else (256, 128),
        attention_hidden=(16,) if smoke else (32,), id_embed_dim=8 if smoke else 16)
    config.student.model = model_config(
        "dssm", id_tower=(32, 16, 8) if smoke else (128, 64, 32),
        id_embed_dim=8 if smoke else 16)
  return config
