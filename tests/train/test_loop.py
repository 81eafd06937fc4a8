"""make_train / vmapped sweep: vmap equals a loop, no recompiles, divergence is contained."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import compile_sweep, grid_points, group_layout, stack_points


@pytest.fixture(scope="module")
def setup(tiny_splits):
  from tests.conftest import load_config
  config = load_config()
  config.student.num_epochs = 2
  train = tiny_splits["train"]
  # A fixed random "teacher" is enough to exercise the student objective here.
  rng = np.random.default_rng(0)
  with_teacher = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (1,))
                                .astype(np.float32)) for k, b in tiny_splits.items()}
  data = SweepData(with_teacher["train"], with_teacher["valid"])
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  return config, trainer, data


def test_vmapped_sweep_equals_python_loop(setup):
  _, trainer, data = setup
  points = grid_points({"temperature": (1.0, 4.0), "alpha": (0.0, 0.7),
                        "learning_rate": (3e-3,)}, seed=0)
  hparams, rngs = stack_points(points)
  state, hist = compile_sweep(trainer).train(hparams, rngs, data)
  single = jax.jit(trainer.train)
  for i in range(len(points)):
    hp_i = jax.tree.map(lambda x: x[i], hparams)
    s_i, h_i = single(hp_i, rngs[i], data)
    for a, b in zip(jax.tree.leaves(s_i.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b[i], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(h_i["loss"], hist["loss"][i], rtol=1e-4)


def test_chunked_run_equals_whole_train(setup):
  config, trainer, data = setup
  hparams, rngs = stack_points(grid_points({"temperature": (2.0,), "alpha": (0.5,),
                                            "learning_rate": (3e-3,)}, seed=0))
  compiled = compile_sweep(trainer)
  whole, _ = compiled.train(hparams, rngs, data)
  state = compiled.init(hparams, rngs)
  for _ in range(config.student.num_epochs // config.student.epochs_per_chunk):
    state, _ = compiled.run_chunk(state, hparams, data)
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # once per compilation


def count_compilations(compiled, data, grids) -> list[int]:
  """Compilations (lowerings to MLIR, whether or not the persistent cache then serves the
  binary) during ``compiled.run_chunk`` for each ``(temperatures, alphas, lr)`` grid."""
  lowerings = []

  def listen(event, duration, **kwargs):
    if event == LOWERING:
      lowerings.append(duration)

  counts = []
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    for temps, alphas, lr in grids:
      hp, rngs = stack_points(grid_points({"temperature": temps, "alpha": alphas,
                                           "learning_rate": (lr,)}, seed=3))
      state = jax.block_until_ready(compiled.init(hp, rngs))
      before = len(lowerings)
      jax.block_until_ready(compiled.run_chunk(state, hp, data))
      counts.append(len(lowerings) - before)
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  return counts


def test_changing_traced_hyperparameters_does_not_recompile(setup):
  """The program the runner runs (``compile_sweep(...).run_chunk``) compiles once; other
  values of T, α and the learning rate reuse it."""
  _, trainer, data = setup
  compiled = compile_sweep(trainer)
  grids = [((1.0, 2.0), (0.1,), 1e-3), ((7.0, 0.3), (0.9,), 5e-2), ((0.5, 3.0), (0.5,), 3e-4)]
  counts = count_compilations(compiled, data, grids)
  assert counts[0] >= 1, counts  # the first grid compiles: the counter sees compilations
  assert counts[1:] == [0, 0], counts
  assert compiled.run_chunk._cache_size() == 1


def test_a_diverging_point_is_frozen_and_the_others_are_unaffected(setup):
  _, trainer, data = setup
  compiled = compile_sweep(trainer)
  good = grid_points({"temperature": (2.0,), "alpha": (0.5,), "learning_rate": (3e-3,)},
                     seed=0)
  bad = grid_points({"temperature": (2.0,), "alpha": (0.5,), "learning_rate": (1e30,)},
                    seed=0)
  hp, rngs = stack_points(good + bad)
  state, hist = compiled.train(hp, rngs, data)
  alone, alone_hist = compiled.train(*stack_points(good), data)
  assert not bool(state.diverged[0]) and bool(state.diverged[1])
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(alone.params)):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(a[1]))  # frozen at its last finite parameters
  np.testing.assert_allclose(hist["loss"][0], alone_hist["loss"][0], rtol=1e-5)


def test_grid_rejects_bad_values_and_unknown_axes():
  with pytest.raises(ValueError, match=r"sweep.temperature: must be in \(0, inf\)"):
    grid_points({"temperature": (0.0,)}, seed=0)
  with pytest.raises(ValueError, match=r"sweep.temp: not a traced hyperparameter"):
    grid_points({"temp": (1.0,)}, seed=0)


# 1: a scan over single points (the layout the CPU runs); 3: vmapped groups inside the
# scan. (2 took another 21 s of CI for the same code path.)
@pytest.mark.parametrize("group_size", [1, 3])
def test_points_in_groups_equal_one_vmap(setup, group_size):
  """sweep.group_size: a scan over groups of vmapped points computes every point the same
  (to float tolerance: XLA may pick other kernels for another batch size, as vmap vs loop)."""
  _, trainer, data = setup
  points = grid_points({"temperature": (0.5, 1.0, 4.0), "alpha": (0.3, 0.9),
                        "learning_rate": (3e-3,)}, seed=0)  # 6 points
  hparams, rngs = stack_points(points)
  whole, whole_hist = compile_sweep(trainer).train(hparams, rngs, data)
  grouped = compile_sweep(trainer, group_size=group_size)
  state, hist = grouped.train(hparams, rngs, data)
  for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for key in whole_hist:
    np.testing.assert_allclose(whole_hist[key], hist[key], rtol=2e-4, atol=2e-5)
  # run_chunk too, and the order of the points is kept (no point is swapped for another).
  chunk, _ = grouped.run_chunk(grouped.init(hparams, rngs), hparams, data)
  first, _ = compile_sweep(trainer).run_chunk(grouped.init(hparams, rngs), hparams, data)
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(chunk.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert not np.allclose(b[0], b[-1])  # the points really differ


def test_points_that_do_not_split_into_groups_are_refused(setup):
  _, trainer, data = setup
  hparams, rngs = stack_points(grid_points({"temperature": (0.5, 1.0, 4.0)}, seed=0))
  with pytest.raises(ValueError, match="sweep.group_size"):
    compile_sweep(trainer, group_size=2).train(hparams, rngs, data)


def test_group_layout_rounds_groups_to_the_devices_and_pads_the_points():
  assert group_layout(10, devices=1, group_size=0) == (1, 0)     # one vmap
  assert group_layout(10, devices=1, group_size=4) == (4, 4)     # pad to 12: 3 groups of 4
  assert group_layout(10, devices=8, group_size=4) == (8, 8)     # group rounded up to 8
  assert group_layout(10, devices=1, group_size=10) == (1, 0)    # one group is one vmap
  assert group_layout(10, devices=8, group_size=9) == (8, 0)     # 16 ≥ 10 points: one vmap


def test_chunked_scoring_equals_scoring_whole(setup):
  """Scoring a split in chunks of requests (bounded activations for long lists and big
  splits) gives the whole split's scores: on the host (apply_in_chunks, remainder chunk
  included) and inside the compiled monitor (score_in_chunks, padded lax.map)."""
  from prerank_jax.train.loop import score_in_chunks
  from prerank_jax.train.sweep import apply_in_chunks

  _, trainer, data = setup
  valid = data.valid
  r, n = valid.valid.shape
  hparams, rngs = stack_points(grid_points({"temperature": (1.0, 2.0, 4.0)}, seed=0))
  compiled = compile_sweep(trainer)
  params = compiled.init(hparams, rngs).params
  whole = np.asarray(compiled.apply(params, valid))                      # [3, R, N]
  budget = 3 * n * (r // 3 - 1)          # chunks of r//3 - 1 requests: a remainder too
  assert r % (r // 3 - 1)
  np.testing.assert_allclose(apply_in_chunks(compiled.apply, params, valid, budget=budget),
                             whole, rtol=1e-6, atol=1e-6)
  one = jax.tree.map(lambda x: x[0], params)
  for chunk in (1, 7, r):                                                # padded, exact
    scored = jax.jit(lambda b, c=chunk: score_in_chunks(
        lambda x: trainer.model.apply(one, x), b, budget=c * n))(valid)
    np.testing.assert_allclose(scored, whole[0], rtol=1e-6, atol=1e-6, err_msg=str(chunk))
