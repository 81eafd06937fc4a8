"""Row-sparse (lazy) Adam on ID embedding tables (``<role>.embedding_update = "sparse"``):
the batch rewrite is exact, the update equals an independent NumPy LazyAdam (duplicated
IDs summed, untouched rows bit-identical), rows touched at every step follow dense Adam,
vmap over points equals a loop, and training with it learns on the ID smoke world."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prerank_jax import metrics
from prerank_jax.batch import feature_sizes
from prerank_jax.config import ConfigError, validate_config
from prerank_jax.config_files import load_config_file
from prerank_jax.data.simulator import PRESETS, id_vocab, simulate
from prerank_jax.models import build_model
from prerank_jax.models.embeddings import embedding_tables, rows_looked_up
from prerank_jax.train import SweepData, make_train
from prerank_jax.train.sparse_embeddings import lazy_adam_step, sparse_tables
from prerank_jax.train.sweep import compile_sweep, grid_points, stack_points

WORLD = dict(PRESETS["tiny"], ids=True, num_authors=30, num_categories=8, sequence_length=10)
VOCAB = id_vocab(WORLD)
IDS = dict(context_vocab=VOCAB.context, item_vocab=VOCAB.items, id_embed_dim=4)
SMALL = {"dssm": dict(id_tower=(8, 4), **IDS),
         "din": dict(hidden=(8,), attention_hidden=(6, 4), **IDS)}
B1, B2, EPS = 0.9, 0.999, 1e-8


@pytest.fixture(scope="module")
def split():
  return simulate(WORLD, seed=0)["train"]


def _model(name, batch):
  model = build_model(name, feature_sizes=feature_sizes(batch), **SMALL[name])
  return model, model.init(jax.random.key(0))


def _loss_fn(model):
  def loss_fn(params, model_batch, batch=None):
    batch = model_batch if batch is None else batch
    scores = model.apply(params, model_batch)
    return jnp.sum(jnp.where(batch.valid, (scores - batch.true_relevance) ** 2, 0.0))
  return loss_fn


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _rows_read(batch, name):
  """Row sets each table reads, written out from the model's definition: context table j
  by context_ids[..., j]; item table j by item_ids[..., j] and sequence_ids[..., j]."""
  out = {}
  for j, v in enumerate(VOCAB.context):
    ids = np.asarray(batch.context_ids)[..., j].ravel()
    out[f"['embeddings']['context'][{j}]['embedding'].value"] = set(
        np.where((ids >= 0) & (ids < v), ids, 0).tolist())
  cs = batch.sequence_ids.shape[-1]
  for j, v in enumerate(VOCAB.items):
    ids = np.asarray(batch.item_ids)[..., j].ravel()
    if j < cs:
      ids = np.concatenate([ids, np.asarray(batch.sequence_ids)[..., j].ravel()])
    out[f"['embeddings']['items'][{j}]['embedding'].value"] = set(
        np.where((ids >= 0) & (ids < v), ids, 0).tolist())
  return out


def _numpy_lazy_adam(params, grads, m, v, rows, *, t, lr):
  """LazyAdam / SparseAdam in NumPy: tables update the rows in ``rows`` only, with the
  bias correction of the global step t; every other parameter is dense Adam."""
  for name in params:
    sel = slice(None) if name not in rows else np.array(sorted(rows[name]), np.int64)
    g = grads[name][sel]
    m[name][sel] = B1 * m[name][sel] + (1 - B1) * g
    v[name][sel] = B2 * v[name][sel] + (1 - B2) * g * g
    m_hat = m[name][sel] / (1 - B1 ** t)
    v_hat = v[name][sel] / (1 - B2 ** t)
    params[name][sel] = params[name][sel] - lr * m_hat / (np.sqrt(v_hat) + EPS)


def _tx():
  return optax.inject_hyperparams(optax.adam)(learning_rate=0.01)


@pytest.mark.parametrize("name", ["dssm", "din"])
def test_rows_looked_up_rewrites_the_batch_exactly(name, split):
  batch = split.take(slice(0, 5))
  # An out-of-vocabulary ID reads the reserved row 0 in both forms.
  batch = batch._replace(context_ids=np.asarray(batch.context_ids).copy())
  batch.context_ids[0, 0] = VOCAB.context[0] + 7
  model, params = _model(name, batch)
  tables = embedding_tables(model.bind(params))
  assert len(tables) == len(VOCAB.context) + len(VOCAB.items)
  rows, small_batch = rows_looked_up(tables, batch)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  small = []
  for path, value in flat:
    key = jax.tree_util.keystr(path)
    hit = [r for t, r in zip(tables, rows) if key.startswith(
        "".join(f"[{k!r}]" for k in t.path))]
    small.append(jnp.take(value, hit[0], axis=0, mode="fill", fill_value=0) if hit
                 else value)
  small_params = jax.tree.unflatten(treedef, [v for v in small])
  np.testing.assert_array_equal(model.apply(small_params, small_batch),
                                model.apply(params, batch))
  for table, r, read in zip(tables, rows, _rows_read(batch, name).values()):
    r = np.asarray(r)
    assert set(r[r < table.rows].tolist()) == read           # every row read, once
    assert np.all(r[len(read):] == table.rows)                # padded out of range


@pytest.mark.parametrize("name", ["dssm", "din"])
def test_lazy_adam_equals_a_numpy_reference(name, split):
  """Three steps on different batches (IDs repeated within each): tables move only at the
  rows looked up, with summed gradients and the global step's bias correction."""
  batches = [split.take(slice(i * 4, i * 4 + 4)) for i in range(3)]
  model, params = _model(name, batches[0])
  loss_fn = _loss_fn(model)
  tables = sparse_tables(model, "sparse")
  tx = _tx()
  state = tx.init(params)
  ref = {k: v.copy() for k, v in _flat(params).items()}
  ref_m = {k: np.zeros_like(v) for k, v in ref.items()}
  ref_v = {k: np.zeros_like(v) for k, v in ref.items()}
  initial = _flat(params)
  touched = {k: set() for k in _rows_read(batches[0], name)}
  step = jax.jit(lambda p, s, b: lazy_adam_step(
      lambda q, mb: loss_fn(q, mb, b), tables, tx, p, s, b, frozen=jnp.bool_(False)))
  dense_grad = jax.jit(jax.grad(loss_fn))
  for t, batch in enumerate(batches, start=1):
    # The reference's gradient: the dense gradient of the whole table (no rewrite).
    grads = _flat(dense_grad(jax.tree.unflatten(
        jax.tree.structure(params), [jnp.asarray(ref[k]) for k in _flat(params)]), batch))
    rows = _rows_read(batch, name)
    assert any(len(r) < np.asarray(batch.item_ids).size for r in rows.values())  # repeats
    _numpy_lazy_adam(ref, grads, ref_m, ref_v, rows, t=t, lr=0.01)
    for k in touched:
      touched[k] |= rows[k]
    loss, finite, params, state = step(params, state, batch)
    assert bool(finite)
  got, got_m, got_v = _flat(params), _flat(state.inner_state[0].mu), _flat(
      state.inner_state[0].nu)
  # DIN's attention logits are shift-invariant under the softmax: the gradient of their
  # bias is rounding noise, which Adam normalises to ±lr steps; it is not compared.
  noise = "['attention']['out']['bias'].value"
  for k in (k for k in ref if k != noise):
    for a, b in ((got[k], ref[k]), (got_m[k], ref_m[k]), (got_v[k], ref_v[k])):
      # float32 sums in another order: equal to 1e-4 of the leaf's scale
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.max(np.abs(b)), err_msg=k)
  assert sum(got[k].shape[0] - len(rows) for k, rows in touched.items()) > 0
  for k, rows in touched.items():   # (a small table may be read whole)
    untouched = np.setdiff1d(np.arange(got[k].shape[0]), sorted(rows))
    np.testing.assert_array_equal(got[k][untouched], initial[k][untouched])   # bit-identical
    assert not np.any(got_m[k][untouched]) and not np.any(got_v[k][untouched])


