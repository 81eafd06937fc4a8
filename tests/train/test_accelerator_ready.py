"""Ready for accelerators: no host round trips inside a chunk, donated sweep state,
mixed precision, and a sweep layout chosen by backend."""

import jax
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import (AUTO_GROUP_SIZE, CPU_GROUP_SIZE, batch_sharding,
                                     compile_sweep, config_group_size, grid_points,
                                     group_layout, replicate, resolve_group_size,
                                     shard_sweep, stack_points, sweep_mesh)


def _student(config, splits):
  train = splits["train"]
  rng = np.random.default_rng(0)  # a fixed random "teacher" exercises the KD objective
  scored = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (1,))
                          .astype(np.float32)) for k, b in splits.items()}
  data = SweepData(scored["train"], scored["valid"])
  points = grid_points({"temperature": (1.0, 4.0), "alpha": (0.5,),
                        "learning_rate": (3e-3, 1e-2)}, seed=0)
  return config, data, points, feature_sizes(train), train.num_requests


@pytest.fixture(scope="module")
def placed(tiny_splits):
  """The student phase as the runner places it: points sharded, data replicated, the
  trainer's batch constraint on the mesh, 4 points in groups of 2 (the ``in_groups`` scan)."""
  from tests.conftest import load_config
  config, data, points, sizes, num_requests = _student(load_config(), tiny_splits)
  mesh = sweep_mesh(len(points), batch_size=config.student.batch_size)
  trainer = make_train(config, role="student", feature_sizes=sizes,
                       num_train_requests=num_requests, shard_batch=batch_sharding(mesh))
  compiled = compile_sweep(trainer, group_size=2)
  hparams, rngs = shard_sweep(stack_points(points), mesh)
  return compiled, hparams, rngs, replicate(data, mesh)


def test_training_chunk_makes_no_host_transfers(placed):
  compiled, hparams, rngs, data = placed
  state = jax.block_until_ready(compiled.init(hparams, rngs))
  with jax.transfer_guard("disallow"):
    state, stats = compiled.run_chunk(state, hparams, data)
    jax.block_until_ready((state, stats))
    # Negative control: the guard is live; a host array entering a computation (what a
    # numpy constant or batch fed per step would be) is refused.
    with pytest.raises(Exception, match="Disallowed host-to-device"):
      stats["loss"] + np.ones(stats["loss"].shape, np.float32)
  assert np.all(np.isfinite(np.asarray(stats["loss"])))


def test_chunk_donates_the_sweep_state(placed):
  compiled, hparams, rngs, data = placed
  state = compiled.init(hparams, rngs)
  old = jax.tree.leaves(state)
  exe = compiled.run_chunk.lower(state, hparams, data).compile()
  state_bytes = sum(x.nbytes for x in old)
  # Every state buffer is aliased to an output: the chunk holds one copy, not two.
  assert exe.memory_analysis().alias_size_in_bytes >= state_bytes
  new, _ = compiled.run_chunk(state, hparams, data)
  assert all(x.is_deleted() for x in old)
  assert not any(x.is_deleted() for x in jax.tree.leaves(new))
  # Not donated: the hyperparameters and the shared data are used by every chunk.
  assert not any(x.is_deleted() for x in jax.tree.leaves((hparams, data)))
  # The next chunk takes the new state (as the runner's loop does) and donates it in turn.
  again, _ = compiled.run_chunk(new, hparams, data)
  assert all(x.is_deleted() for x in jax.tree.leaves(new))
  assert jax.tree.structure(again) == jax.tree.structure(new)


def test_bfloat16_forward_trains_like_float32(placed, tiny_splits):
  """compute_dtype="bfloat16": matmuls in bf16, parameters, optimizer state and the loss in
  f32, and three epochs land within a stated tolerance of the f32 run.

  Tolerance: the per-epoch mean loss within 2% (relative) and the validation NDCG within
  0.03 of float32. bf16 keeps 8 bits of mantissa (a relative rounding of 2^-9 per value).
  The difference must also stay below what separates two hyperparameter points, so it is
  rounding, not a different training run.
  """
  from tests.conftest import load_config
  compiled, hparams, rngs, data = placed
  config = load_config()
  config.student.compute_dtype = "bfloat16"
  _, _, points, sizes, num_requests = _student(config, tiny_splits)
  mesh = sweep_mesh(len(points), batch_size=config.student.batch_size)
  low = compile_sweep(make_train(config, role="student", feature_sizes=sizes,
                                 num_train_requests=num_requests,
                                 shard_batch=batch_sharding(mesh)), group_size=2)
  runs = {}
  for name, c in (("float32", compiled), ("bfloat16", low)):
    state, history = c.init(hparams, rngs), []
    for _ in range(3):
      state, stats = c.run_chunk(state, hparams, data)
      history.append(jax.device_get(stats))
    runs[name] = state, {k: np.concatenate([h[k] for h in history], axis=1)
                         for k in history[0]}
  text = low.run_chunk.lower(runs["bfloat16"][0], hparams, data).as_text()
  assert "bf16" in text and "bf16" not in compiled.run_chunk.lower(
      runs["float32"][0], hparams, data).as_text()
  state, stats = runs["bfloat16"]
  assert all(x.dtype == np.float32 for x in jax.tree.leaves((state.params, state.opt_state))
             if np.issubdtype(x.dtype, np.floating))
  assert stats["loss"].dtype == np.float32
  ref = runs["float32"][1]
  np.testing.assert_allclose(stats["loss"], ref["loss"], rtol=0.02)
  np.testing.assert_allclose(stats["valid/ndcg@10_logs"], ref["valid/ndcg@10_logs"],
                             atol=0.03)
  rounding = np.abs(stats["loss"][:, -1] - ref["loss"][:, -1])
  between_points = np.abs(ref["loss"][:, -1] - ref["loss"][::-1, -1])
  assert rounding.max() < between_points.max()


