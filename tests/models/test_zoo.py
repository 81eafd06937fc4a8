"""The model zoo: shapes, padding, feature subsets, vmap, cached two-tower, SE gate, options,
the oracle, and ensembles of identical teachers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import feature_sizes
from prerank_jax.config import ConfigError, check_against_data, validate_config
from prerank_jax.losses.ensemble import ENSEMBLES
from prerank_jax.models import (MODEL_OPTIONS, MODELS, build_model, feature_columns,
                                feature_importance, model_config, param_count)
from tests.conftest import load_config

STUDENTS = ("linear", "mlp_student", "two_tower", "int_tower")
TEACHERS = ("mlp_teacher", "dcn_v2", "oracle")
# Small sizes keep compilation fast; every model gets the options it declares.
SMALL = dict(hidden=(8, 4), embed_dim=4, tower_hidden=(8,), interaction_dim=4,
             cross_layers=2)


def _build(name, batch, **options):
  return build_model(name, feature_sizes=feature_sizes(batch), **{**SMALL, **options})


def test_every_model_is_registered_with_known_options():
  assert set(STUDENTS + TEACHERS + ("mlp_heavy_no_cross",)) <= set(MODELS)
  for name, spec in MODELS.items():
    assert set(spec.options) <= set(MODEL_OPTIONS), name
  config = load_config()
  assert set(config.student.model) == {"name", *MODEL_OPTIONS}
  assert tuple(config.student.model.hidden) == (64, 32)
  assert tuple(config.teacher.model.hidden) == (256, 256, 128)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shape_padding_invariance_and_vmap(name, tiny_splits):
  batch = tiny_splits["train"].take(slice(0, 8))
  model = _build(name, batch, se_gate=True)
  params = model.init(jax.random.key(0))
  scores = model.apply(params, batch)
  assert scores.shape == batch.label.shape == (8, batch.list_size)
  assert np.all(np.isfinite(scores))
  # Padding: 3 extra slots full of garbage, marked invalid, change no real score.
  pad = lambda x, v: np.concatenate(
      [x, np.full(x.shape[:1] + (3,) + x.shape[2:], v, x.dtype)], axis=1)
  padded = batch._replace(items=pad(batch.items, 7.0), cross=pad(batch.cross, -3.0),
                          valid=pad(batch.valid, False), label=pad(batch.label, 0.0),
                          exposed=pad(batch.exposed, False),
                          true_relevance=pad(batch.true_relevance, 9.0))
  np.testing.assert_allclose(model.apply(params, padded)[:, :batch.list_size], scores,
                             rtol=1e-5, atol=1e-6)
  # vmap over stacked params == one model at a time.
  stacked = jax.vmap(model.init)(jax.random.split(jax.random.key(1), 3))
  out = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(stacked, batch)
  assert out.shape == (3, *scores.shape)
  for i in range(3):
    np.testing.assert_allclose(out[i], model.apply(jax.tree.map(lambda x: x[i], stacked),
                                                   batch), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", STUDENTS)
def test_students_see_only_their_feature_subset(name, tiny_splits):
  batch = tiny_splits["valid"].take(slice(0, 8))
  kwargs = dict(context_features=(1, 3), item_features=(0, 2))
  model = _build(name, batch, **kwargs)
  params = model.init(jax.random.key(2))
  scores = model.apply(params, batch)
  hidden_items = np.asarray(batch.items).copy()
  hidden_items[..., [1, 3, 4]] += 5.0
  hidden_context = np.asarray(batch.context).copy()
  hidden_context[..., [0, 2]] -= 4.0
  unseen = batch._replace(items=hidden_items, context=hidden_context,
                          cross=batch.cross + 5.0,
                          true_relevance=batch.true_relevance + 1.0)
  np.testing.assert_array_equal(model.apply(params, unseen), scores)
  for group, column in (("items", 2), ("context", 3)):
    seen = np.asarray(getattr(batch, group)).copy()
    seen[..., column] += 5.0
    assert not np.allclose(model.apply(params, batch._replace(**{group: seen})), scores)
  assert feature_columns(model) == ("context[1]", "context[3]", "items[0]", "items[2]")


def test_teachers_read_the_cross_features(tiny_splits):
  batch = tiny_splits["valid"]
  changed = batch._replace(cross=batch.cross + 5.0)
  for name in ("mlp_teacher", "dcn_v2"):
    for structure in ("stacked", "parallel"):
      model = _build(name, batch, dcn_structure=structure, cross_rank=2)
      params = model.init(jax.random.key(0))
      assert not np.allclose(model.apply(params, batch), model.apply(params, changed))


def test_dcn_v2_cross_layer_matches_the_definition(tiny_splits):
  batch = tiny_splits["valid"].take(slice(0, 2))
  model = _build("dcn_v2", batch, cross_layers=1, hidden=(4,))
  params = model.init(jax.random.key(3))
  module = model.bind(params)
  x0 = np.concatenate([np.broadcast_to(batch.context[:, None], (*batch.items.shape[:2],
                                                                 batch.context.shape[-1])),
                       batch.items, batch.cross], axis=-1)
  w, b = module.cross[0].up.kernel[...], module.cross[0].up.bias[...]
  x1 = x0 * (x0 @ w + b) + x0          # x_1 = x_0 ⊙ (W x_0 + b) + x_0
  h = np.maximum(x1 @ module.deep[0].kernel[...] + module.deep[0].bias[...], 0)
  expected = (h @ module.head.kernel[...] + module.head.bias[...])[..., 0]
  np.testing.assert_allclose(model.apply(params, batch), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ("two_tower", "int_tower"))
def test_cached_two_tower_equals_the_full_forward(name, tiny_splits):
  batch = tiny_splits["test"]
  model = _build(name, batch, item_features=(1, 2, 4))
  params = model.init(jax.random.key(4))
  item_emb = jax.jit(model.item_embeddings)(params, batch)
  assert item_emb.shape == (*batch.valid.shape, SMALL["embed_dim"])
  cached = jax.jit(model.score_cached)(params, batch.context, item_emb)
  np.testing.assert_allclose(cached, model.apply(params, batch), rtol=1e-6, atol=1e-6)
  if name == "two_tower":  # one matrix–vector product per request: V u
    u = model.bind(params).context_embedding(batch.context)
    np.testing.assert_allclose(cached, np.einsum("rnd,rd->rn", item_emb, u), rtol=1e-5,
                               atol=1e-6)
  with pytest.raises(ValueError, match="no cached scoring path"):
    mlp = _build("mlp_student", batch)
    mlp.item_embeddings(mlp.init(jax.random.key(0)), batch)


def test_se_gate_reports_feature_importance(tiny_splits):
  batch = tiny_splits["valid"]
  model = _build("mlp_student", batch, se_gate=True, item_features=(0, 1, 4))
  params = model.init(jax.random.key(5))
  importance = np.asarray(jax.jit(lambda p, b: feature_importance(model, p, b))(params, batch))
  assert importance.shape == (len(feature_columns(model)),) == (batch.context.shape[-1] + 3,)
  assert np.all((importance > 0) & (importance < 1))
  # Padding slots do not enter the mean.
  gates = np.asarray(model.bind(params).gate_values(batch))
  valid = np.asarray(batch.valid)
  np.testing.assert_allclose(importance, gates[valid].mean(axis=0), rtol=1e-5)
  with pytest.raises(ValueError, match="no feature gate"):
    plain = _build("mlp_student", batch)
    feature_importance(plain, plain.init(jax.random.key(0)), batch)


def test_linear_is_logistic_regression_over_the_selected_features(tiny_splits):
  batch = tiny_splits["valid"]
  model = _build("linear", batch, item_features=(3,), context_features=(0,))
  params = model.init(jax.random.key(0))
  assert param_count(params) == 3
  head = model.bind(params).head
  w, b = np.asarray(head.kernel[...])[:, 0], float(head.bias[...][0])
  expected = batch.context[:, None, 0] * w[0] + batch.items[..., 3] * w[1] + b
  np.testing.assert_allclose(model.apply(params, batch), expected, rtol=1e-5, atol=1e-6)


def test_oracle_scores_the_truth_and_needs_it(tiny_splits):
  batch = tiny_splits["valid"]
  model = _build("oracle", batch)
  params = model.init(jax.random.key(0))
  assert param_count(params) == 1
  np.testing.assert_array_equal(model.apply(params, batch), batch.true_relevance)
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, batch)))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  with pytest.raises(ValueError, match="oracle teacher: batch.true_relevance is None"):
    model.apply(params, batch._replace(true_relevance=None))


@pytest.mark.parametrize("name", TEACHERS + ("mlp_heavy_no_cross",))
def test_ensemble_of_identical_teachers_equals_one_teacher(name, tiny_splits):
  batch = tiny_splits["valid"]
  model = _build(name, batch)
  params = model.init(jax.random.key(6))
  one = model.apply(params, batch)[..., None]                     # [R, N, 1]
  stacked = jax.tree.map(lambda x: jnp.stack([x] * 3), params)
  many = jnp.moveaxis(jax.vmap(model.apply, in_axes=(0, None))(stacked, batch), 0, -1)
  for ens_name, combine in ENSEMBLES.items():
    np.testing.assert_allclose(combine(many, where=batch.valid),
                               combine(one, where=batch.valid), rtol=1e-5, atol=1e-5,
                               err_msg=ens_name)


def test_options_errors_name_the_field_and_range(tiny_splits):
  sizes = feature_sizes(tiny_splits["valid"])
  with pytest.raises(ValueError, match=r"student\.model\.embed_dim: must be an int in \[1, "):
    build_model("two_tower", feature_sizes=sizes, field="student.model", embed_dim=0)
  with pytest.raises(ValueError, match=r"student\.model\.item_features: column indices must "
                                       r"lie in \[0, 4\]"):
    build_model("mlp_student", feature_sizes=sizes, field="student.model",
                item_features=(0, 5))
  with pytest.raises(ValueError, match=r"student\.model\.hiden: unknown model option; valid"):
    build_model("mlp_student", feature_sizes=sizes, field="student.model", hiden=(3,))
  with pytest.raises(ValueError, match=r"student\.model\.name: unknown model 'mlp'; valid "
                                       r"names are \['dcn_v2'"):
    build_model("mlp", feature_sizes=sizes, field="student.model")
  # A model receives only the options it declares: two_tower ignores hidden/se_gate.
  model = build_model("two_tower", feature_sizes=sizes, hidden=(1000, 1000), se_gate=True)
  assert set(model.options) == set(MODELS["two_tower"].options)
  with pytest.raises(ValueError, match="unknown model options"):
    model_config("mlp_student", widths=(3,))


@pytest.mark.parametrize("path, value, match", [
    ("student.model.embed_dim", 0, r"student\.model\.embed_dim: must be an int in \[1, 65536\]"),
    ("student.model.item_features", (1, 1), r"student\.model\.item_features: must be a tuple "
                                           r"of distinct column indices"),
    ("student.model.se_gate", 1, None),  # a locked ConfigDict refuses the wrong type
    ("teacher.model.cross_layers", 0, r"teacher\.model\.cross_layers: must be an int in \[1, 64\]"),
    ("teacher.model.dcn_structure", "serial", r"teacher\.model\.dcn_structure: must be one of"),
    ("student.model.tower_hidden", (4, 0), r"student\.model\.tower_hidden: must be a tuple"),
])
def test_config_validation_names_model_fields(path, value, match):
  config = load_config()
  config.student.model.name = "int_tower" if "student" in path else "mlp_student"
  config.teacher.model.name = "dcn_v2"
  validate_config(config)
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  if match is None:
    with pytest.raises(TypeError):
      node[leaf] = value
    return
  node[leaf] = value
  with pytest.raises(ConfigError, match=match):
    validate_config(config)


def test_feature_index_out_of_range_is_caught_before_any_work(tiny_splits):
  config = load_config()
  config.student.model.context_features = (0, 9)
  validate_config(config)  # ranges that depend on the data are checked against it
  with pytest.raises(ConfigError, match=r"student\.model\.context_features: column indices "
                                        r"must lie in \[0, 3\] \(the data has 4 context"):
    check_against_data(config, shortest_list=10, num_train_requests=64,
                       feature_sizes=feature_sizes(tiny_splits["train"]))