def test_rows_touched_every_step_follow_dense_adam(split):
  """The same batch at every step: every row the lazy update touches is touched each step,
  the others have zero gradient, so lazy Adam is dense Adam (up to summation order)."""
  batch = split.take(slice(0, 6))
  model, params = _model("dssm", batch)
  loss_fn = _loss_fn(model)
  tables = sparse_tables(model, "sparse")
  tx = _tx()
  sparse_params, sparse_state = params, tx.init(params)
  dense_params, dense_state = params, tx.init(params)
  sparse_step = jax.jit(lambda p, s: lazy_adam_step(loss_fn, tables, tx, p, s, batch,
                                                    frozen=jnp.bool_(False)))

  @jax.jit
  def dense_step(p, s):
    updates, s = tx.update(jax.grad(loss_fn)(p, batch), s, p)
    return optax.apply_updates(p, updates), s

  for _ in range(4):
    _, _, sparse_params, sparse_state = sparse_step(sparse_params, sparse_state)
    dense_params, dense_state = dense_step(dense_params, dense_state)
  a, b = _flat(sparse_params), _flat(dense_params)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_a_frozen_point_keeps_its_parameters_and_state(split):
  batch = split.take(slice(0, 4))
  model, params = _model("dssm", batch)
  tx = _tx()
  state = tx.init(params)
  tables = sparse_tables(model, "sparse")
  _, finite, new_params, new_state = jax.jit(lambda p, s: lazy_adam_step(
      _loss_fn(model), tables, tx, p, s, batch, frozen=jnp.bool_(True)))(params, state)
  assert bool(finite)
  for x, y in zip(jax.tree.leaves((params, state)), jax.tree.leaves((new_params, new_state))):
    np.testing.assert_array_equal(x, y)


