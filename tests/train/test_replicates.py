"""sweep.seeds: student replicates as one more vmapped axis of the same compiled program."""

import jax
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.config import ConfigError, validate_config
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sweep import grid_points, replicate_points, stack_points


def test_replicate_points_is_the_point_major_product():
  points = grid_points({"temperature": (1.0, 4.0), "alpha": (0.5,)}, seed=9)
  out = replicate_points(points, (3, 7))
  assert [p.seed for p in out] == [3, 7, 3, 7]
  assert [p.name for p in out] == [
      "temperature=1 alpha=0.5 seed=3", "temperature=1 alpha=0.5 seed=7",
      "temperature=4 alpha=0.5 seed=3", "temperature=4 alpha=0.5 seed=7"]
  assert [p.hparams for p in out] == [points[0].hparams] * 2 + [points[1].hparams] * 2
  assert replicate_points(points, ()) == points  # () = one replicate, the point's own seed


@pytest.fixture(scope="module")
def setup(tiny_splits):
  from tests.conftest import load_config
  config = load_config()
  config.student.num_epochs = 2
  rng = np.random.default_rng(1)
  scored = {k: b._replace(teacher_scores=rng.normal(size=b.label.shape + (1,))
                          .astype(np.float32)) for k, b in tiny_splits.items()}
  data = SweepData(scored["train"], scored["valid"])
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(data.train),
                       num_train_requests=data.train.num_requests)
  return trainer, data


def test_replicates_in_one_program_equal_separate_runs(setup):
  trainer, data = setup
  # α < 1: at α = 1 the listwise loss leaves the output bias without a gradient, and
  # Adam turns the float noise there into steps that differ between vmap and a loop.
  grid = grid_points({"temperature": (2.0,), "alpha": (0.0, 0.5), "learning_rate": (3e-3,)},
                     seed=0)
  points = replicate_points(grid, (0, 1))
  traces = []
  counted = jax.jit(jax.vmap(lambda h, r, d: (traces.append(1), trainer.train(h, r, d))[1],
                             in_axes=(0, 0, None)))
  hparams, rngs = stack_points(points)
  state, hist = counted(hparams, rngs, data)
  # Another grid with the same number of points and other seeds: still the same program.
  counted(*stack_points(replicate_points(grid, (5, 6))), data)
  assert len(traces) == 1
  single = jax.jit(trainer.train)
  for i, point in enumerate(points):
    # A separate run: the point alone, keyed by its own seed.
    hp_i, rng_i = stack_points([point._replace(name="alone")])
    s_i, h_i = single(jax.tree.map(lambda x: x[0], hp_i), rng_i[0], data)
    for a, b in zip(jax.tree.leaves(s_i.params), jax.tree.leaves(state.params)):
      np.testing.assert_allclose(a, b[i], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(h_i["loss"], hist["loss"][i], rtol=1e-4)
  # The replicates of one point differ (initialisation and data order follow the seed).
  first = jax.tree.leaves(state.params)[0]
  assert not np.allclose(first[0], first[1])
  assert not np.allclose(hist["loss"][0], hist["loss"][1])


@pytest.mark.parametrize("seeds", [(0, 0), (-1,), (1.5,), (True,), [2**31]])
def test_bad_replicate_seeds_name_the_field(smoke_config, seeds):
  smoke_config.sweep.seeds = tuple(seeds)
  with pytest.raises(ConfigError, match=r"sweep.seeds: must be a tuple of distinct int"):
    validate_config(smoke_config)


def test_replicates_count_against_the_point_limit(smoke_config):
  smoke_config.sweep.temperature = tuple(float(t) for t in range(1, 65))
  smoke_config.sweep.alpha = (0.5,)
  smoke_config.sweep.seeds = tuple(range(65))
  with pytest.raises(ConfigError, match=r"sweep: 64 points × 65 sweep.seeds replicates"):
    validate_config(smoke_config)


@pytest.mark.slow
def test_runner_rows_carry_the_replicate_seed(smoke_config):
  from prerank_jax.host.runner import run
  smoke_config.sweep.temperature, smoke_config.sweep.alpha = (2.0,), (0.5,)
  smoke_config.sweep.seeds = (0, 1)
  result = run(smoke_config)
  students = [r for r in result.rows if r["status"] != "reference"]
  assert [(r["model"], r["replicate_seed"]) for r in students] == [
      ("student temperature=2 alpha=0.5 learning_rate=0.003 seed=0", 0),
      ("student temperature=2 alpha=0.5 learning_rate=0.003 seed=1", 1),
      ("student gt-only seed=0", 0), ("student gt-only seed=1", 1)]
  assert result.columns.index("replicate_seed") < result.columns.index("status")
  header = (result.run_dir / "results.csv").read_text().splitlines()[0].split(",")
  assert "replicate_seed" in header
  assert set(result.history["students"]) == {r["model"].removeprefix("student ")
                                             for r in students}
