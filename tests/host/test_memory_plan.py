"""The memory plan (issue 21): parameter + optimizer memory per point and in total, from the
models' shapes, and a refusal with the numbers and the remedies before anything is written."""

import jax
import pytest

from prerank_jax.batch import BatchError, feature_sizes
from prerank_jax.config_files import load_config_file
from prerank_jax.data.simulator import simulate
from prerank_jax.host.plan import (check_data_ids, memory_plan, student_points,
                                   student_programs)
from prerank_jax.host.runner import run
from prerank_jax.models import build_model, param_count


@pytest.fixture(scope="module")
def ids_config():
  config = load_config_file("configs/ids.py", "smoke")
  config.progress = False
  config.wandb.mode = "disabled"
  return config


@pytest.fixture(scope="module")
def sizes(ids_config):
  return feature_sizes(simulate(ids_config.data, seed=0)["train"])


def test_plan_counts_parameters_and_adam_state(ids_config, sizes):
  config = ids_config
  config.sweep.group_size = 2
  plan = memory_plan(config, student_programs(config), sizes, data_bytes=1000,
                     limit_bytes=1 << 40)
  teacher, students = plan.phases
  options = {k: v for k, v in config.student.model.items() if k != "name"}
  dssm = build_model("dssm", feature_sizes=sizes, **options)
  p = param_count(dssm.init(jax.random.key(0)))
  assert students.params == p
  assert students.tables == sum(config.student.model.context_vocab
                                + config.student.model.item_vocab) * 16
  k = len(student_points(config))              # 3 × 3 grid + gt-only = 10 points
  assert k == 10 and students.points == 10 and students.group == 2
  assert students.point_bytes == 3 * 4 * p     # parameters + Adam's two moments
  # The sparse update (the default): a stepping point has no dense table gradient.
  assert config.student.embedding_update == "sparse" and students.sparse
  assert students.total_bytes == (10 * 3 * p + 2 * 2 * (p - students.tables)) * 4
  assert plan.peak_bytes == max(teacher.total_bytes, students.total_bytes) + 1000
  text = plan.describe()
  assert f"{p:,} parameters" in text and "per point × 10 point(s)" in text
  assert "(sparse update)" in text
  plan.check()  # fits in 1 TiB
  config.student.embedding_update = "dense"
  dense = memory_plan(config, student_programs(config), sizes, data_bytes=1000,
                      limit_bytes=1 << 40).phases[1]
  assert dense.total_bytes == (10 * 3 + 2 * 2) * 4 * p
  assert dense.point_bytes == students.point_bytes    # the resident state is the same
  config.student.embedding_update = "sparse"


def test_refusal_states_the_numbers_and_the_remedies(ids_config, sizes):
  plan = memory_plan(ids_config, student_programs(ids_config), sizes, limit_bytes=100_000)
  with pytest.raises(MemoryError) as error:
    plan.check()
  message = str(error.value)
  for part in ("students (dssm) needs", "parameters + Adam state",
               "fewer points", "sweep.group_size", "hash_buckets", "id_embed_dim",
               "Nothing was written"):
    assert part in message
  assert "embedding_update" not in message        # already sparse: not a remedy
  ids_config.student.embedding_update = ids_config.teacher.embedding_update = "dense"
  try:
    plan = memory_plan(ids_config, student_programs(ids_config), sizes, limit_bytes=100_000)
    with pytest.raises(MemoryError, match="embedding_update='sparse'"):
      plan.check()
  finally:
    ids_config.student.embedding_update = ids_config.teacher.embedding_update = "sparse"


def test_a_run_that_does_not_fit_is_refused_before_anything_is_written(ids_config, tmp_path):
  config = load_config_file("configs/ids.py", "smoke")
  config.progress, config.wandb.mode = False, "disabled"
  config.workdir = str(tmp_path / "runs")
  # 2^31 − 1 rows of d = 16 per item table: 128 GiB per copy, far past any host here.
  for role in ("teacher", "student"):
    config[role].model.item_vocab = (2**31 - 1,) + tuple(config[role].model.item_vocab[1:])
  with pytest.raises(MemoryError, match=r"plan: the sweep does not fit: .* GiB"):
    run(config)
  assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_ids_outside_the_vocabulary_are_refused_naming_the_config_field(ids_config):
  splits = simulate(dict(ids_config.data, num_users=80), seed=0)
  with pytest.raises(BatchError, match=r"context_ids\[..., 0\]: IDs must lie in \[0, 50\].*"
                     r"teacher.model.context_vocab"):
    check_data_ids(ids_config, splits)
  check_data_ids(ids_config, simulate(ids_config.data, seed=0))