def _smoke_config(update="sparse"):
  config = load_config_file("configs/ids.py", "smoke")
  config.student.embedding_update = update
  return config


def _scored(splits):
  return {k: b._replace(teacher_scores=np.asarray(b.true_relevance, np.float32)[..., None])
          for k, b in splits.items()}


def test_vmap_over_points_equals_a_loop():
  config = _smoke_config()
  splits = _scored(simulate(config.data, seed=0))
  train = splits["train"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  points = grid_points({"alpha": (0.2, 0.9), "learning_rate": (1e-3, 1e-2)}, seed=3,
                       mode="zip")
  hp, rngs = stack_points(points)
  batches = [train.take(slice(i * 8, i * 8 + 8)) for i in range(2)]
  state = jax.vmap(trainer.init)(hp, rngs)
  step = jax.jit(jax.vmap(trainer.step, in_axes=(0, None, 0)))
  for b in batches:
    state, _ = step(state, b, hp)
  one = jax.jit(trainer.step)
  for i in range(len(points)):
    hp_i = jax.tree.map(lambda x: x[i], hp)
    s = trainer.init(hp_i, rngs[i])
    for b in batches:
      s, _ = one(s, b, hp_i)
    for x, y in zip(jax.tree.leaves(s.params), jax.tree.leaves(state.params)):
      # float32 after several Adam steps; at XLA's optimisation level 0 (the tests')
      # one value of 816 differed by 3.7e-6 (values ~0.06)
      np.testing.assert_allclose(x, y[i], rtol=1e-5, atol=1e-5)


def test_sparse_training_learns_on_the_id_smoke_world():
  """The compiled sweep (jit(vmap), traced learning rates) with the sparse update lowers the
  training loss and raises validation NDCG@10 against the truth above the initial model's."""
  config = _smoke_config()
  config.student.num_epochs = 3
  splits = _scored(simulate(config.data, seed=0))
  train, valid = splits["train"], splits["valid"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  assert sparse_tables(trainer.model, "sparse")
  sweep = compile_sweep(trainer)
  hp, rngs = stack_points(grid_points({"alpha": (0.5,), "learning_rate": (3e-3, 1e-2)},
                                      seed=0))
  init = sweep.init(hp, rngs)
  state, stats = sweep.train(hp, rngs, SweepData(train, valid))

  def ndcg(params):
    scores = np.asarray(sweep.apply(params, valid))
    return np.array([float(metrics.mean_over_lists(
        metrics.ndcg_at_k(s, valid.true_relevance, where=valid.valid, k=10),
        where=metrics.has_relevant(valid.true_relevance, where=valid.valid)))
        for s in scores])

  loss = np.asarray(stats["loss"])                     # [points, epochs]
  assert np.all(np.isfinite(loss)) and not np.any(np.asarray(state.diverged))
  assert np.all(loss[:, -1] < loss[:, 0]), loss
  assert np.all(ndcg(state.params) > ndcg(init.params))


def test_embedding_update_is_validated():
  config = _smoke_config("lazy")
  with pytest.raises(ConfigError, match="student.embedding_update"):
    validate_config(config)
  model, _ = _model("dssm", simulate(WORLD, seed=0)["valid"].take(slice(0, 2)))
  with pytest.raises(ValueError, match="teacher.embedding_update.*dense"):
    sparse_tables(model, "Sparse", field="teacher.embedding_update")
  assert sparse_tables(model, "dense") == ()


@pytest.mark.parametrize("group_size", [1, 2])
def test_grouped_initialisation_equals_one_vmap(group_size):
  """compile_sweep.init runs the points' inits in the training's groups (bounding the
  initialisation's memory); every point's state is the one a single vmap gives."""
  config = _smoke_config()
  train = simulate(config.data, seed=0)["train"]
  trainer = make_train(config, role="student", feature_sizes=feature_sizes(train),
                       num_train_requests=train.num_requests)
  hp, rngs = stack_points(grid_points({"temperature": (0.5, 1.0, 2.0, 4.0)}, seed=1))
  whole = jax.jit(jax.vmap(trainer.init))(hp, rngs)
  grouped = compile_sweep(trainer, group_size=group_size).init(hp, rngs)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(grouped)):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
