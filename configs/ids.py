"""ID features: the simulator's ID world, a DIN teacher, a DSSM student, the 3×3 (T, α) grid.

The recommender-shaped pre-ranking set-up of issue 21 (docs/guides/id_features.md): every
request has a user ID and the user's behaviour sequence (item, author, category IDs of
earlier interactions), every candidate an item, author and category ID, beside the float
features. The teacher is DIN (target attention of each candidate over the behaviour,
an MLP over embeddings and the cross features), RecFlow's ranking baseline; the student
is DSSM (user tower over the user ID, the context and the mean-pooled behaviour; item
tower over the item IDs and item features; 128-64-32 towers), RecFlow's coarse-ranking
baseline.

Launch:
  prerank-jax quickstart --config=configs/ids.py
  prerank-jax quickstart --config=configs/ids.py:smoke      # seconds of compute, for tests

Expected runtime, measured on the shared 2-core CPU under load (7 sessions): ``smoke`` 33 s
of CPU, 87 s wall, mostly compilation. The full config (the "small" world: 2,000 requests
of 100 candidates, 1,000 users, 5,000 items) with ``--config.teacher.num_epochs=1
--config.student.num_epochs=1`` took 52 s of CPU, 72 s wall, 2.1 GB peak RSS; at its
default epochs (8 teacher, 20 student) it was not timed.
Expected result: the DIN teacher ranks better than the gt-only DSSM student, and the
distilled students lie between (in that 1-epoch run: test NDCG@10 0.667 teacher, 0.468
gt-only, 0.53-0.57 distilled; tests/models/test_ids_models.py checks the ordering, paired
over 3 world seeds).
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.simulator import id_vocab
from prerank_jax.models import model_config

# ID-world knobs on top of the quickstart's simulator preset.
ID_WORLD = dict(ids=True, num_authors=500, num_categories=20, sequence_length=20,
                zipf_exponent=1.0)
ID_WORLD_SMOKE = dict(ids=True, num_authors=30, num_categories=8, sequence_length=10,
                      zipf_exponent=1.0)


def get_config(arg: str | None = None):
  """``arg``: comma-separated flags out of 'smoke' (the quickstart's smoke sizes)."""
  config, flags = quickstart_based(__file__, arg, ("smoke",))
  smoke = "smoke" in flags
  config.name = "ids"
  with config.unlocked():
    config.data.update(ID_WORLD_SMOKE if smoke else ID_WORLD)
  vocab = id_vocab(config.data)
  ids = dict(context_vocab=vocab.context, item_vocab=vocab.items, id_embed_dim=16)
  config.teacher.model = model_config(
      "din", hidden=(64, 32) if smoke else (256, 128), attention_hidden=(16,) if smoke
      else (32,), **ids)
  config.student.model = model_config(
      "dssm", id_tower=(32, 16, 8) if smoke else (128, 64, 32), **ids)
  return config