@pytest.mark.parametrize("backend, expected", [("cpu", CPU_GROUP_SIZE), ("gpu", 0),
                                               ("cuda", 0), ("rocm", 0), ("tpu", 0)])
def test_auto_layout_is_one_vmap_on_accelerators_and_groups_on_cpu(backend, expected):
  assert resolve_group_size(AUTO_GROUP_SIZE, backend=backend) == expected
  # Groups need the device-resident pipeline; a streamed input runs one vmap.
  assert resolve_group_size(AUTO_GROUP_SIZE, backend=backend, input_pipeline="grain") == 0
  for explicit in (0, 1, 3, 64):  # the config's own choice wins on every backend
    assert resolve_group_size(explicit, backend=backend) == explicit


def test_auto_groups_split_the_points_evenly():
  from unittest import mock
  with mock.patch("jax.default_backend", return_value="cpu"):
    assert CPU_GROUP_SIZE == 1                      # shipped: one point at a time on CPU
    assert group_layout(10, devices=1, group_size=AUTO_GROUP_SIZE) == (1, 1)
    assert group_layout(10, devices=8, group_size=AUTO_GROUP_SIZE) == (8, 8)
  with mock.patch("jax.default_backend", return_value="cpu"), \
       mock.patch("prerank_jax.train.sweep.CPU_GROUP_SIZE", 4):
    assert group_layout(10, devices=1, group_size=AUTO_GROUP_SIZE) == (5, 5)  # no padding
    assert group_layout(16, devices=1, group_size=AUTO_GROUP_SIZE) == (4, 4)
    assert group_layout(3, devices=1, group_size=AUTO_GROUP_SIZE) == (1, 0)   # one vmap
    assert group_layout(10, devices=1, group_size=4) == (4, 4)  # explicit: padded to 12
  with mock.patch("jax.default_backend", return_value="tpu"):
    assert group_layout(64, devices=8, group_size=AUTO_GROUP_SIZE) == (8, 0)


def test_config_group_size_reads_the_config():
  from tests.conftest import load_config
  config = load_config()
  assert config.sweep.group_size == AUTO_GROUP_SIZE  # the shipped default is auto
  from unittest import mock
  with mock.patch("jax.default_backend", return_value="cpu"):
    assert config_group_size(config) == AUTO_GROUP_SIZE  # group_layout splits evenly
    config.input_pipeline = "grain"
    assert config_group_size(config) == 0                # a streamed input: one vmap
    config.input_pipeline = "device"
  with mock.patch("jax.default_backend", return_value="gpu"):
    assert config_group_size(config) == 0
  config.sweep.group_size = 3
  assert config_group_size(config) == 3


def test_unknown_compute_dtype_names_the_field():
  from prerank_jax.config import ConfigError, validate_config
  from tests.conftest import load_config
  config = load_config()
  config.student.compute_dtype = "float16"
  with pytest.raises(ConfigError, match=r"student.compute_dtype: unknown compute dtype "
                     r"'float16'; valid names are \['bfloat16', 'float32'\]"):
    validate_config(config)


def test_checkpoints_take_epath_and_uri_paths(tmp_path):
  """The checkpointer works on ``etils.epath`` paths (what ``gs://`` paths are), tested
  through the same code with a local one: save, manifest, damage check, restore."""
  import jax.numpy as jnp
  from etils import epath

  from prerank_jax.host.checkpoint import MANIFEST, SweepCheckpointer, checkpoint_path
  from prerank_jax.train.loop import TrainState

  # A URI is kept as it is; resolving it would make "gs:/bucket" a local directory.
  assert str(checkpoint_path("gs://bucket/runs/x/checkpoints/student")) == (
      "gs://bucket/runs/x/checkpoints/student")
  assert checkpoint_path(str(tmp_path / "a" / ".." / "c")) == epath.Path(tmp_path / "c")
  state = TrainState({"w": jnp.arange(4.0)}, {"m": jnp.ones(4)}, jax.random.key(3),
                     jnp.asarray(2, jnp.int32), jnp.asarray(False))
  ckpt = SweepCheckpointer(epath.Path(tmp_path) / "c")
  ckpt.save(1, state, {"history": []})
  assert (tmp_path / "c" / "1" / MANIFEST).is_file()
  assert ckpt._verified(1) is True
  restored, meta = ckpt.restore_latest(state)
  ckpt.close()
  assert meta["chunk"] == 1
  np.testing.assert_array_equal(restored.params["w"], np.arange(4.0))
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))


def test_data_dir_keeps_uris(tmp_path, monkeypatch):
  from prerank_jax.data.tfds_base import default_data_dir
  assert str(default_data_dir("gs://bucket/tensorflow_datasets")) == (
      "gs://bucket/tensorflow_datasets")
  monkeypatch.setenv("TFDS_DATA_DIR", "gs://bucket/from_env")
  assert str(default_data_dir("")) == "gs://bucket/from_env"
  assert default_data_dir(str(tmp_path / "a" / ".." / "d")) == tmp_path / "d"  # local: absolute
