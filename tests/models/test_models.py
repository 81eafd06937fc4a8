"""Models: shapes, padding invariance, feature subsets, vmap, and the cost ratio."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.models import build_model, param_count
from prerank_jax.models.cost import flops_per_candidate
from tests.conftest import load_config


def _models(batch):
  config = load_config(arg=None)
  sizes = feature_sizes(batch)
  return {role: build_model(config[role].model.name, feature_sizes=sizes,
                            hidden=tuple(config[role].model.hidden))
          for role in ("student", "teacher")}


def test_output_shape_and_padding_invariance(tiny_splits):
  batch = tiny_splits["train"]
  for model in _models(batch).values():
    params = model.init(jax.random.key(0))
    scores = model.apply(params, batch)
    assert scores.shape == batch.label.shape
    pad = lambda x, v=0: np.concatenate([x, np.full(x.shape[:1] + (3,) + x.shape[2:], v,
                                                    x.dtype)], axis=1)
    padded = batch._replace(items=pad(batch.items, 7.0), cross=pad(batch.cross, -3.0),
                            valid=pad(batch.valid, False))
    np.testing.assert_allclose(model.apply(params, padded)[:, :batch.list_size], scores,
                               rtol=1e-6)


def test_student_ignores_cross_features_and_teacher_uses_them(tiny_splits):
  batch = tiny_splits["train"]
  models = _models(batch)
  changed = batch._replace(cross=batch.cross + 5.0)
  student, teacher = models["student"], models["teacher"]
  ps, pt = student.init(jax.random.key(1)), teacher.init(jax.random.key(1))
  np.testing.assert_array_equal(student.apply(ps, batch), student.apply(ps, changed))
  assert not np.allclose(teacher.apply(pt, batch), teacher.apply(pt, changed))


def test_vmap_over_stacked_params_equals_loop(tiny_splits):
  batch = tiny_splits["valid"]
  model = _models(batch)["student"]
  stacked = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 3))
  out = jax.vmap(model.apply, in_axes=(0, None))(stacked, batch)
  for i in range(3):
    np.testing.assert_allclose(out[i], model.apply(jax.tree.map(lambda x: x[i], stacked),
                                                   batch), rtol=1e-6)


def test_teacher_costs_at_least_ten_times_the_student(tiny_splits):
  batch = tiny_splits["valid"]
  models = _models(batch)
  flops = {r: flops_per_candidate(m, m.init(jax.random.key(0)), batch)
           for r, m in models.items()}
  assert flops["teacher"] >= 10 * flops["student"]
  # The analysis counts at least the dense layers' multiply-adds (2 FLOPs each).
  for role, model in models.items():
    params = model.init(jax.random.key(0))
    kernels = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params) if x.ndim == 2)
    assert 2 * kernels <= flops[role] <= 4 * kernels
    assert param_count(params) > kernels


def test_feature_size_mismatch_and_unknown_names_are_clear(tiny_splits):
  batch = tiny_splits["valid"]
  sizes = dict(feature_sizes(batch), items=feature_sizes(batch)["items"] + 1)
  model = build_model("mlp_student", feature_sizes=sizes, hidden=(8,))
  with pytest.raises(ValueError, match=r"items: model 'mlp_student' was built for \d+ items"):
    model.apply(model.init(jax.random.key(0)), batch)
  with pytest.raises(ValueError, match=r"student.name: unknown model 'mlp'; valid names"):
    build_model("mlp", feature_sizes=sizes, field="student", hidden=(8,))
