"""``make_train(config)``: static set-up once, then a pure, vmappable ``train``.

Following purejaxrl, everything that fixes shapes or program structure (model, loss
names, batch size, epoch count) is read from the config here, while everything a sweep
varies (T, α, learning rate, seed) enters as traced arrays. ``jit(vmap(train))`` then runs
a whole grid as one program; the data is an explicit argument that vmap broadcasts
(``in_axes=None``), so it is shared by all sweep points rather than copied or baked into
the program as constants.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from prerank_jax import metrics
from prerank_jax.batch import Batch
from prerank_jax.losses.ensemble import teacher_present
from prerank_jax.losses.registry import make_objective
from prerank_jax.models import PureModel, build_model
from prerank_jax.models.precision import with_compute_dtype
from prerank_jax.train.sparse_embeddings import lazy_adam_step, sparse_tables

HParams = Mapping[str, jax.Array]  # {"temperature", "alpha", "learning_rate"} scalars


class TrainState(NamedTuple):
  """Everything a run carries between steps; stacked along a leading axis in a sweep."""

  params: Any
  opt_state: Any
  rng: jax.Array
  step: jax.Array       # int32 optimizer steps taken
  diverged: jax.Array   # bool: a non-finite loss, gradient or new parameter froze this run


class SweepData(NamedTuple):
  """Device-resident data shared by all sweep points."""

  train: Batch
  valid: Batch


class Trainer(NamedTuple):
  """Pure functions built by :func:`make_train`.

  - ``init(hparams, rng) -> TrainState``
  - ``step(state, batch, hparams) -> (state, loss)``: one optimizer step on a batch of
    requests, for input pipelines that feed batches from the host (and for cost analysis).
  - ``train_epoch(state, hparams, data) -> (state, losses [steps])``: one epoch of steps
    over a fresh shuffle of ``data.train``, without the validation monitor.
  - ``run_chunk(state, hparams, data) -> (state, metrics)``: ``epochs_per_chunk`` epochs;
    the host calls it between progress updates, logging and checkpoints.
  - ``train(hparams, rng, data) -> (state, metrics)``: a whole run, all epochs.
  - ``begin_epoch(state) -> (state, perm_rng)``: splits the key that draws an epoch's
    order of requests; every epoch loop starts with it.
  - ``epoch_stats(params, losses [steps], valid) -> metrics``: an epoch's mean loss and
    validation monitor (:func:`monitor`); every epoch loop ends with it.

  Both epoch loops are built from ``step``, ``begin_epoch`` and ``epoch_stats``: the
  device-resident one here (``lax.scan`` over the epoch) and the host-fed one in
  :mod:`prerank_jax.train.host_fed` (batches from a :mod:`prerank_jax.data.streaming`
  input).

  ``metrics`` are per-epoch arrays ``[epochs, ...]``: ``loss`` and the validation monitor
  (:func:`monitor`), named as the same metrics in results.csv: ``valid/ndcg@{k}_logs``
  and, when the data has them, ``valid/ndcg@{k}`` and ``valid/R@({k},{r})``.
  """

  model: PureModel
  steps_per_epoch: int
  init: Callable[..., TrainState]
  step: Callable[..., tuple[TrainState, jax.Array]]
  train_epoch: Callable[..., tuple[TrainState, jax.Array]]
  run_chunk: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  train: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  begin_epoch: Callable[..., tuple[TrainState, jax.Array]]
  epoch_stats: Callable[..., dict[str, jax.Array]]


def monitor(scores: jax.Array, batch: Batch, *, k: int, keep_ratio: float) -> dict:
  """Cheap per-epoch validation metrics, each averaged over the lists where defined.

  Named as the same metric of the validation split in results.csv
  (:func:`prerank_jax.evaluate.metric_names` with the ``valid/`` prefix), so a history
  curve's last value and its results column are found by one name:

  - ``valid/ndcg@{k}_logs``: NDCG@k against the logged labels over the exposed candidates;
  - ``valid/ndcg@{k}`` (with ``true_relevance``): NDCG@k against the truth;
  - ``valid/R@({k},{r})`` (with teacher scores): teacher-consistency recall at the keep
    ratio ``r`` = ``keep_ratio`` (``eval.monitor_keep_ratio``, as a percentage).
  """
  keep = f"{100 * keep_ratio:g}%"  # prerank_jax.evaluate.keep_label (same floor: no import)
  observed = batch.valid & batch.exposed
  out = {f"valid/ndcg@{k}_logs": metrics.mean_over_lists(
      metrics.ndcg_at_k(scores, batch.label, where=observed, k=k),
      where=metrics.has_relevant(batch.label, where=observed))}
  if batch.true_relevance is not None:
    out[f"valid/ndcg@{k}"] = metrics.mean_over_lists(
        metrics.ndcg_at_k(scores, batch.true_relevance, where=batch.valid, k=k),
        where=metrics.has_relevant(batch.true_relevance, where=batch.valid))
  if batch.teacher_scores is not None:
    teacher = jnp.mean(batch.teacher_scores, axis=-1)
    # Over the candidates every teacher scored (a logged ranker may score part of a list).
    present = teacher_present(batch.valid, batch.teacher_mask)
    m = metrics.keep_size(present, keep_ratio=keep_ratio)
    out[f"valid/R@({k},{keep})"] = jnp.mean(metrics.teacher_consistency_recall(
        scores, teacher, where=present, k=k, m=m))
  return out


# Scoring budget: points × candidates scored in one call (the per-epoch monitor here,
# ``sweep.apply_in_chunks`` on the host). 2^20 keeps a 256-wide hidden layer's activations
# near 1 GiB (float32) however long the lists or large the split.
SCORE_BUDGET = 1 << 20


def score_in_chunks(apply: Callable[[Batch], jax.Array], batch: Batch, *,
                    budget: int = SCORE_BUDGET) -> jax.Array:
  """``apply(batch)`` (scores ``[R, N]``, traceable) ``budget // N`` requests at a time.

  Inside a compiled program: a split within the budget is one call, exactly
  ``apply(batch)``; a larger one is padded to whole chunks (by repeating its last request,
  dropped afterwards) and scored by a ``lax.map`` over them, so only one chunk's
  activations are live at a time.
  """
  num_requests, list_size = batch.valid.shape
  chunk = max(1, int(budget) // max(1, list_size))
  if num_requests <= chunk:
    return apply(batch)
  count = -(-num_requests // chunk)
  index = jnp.minimum(jnp.arange(count * chunk), num_requests - 1).reshape(count, chunk)
  scores = jax.lax.map(lambda i: apply(batch.take(i)), index)     # [count, chunk, N]
  return scores.reshape(count * chunk, list_size)[:num_requests]


def make_train(config: Any, *, role: str = "student", feature_sizes: Mapping[str, int],
               num_train_requests: int,
               shard_batch: Callable[[Batch], Batch] | None = None) -> Trainer:
  """Builds the pure training functions for one model role (student or teacher).

  Args:
    config: a run config (see ``configs/quickstart.py``). It is read, never mutated. Of it
      this uses ``config[role]`` (``model``, ``loss``, ``num_epochs``, ``batch_size``,
      ``epochs_per_chunk``, ``compute_dtype`` if present) and ``config.eval`` (``k``,
      ``monitor_keep_ratio``).
    role: ``"student"`` or ``"teacher"``.
    feature_sizes: ``{"context": Fc, "items": Fi, "cross": Fx}`` of the data.
    num_train_requests: R of the train split (fixes the steps per epoch).
    shard_batch: applied to each step's batch of requests; the runner passes a sharding
      constraint that splits it over the mesh's ``"data"`` axis
      (:func:`prerank_jax.train.sweep.batch_sharding`). ``None``: the identity.

  Returns:
    A :class:`Trainer`.
  """
  role_cfg = config[role]
  model_kwargs = {k: v for k, v in role_cfg.model.items() if k != "name"}
  model = build_model(role_cfg.model.name, feature_sizes=dict(feature_sizes),
                      field=f"{role}.model", **model_kwargs)
  # bfloat16 forward pass; params, optimizer state and the loss stay float32.
  model = with_compute_dtype(model, role_cfg.get("compute_dtype", "float32"),
                             field=f"{role}.compute_dtype")
  loss_cfg = role_cfg.loss
  objective = make_objective(
      kd=loss_cfg.kd, gt=loss_cfg.gt, ensemble=loss_cfg.ensemble,
      ensemble_weights=tuple(loss_cfg.get("ensemble_weights", ())),
      gt_weighting=loss_cfg.gt_weighting, propensity_floor=loss_cfg.propensity_floor,
      options=dict(loss_cfg.get("options", {})))
  batch_size = int(role_cfg.batch_size)
  if not 1 <= batch_size <= num_train_requests:
    raise ValueError(f"{role}.batch_size: must be in [1, {num_train_requests}], "
                     f"got {batch_size}")
  steps_per_epoch = num_train_requests // batch_size  # the remainder is dropped per epoch
  epochs_per_chunk = int(role_cfg.epochs_per_chunk)
  num_chunks = int(role_cfg.num_epochs) // epochs_per_chunk
  k, keep_ratio = int(config.eval.k), float(config.eval.monitor_keep_ratio)
  # The learning rate lives in the optimizer state (inject_hyperparams), so it is traced.
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.0)
  # ID embedding tables: dense Adam, or the row-sparse (lazy) update of the looked-up rows.
  tables = sparse_tables(model, role_cfg.get("embedding_update", "dense"),
                         field=f"{role}.embedding_update")

  def init(hparams: HParams, rng: jax.Array) -> TrainState:
    init_rng, run_rng = jax.random.split(rng)
    params = model.init(init_rng)
    opt_state = tx.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(hparams["learning_rate"],
                                                         jnp.float32)
    return TrainState(params, opt_state, run_rng, jnp.zeros((), jnp.int32),
                      jnp.zeros((), jnp.bool_))

  def train_step(state: TrainState, batch: Batch, hparams: HParams):
    if shard_batch is not None:
      batch = shard_batch(batch)

    def loss_fn(params, model_batch=batch):
      return objective(model.apply(params, model_batch), batch, hparams, step=state.step,
                       rng=jax.random.fold_in(state.rng, state.step))

    if tables:  # the lazy update freezes a diverged point itself, row by row
      loss, finite, params, opt_state = lazy_adam_step(
          loss_fn, tables, tx, state.params, state.opt_state, batch, frozen=state.diverged)
      keep_going = finite & ~state.diverged
    else:
      loss, grads = jax.value_and_grad(loss_fn)(state.params)
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
      # Non-finite updated parameters count too: a finite loss and gradient can still step
      # to inf (a huge learning rate), which would freeze the point at non-finite values.
      finite = jnp.isfinite(loss) & jnp.all(jnp.array(
          [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves((grads, params))]))
      keep_going = finite & ~state.diverged
      # A run that produced a non-finite loss is frozen at its last finite parameters;
      # the other points of a vmapped sweep are unaffected.
      pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(keep_going, a, b), new,
                                           old)
      params, opt_state = pick(params, state.params), pick(opt_state, state.opt_state)
    new_state = TrainState(
        params=params,
        opt_state=opt_state,
        rng=state.rng,
        step=state.step + keep_going.astype(jnp.int32),
        diverged=state.diverged | ~finite)
    return new_state, jnp.where(finite, loss, jnp.nan)

  def begin_epoch(state: TrainState) -> tuple[TrainState, jax.Array]:
    rng, perm_rng = jax.random.split(state.rng)
    return state._replace(rng=rng), perm_rng

  def epoch_stats(params: Any, losses: jax.Array, valid: Batch) -> dict[str, jax.Array]:
    stats = {"loss": jnp.mean(losses)}
    scores = score_in_chunks(lambda b: model.apply(params, b), valid)
    stats.update(monitor(scores, valid, k=k, keep_ratio=keep_ratio))
    return stats

  def train_epoch(state: TrainState, hparams: HParams, data: SweepData):
    state, perm_rng = begin_epoch(state)
    order = jax.random.permutation(perm_rng, num_train_requests)
    order = order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

    def body(state, index):
      return train_step(state, data.train.take(index), hparams)

    return jax.lax.scan(body, state, order)

  def epoch(state: TrainState, hparams: HParams, data: SweepData):
    state, losses = train_epoch(state, hparams, data)
    return state, epoch_stats(state.params, losses, data.valid)

  def run_epochs(state, hparams, data, num_epochs):
    return jax.lax.scan(lambda s, _: epoch(s, hparams, data), state, None, length=num_epochs)

  def run_chunk(state: TrainState, hparams: HParams, data: SweepData):
    return run_epochs(state, hparams, data, epochs_per_chunk)

  def train(hparams: HParams, rng: jax.Array, data: SweepData):
    return run_epochs(init(hparams, rng), hparams, data, num_chunks * epochs_per_chunk)

  return Trainer(model, steps_per_epoch, init, train_step, train_epoch, run_chunk, train,
                 begin_epoch, epoch_stats)
