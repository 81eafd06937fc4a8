"""The production ranker's logged scores as the teacher (issue 20 §1).

Closed forms for the score kinds, masking equals slicing for missing scores, refusals that
name the column/file and the counts, a teacher trained outside the framework (scikit-learn)
fed as a column or in memory giving the same student, and the CLI run of the issue's
"Done when" on the smoke-size table.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prerank_jax.batch import Batch, BatchError, validate_batch
from prerank_jax.checks import ConfigError
from prerank_jax.config import validate_config
from prerank_jax.config_files import repo_config
from prerank_jax.data.logged_teacher import (PROBABILITY_CLIP, attach_logged_teacher,
                                             to_logits)
from prerank_jax.losses.registry import KD_LOSSES, make_objective

ITEMS = ("item_f0", "item_f1", "item_f2")


def write_logs(path: Path, *, num_requests: int = 60, seed: int = 0, score=None,
               missing_top: int | None = None) -> dict[str, list]:
  """A table of logs with a learnable signal: one row per (request, candidate), lists of
  12–20 (never truncated at the smoke list size 20), a split column (train/valid/test),
  a candidate ID column and a ``ranker_score`` column (``score(items, cross)`` or a noisy
  version of the truth; with ``missing_top=k`` null beyond the ranker's own top k)."""
  import pyarrow as pa

  rng = np.random.default_rng(seed)
  cols: dict[str, list] = {k: [] for k in (
      "request_id", "doc", "split", "user_f0", "user_f1", *ITEMS, "cross_f0", "label",
      "ranker_score")}
  for r in range(num_requests):
    length = int(rng.integers(12, 21))
    split = "train" if r < num_requests * 0.6 else ("valid" if r < num_requests * 0.8
                                                    else "test")
    u = rng.normal(size=2)
    x = rng.normal(size=(length, 3))
    cross = rng.normal(size=length)
    utility = x @ np.array([1.0, -0.5, 0.25]) + 0.8 * cross + 0.3 * u[0] * x[:, 0]
    label = (utility + 0.5 * rng.normal(size=length) > 0.7).astype(float) + (utility > 1.8)
    shown = rng.choice(length, size=min(length, 10), replace=False)
    s = (utility + 0.3 * rng.normal(size=length)) if score is None else score(x, cross)
    if missing_top is not None:
      s = np.where(np.argsort(np.argsort(-s)) < missing_top, s, np.nan)
    for c in range(length):
      cols["request_id"].append(f"q{r:03d}")
      cols["doc"].append(f"d{r}-{c}")
      cols["split"].append(split)
      cols["user_f0"].append(float(u[0]))
      cols["user_f1"].append(float(u[1]))
      for k in range(3):
        cols[ITEMS[k]].append(float(x[c, k]))
      cols["cross_f0"].append(float(cross[c]))
      cols["label"].append(float(label[c]) if c in shown else None)
      cols["ranker_score"].append(None if np.isnan(s[c]) else float(s[c]))
  path.parent.mkdir(parents=True, exist_ok=True)
  table = pa.table(cols)
  if path.suffix == ".parquet":
    import pyarrow.parquet as pq

    pq.write_table(table, path)
  else:
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, path)
  return cols


def logged_config(tmp_path: Path, *, columns=("ranker_score",), train_file="logs.parquet",
                  **teacher):
  config = repo_config("tabular", "smoke")
  config.workdir = str(tmp_path / "runs")
  config.progress = False
  config.wandb.mode = "disabled"
  config.source.data_dir = str(tmp_path / "tfds")
  config.source.manual_dir = str(tmp_path / "raw")
  config.source.train_file = train_file
  config.source.split_column = "split"
  config.source.candidate_column = "doc"
  config.source.truth_column = ""
  config.source.teacher_score_columns = tuple(columns)
  config.teacher.model.name = "logged"
  for k, v in teacher.items():
    config.teacher[k] = v
  config.sweep.temperature = (1.0,)
  config.sweep.alpha = (1.0,)
  config.sweep.gt_only_baseline = False
  return config


# --- score kinds ----------------------------------------------------------------------------

def test_score_kinds_closed_forms():
  raw = np.array([0.25, 0.5, 0.0, 1.0, np.nan])
  got = to_logits(raw, kind="probability")
  eps = PROBABILITY_CLIP
  want = [math.log(0.25 / 0.75), 0.0, math.log(eps / (1 - eps)),
          math.log((1 - eps) / eps)]
  np.testing.assert_allclose(got[:4], want, rtol=1e-5)
  assert np.isnan(got[4])
  np.testing.assert_array_equal(to_logits(np.array([1.0, 3.0, 2.0]), kind="rank"),
                                [-1.0, -3.0, -2.0])
  np.testing.assert_array_equal(to_logits(np.array([-7.5, 2.0]), kind="logit"), [-7.5, 2.0])
  with pytest.raises(ValueError, match="teacher.score_kind"):
    to_logits(raw, kind="odds")


def _lists(r=3, n=6, m=1, seed=0):
  rng = np.random.default_rng(seed)
  valid = np.ones((r, n), bool)
  valid[0, -2:] = False
  batch = Batch(context=np.zeros((r, 1), np.float32),
                items=rng.normal(size=(r, n, 2)).astype(np.float32),
                cross=np.zeros((r, n, 0), np.float32),
                label=np.zeros((r, n), np.float32), exposed=np.zeros((r, n), bool),
                valid=valid)
  return batch, rng.normal(size=(r, n, m))


def test_attach_masks_missing_and_converts():
  batch, raw = _lists()
  raw[1, 2, 0] = np.nan
  raw[0, -1, 0] = np.nan  # padding: not a missing score
  out = attach_logged_teacher(batch, raw, names=["column 's'"], kind="logit",
                              missing="mask", split="train")
  validate_batch(out, require_teacher=True)
  assert out.teacher_mask is not None and out.teacher_mask.dtype == np.bool_
  assert not out.teacher_mask[1, 2, 0] and out.teacher_scores[1, 2, 0] == 0.0
  assert out.teacher_mask[batch.valid].sum() == batch.valid.sum() - 1
  np.testing.assert_allclose(out.teacher_scores[2], raw[2].astype(np.float32))
  # Nothing missing: no mask at all.
  full = attach_logged_teacher(batch, np.nan_to_num(raw), names=["c"], kind="logit",
                               missing="mask", split="train")
  assert full.teacher_mask is None


def test_refuse_names_column_request_and_candidate():
  batch, raw = _lists()
  raw[1, 2, 0] = np.nan
  ids = np.array([[f"d{r}{n}" for n in range(6)] for r in range(3)])
  with pytest.raises(ValueError, match=r"column 's'.*request 'q1', candidate 'd12'"):
    attach_logged_teacher(batch, raw, names=["column 's'"], kind="logit", missing="refuse",
                          split="test", request_ids=["q0", "q1", "q2"], candidate_ids=ids)


def test_out_of_range_kinds_are_refused():
  batch, raw = _lists()
  with pytest.raises(ValueError, match=r"must be a probability in \[0, 1\]"):
    attach_logged_teacher(batch, raw * 5, names=["column 'p'"], kind="probability",
                          missing="mask", split="train")
  with pytest.raises(ValueError, match=r"must be a rank >= 1"):
    attach_logged_teacher(batch, raw, names=["column 'r'"], kind="rank", missing="mask",
                          split="train")


def test_teacher_mask_must_match_teacher_scores():
  batch, raw = _lists()
  out = batch._replace(teacher_scores=raw.astype(np.float32),
                       teacher_mask=np.ones(raw.shape[:2], bool))
  with pytest.raises(BatchError, match="teacher_mask"):
    validate_batch(out)


# --- missing scores leave every distillation term --------------------------------------------

@pytest.mark.parametrize("kd", sorted(KD_LOSSES))
def test_missing_scores_never_matter(kd):
  """Changing the value under a missing slot changes neither the loss nor its gradient."""
  batch, raw = _lists(r=4, n=8, m=2, seed=1)
  batch = batch._replace(label=(np.arange(8) % 3 == 0).astype(np.float32)[None].repeat(4, 0),
                         exposed=np.ones((4, 8), bool) & batch.valid,
                         true_relevance=np.tile(np.arange(8) % 4, (4, 1)).astype(np.float32))
  mask = np.ones(raw.shape, bool)
  mask[0, 1, 0] = mask[2, 5, 1] = mask[3, 0, :] = False
  scored = batch._replace(teacher_scores=raw.astype(np.float32), teacher_mask=mask)
  other = scored._replace(teacher_scores=np.where(mask, raw, 1e3 * np.sign(raw) + 7.0)
                          .astype(np.float32))
  objective = make_objective(kd=kd, gt="bce")
  hparams = {"alpha": jnp.float32(1.0), "temperature": jnp.float32(2.0),
             "rd_topk": jnp.float32(3), "rd_lambda": jnp.float32(1.0),
             "rd_mu": jnp.float32(0.5), "rd_warmup_steps": jnp.float32(0),
             "rankdistil_topk": jnp.float32(3), "fsltr_topk": jnp.float32(3),
             "recall_k": jnp.float32(3), "recall_keep_ratio": jnp.float32(0.5),
             "neuralsort_tau": jnp.float32(1.0), "rankflow_topk": jnp.float32(3),
             "rankflow_beta": jnp.float32(0.5), "lambdaloss_topn": jnp.float32(3),
             "lambdaloss_smooth_fraction": jnp.float32(0.8)}
  s = jnp.asarray(np.random.default_rng(2).normal(size=(4, 8)), jnp.float32)
  key = jax.random.key(0)
  f = lambda b: jax.value_and_grad(lambda x: objective(x, b, hparams, step=5, rng=key))(s)
  (a, ga), (b, gb) = f(scored), f(other)
  assert np.isfinite(float(a))
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-5, atol=1e-7)


def test_masked_listwise_kd_equals_the_list_sliced():
  """Hinton's listwise KD of a list with a missing score equals the loss on the list with
  that slot sliced out (one list, so the per-list mean is that list's loss)."""
  rng = np.random.default_rng(3)
  s, t = rng.normal(size=(1, 7)), rng.normal(size=(1, 7, 1))
  mask = np.ones((1, 7, 1), bool)
  mask[0, 3, 0] = False
  full = Batch(context=np.zeros((1, 1), np.float32), items=np.zeros((1, 7, 1), np.float32),
               cross=np.zeros((1, 7, 0), np.float32), label=np.zeros((1, 7), np.float32),
               exposed=np.zeros((1, 7), bool), valid=np.ones((1, 7), bool),
               teacher_scores=t.astype(np.float32), teacher_mask=mask)
  keep = np.array([0, 1, 2, 4, 5, 6])
  sliced = full._replace(items=full.items[:, keep], cross=full.cross[:, keep],
                         label=full.label[:, keep], exposed=full.exposed[:, keep],
                         valid=full.valid[:, keep], teacher_scores=full.teacher_scores[:, keep],
                         teacher_mask=None)
  objective = make_objective(kd="hinton_listwise", gt="bce")
  hp = {"alpha": 1.0, "temperature": 2.0}
  a = objective(jnp.asarray(s, jnp.float32), full, hp)
  b = objective(jnp.asarray(s[:, keep], jnp.float32), sliced, hp)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  # Closed form: T² · KL(softmax(t/T) ‖ softmax(s/T)) over the six scored slots (T = 2,
  # kd_temperature_squared on by default).
  p = np.exp(t[0, keep, 0] / 2) / np.exp(t[0, keep, 0] / 2).sum()
  q = np.exp(s[0, keep] / 2) / np.exp(s[0, keep] / 2).sum()
  assert float(a) == pytest.approx(4.0 * float(np.sum(p * np.log(p / q))), rel=1e-5)


# --- config ----------------------------------------------------------------------------------

def test_config_fields_are_checked(tmp_path):
  config = logged_config(tmp_path)
  validate_config(config)
  config.teacher.score_kind = "odds"
  with pytest.raises(ConfigError, match="teacher.score_kind"):
    validate_config(config)
  config = logged_config(tmp_path, columns=())
  with pytest.raises(ConfigError, match="source.teacher_score_columns"):
    validate_config(config)
  config = logged_config(tmp_path)
  config.teacher.model.name = "mlp_teacher"
  with pytest.raises(ConfigError, match="source.teacher_score_columns.*logged"):
    validate_config(config)
  config = repo_config("quickstart", "smoke")
  config.teacher.model.name = "logged"
  with pytest.raises(ConfigError, match="teacher.model.name"):
    validate_config(config)


# --- tables on disk --------------------------------------------------------------------------

def test_all_nan_column_refused_with_its_name(tmp_path):
  from prerank_jax.data.registry import load_dataset

  write_logs(tmp_path / "raw" / "logs.parquet", score=lambda x, c: np.full(len(c), np.nan))
  config = logged_config(tmp_path)
  with pytest.raises(ValueError, match=r"logs.parquet: column 'ranker_score': every teacher "
                                       r"score is missing"):
    load_dataset(config)
  assert not (tmp_path / "tfds" / "prerank_tabular").exists() or not any(
      (tmp_path / "tfds" / "prerank_tabular").rglob("dataset_info.json"))


def test_partial_scores_masked_and_ids_kept(tmp_path):
  from prerank_jax.data.registry import load_dataset

  cols = write_logs(tmp_path / "raw" / "logs.csv", missing_top=5)
  config = logged_config(tmp_path, train_file="logs.csv")
  loaded = load_dataset(config)
  test = loaded.splits["test"]
  validate_batch(test, require_teacher=True)
  assert test.teacher_mask is not None
  np.testing.assert_array_equal(test.teacher_mask[..., 0].sum(-1), 5)
  ids = loaded.ids["test"]
  assert ids.request_column == "request_id" and ids.candidate_column == "doc"
  # Every stored score is the table's value at the same (request, candidate) ID.
  by_id = {(q, d): s for q, d, s in zip(cols["request_id"], cols["doc"], cols["ranker_score"])}
  for r in range(test.num_requests):
    for n in np.flatnonzero(test.valid[r]):
      logged = by_id[(ids.request[r], ids.candidate[r, n])]
      assert (logged is None) == (not test.teacher_mask[r, n, 0])
      if logged is not None:
        assert test.teacher_scores[r, n, 0] == np.float32(logged)
  with pytest.raises(ValueError, match="teacher.missing='refuse'"):
    config.teacher.missing = "refuse"
    load_dataset(config)


# --- whole runs --------------------------------------------------------------------------------

def numpy_ndcg(scores: np.ndarray, gains_of: np.ndarray, k: int) -> float:
  """NDCG@k of one list with exp2 gain (2^y − 1) and log2 discount; ties by lower index."""
  order = np.argsort(-scores, kind="stable")[:k]
  dcg = sum((2.0 ** gains_of[i] - 1) / math.log2(p + 2) for p, i in enumerate(order))
  ideal = np.sort(gains_of)[::-1][:k]
  idcg = sum((2.0 ** g - 1) / math.log2(p + 2) for p, g in enumerate(ideal))
  return dcg / idcg


def test_done_when_cli_logged_column_is_the_teacher_row(tmp_path):
  """Issue 20's "Done when": a table with a ranker_score column trains from the CLI with
  teacher.model.name=logged; no teacher is trained; the teacher row's NDCG@10 equals the
  column's NDCG@10 computed here with NumPy (exp2 gain, the config's), and the students
  learn (beat the random reference)."""
  from prerank_jax.cli import main

  cols = write_logs(tmp_path / "raw" / "logs.parquet")
  root = Path(__file__).resolve().parents[2]
  code = main(["prerank-jax", "sweep", f"--config={root / 'configs' / 'tabular.py'}:smoke",
               f"--config.workdir={tmp_path / 'runs'}", "--config.name=logged",
               f"--config.source.data_dir={tmp_path / 'tfds'}",
               f"--config.source.manual_dir={tmp_path / 'raw'}",
               "--config.source.split_column=split", "--config.wandb.mode=disabled",
               "--config.progress=False",
               "--config.teacher.model.name=logged",
               "--config.source.teacher_score_columns=('ranker_score',)"])
  assert code == 0
  run = tmp_path / "runs" / "logged"
  assert not (run / "checkpoints" / "teacher").exists()  # no teacher was trained
  with open(run / "results.csv") as f:
    rows = {r["model"]: r for r in csv.DictReader(f)}
  # Outside: the test requests' lists (no truncation: lists of 12–20, list_size 20), the
  # truth is the logged label (0 where not shown), lists without a relevant one excluded.
  values = []
  for q in dict.fromkeys(q for q, s in zip(cols["request_id"], cols["split"]) if s == "test"):
    rows_q = [i for i, r in enumerate(cols["request_id"]) if r == q]
    truth = np.array([cols["label"][i] or 0.0 for i in rows_q])
    if truth.max() > 0:
      values.append(numpy_ndcg(np.array([cols["ranker_score"][i] for i in rows_q]), truth, 10))
  assert float(rows["teacher"]["ndcg@10"]) == pytest.approx(float(np.mean(values)), abs=1e-5)
  assert float(rows["teacher"]["params"]) == 0
  student = [r for m, r in rows.items() if m.startswith("student")]
  assert student and all(float(r["ndcg@10"]) > float(rows["random"]["ndcg@10"])
                         for r in student)
  # Re-evaluation from the checkpoints works with a logged teacher too.
  assert main(["prerank-jax", "eval", str(run)]) == 0
  with open(run / "results.csv") as f:
    again = {r["model"]: r for r in csv.DictReader(f)}
  assert again["teacher"]["ndcg@10"] == rows["teacher"]["ndcg@10"]


def test_outside_teacher_as_column_equals_in_memory(tmp_path):
  """A teacher trained outside the framework (scikit-learn's HistGradientBoostingRegressor
  fitted on the train split's shown rows) gives the same student whether its scores are
  written as a column and read by the loader, or put into the batch in memory."""
  from sklearn.ensemble import HistGradientBoostingRegressor

  from prerank_jax.data.registry import load_dataset
  from prerank_jax.host.runner import run

  cols = write_logs(tmp_path / "raw" / "plain.parquet")
  features = np.column_stack([cols[c] for c in (*ITEMS, "cross_f0", "user_f0")])
  shown = np.array([lab is not None for lab in cols["label"]])
  train = np.array([s == "train" for s in cols["split"]]) & shown
  gbm = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(
      features[train], np.array([cols["label"][i] for i in np.flatnonzero(train)]))
  predicted = gbm.predict(features)
  import pyarrow as pa
  import pyarrow.parquet as pq

  table = pq.read_table(tmp_path / "raw" / "plain.parquet")
  pq.write_table(table.set_column(table.column_names.index("ranker_score"), "ranker_score",
                                  pa.array(predicted)), tmp_path / "raw" / "logs.parquet")

  from_column = logged_config(tmp_path)
  from_column.name = "column"
  column_result = run(from_column)

  # In memory: the same splits with the GBM's scores set directly, by the user's IDs.
  loaded = load_dataset(from_column)
  by_id = dict(zip(zip(cols["request_id"], cols["doc"]), predicted))
  memory = {}
  for name, batch in loaded.splits.items():
    ids = loaded.ids[name]
    scores = np.zeros(batch.valid.shape + (1,), np.float32)
    for r, n in zip(*np.nonzero(batch.valid)):
      scores[r, n, 0] = by_id[(ids.request[r], ids.candidate[r, n])]
    memory[name] = batch._replace(teacher_scores=scores, teacher_mask=None)
  np.testing.assert_array_equal(memory["train"].teacher_scores,
                                loaded.splits["train"].teacher_scores)
  from prerank_jax.host import runner

  in_memory = logged_config(tmp_path)
  in_memory.name = "memory"
  original = runner.load_data
  runner.load_data = lambda config: (memory, loaded.builder, loaded.ids)
  try:
    memory_result = run(in_memory)
  finally:
    runner.load_data = original
  a = {r["model"]: r for r in column_result.rows}
  b = {r["model"]: r for r in memory_result.rows}
  assert a.keys() == b.keys()
  for model in a:
    assert a[model]["ndcg@10"] == pytest.approx(b[model]["ndcg@10"], abs=1e-6), model


# --- LETOR score files (LightGBM predict format) ----------------------------------------------

def _letor_with_scores(tmp_path):
  from tests.data.test_ids import letor_config, write_libsvm

  scores = {}
  for split, name, seed in (("train", "train.txt", 0), ("test", "test.txt", 2)):
    expected = write_libsvm(tmp_path / "raw" / name, seed=seed, prefix=split[:2])
    values = np.round(np.random.default_rng(seed).normal(size=len(expected)), 4)
    values[::7] = np.nan  # the ranker left some documents unscored
    (tmp_path / "raw" / f"{name}.pred").write_text(
        "\n".join("nan" if np.isnan(v) else repr(float(v)) for v in values) + "\n")
    scores.update(zip(expected, values))  # dict order: file order of the data lines
  config = letor_config(tmp_path, teacher_score_file=dict(
      train=("train.txt.pred",), valid=(), test=("test.txt.pred",)))
  config.teacher.model.name = "logged"
  return config, scores


def test_letor_score_file_is_the_teacher(tmp_path):
  from prerank_jax.data.registry import load_dataset

  config, scores = _letor_with_scores(tmp_path)
  validate_config(config)
  loaded = load_dataset(config)
  assert loaded.splits["valid"].num_requests >= 1  # carved from train, with train's scores
  for split, batch in loaded.splits.items():
    validate_batch(batch, require_teacher=True)
    ids = loaded.ids[split]
    for r in range(batch.num_requests):
      for n in np.flatnonzero(batch.valid[r]):
        logged = scores[(ids.request[r], ids.candidate[r, n])]
        assert batch.teacher_mask[r, n, 0] == (not np.isnan(logged))
        if not np.isnan(logged):
          assert batch.teacher_scores[r, n, 0] == np.float32(logged)


def test_letor_score_file_with_wrong_line_count_refused_with_both_counts(tmp_path):
  from prerank_jax.data.registry import load_dataset

  config, scores = _letor_with_scores(tmp_path)
  pred = tmp_path / "raw" / "test.txt.pred"
  lines = pred.read_text().splitlines()
  pred.write_text("\n".join(lines[:-3]) + "\n")
  with pytest.raises(ValueError, match=rf"test.txt.pred has {len(lines) - 3} scores, but "
                                       rf".*test.txt has {len(lines)} data lines"):
    load_dataset(config)
  assert not any((tmp_path / "tfds").rglob("dataset_info.json"))  # nothing prepared


@pytest.mark.parametrize("read_from", ["memory", "records"])
def test_streamed_input_keeps_the_mask(tmp_path, read_from):
  """With input_pipeline=grain (order=device) the students equal the device-resident
  pipeline's on a logged teacher with missing scores: the mask travels with the batches
  (were it dropped, the filler 0 would be distilled and the students would differ)."""
  from prerank_jax.host.runner import run

  write_logs(tmp_path / "raw" / "logs.parquet", missing_top=4)
  results = {}
  for pipeline in ("device", "grain"):
    config = logged_config(tmp_path)
    config.name = pipeline
    config.sweep.group_size = 0
    config.input_pipeline = pipeline
    config.streaming.read_from = read_from
    config.streaming.steps_per_call = 2
    results[pipeline] = {r["model"]: r["ndcg@10"] for r in run(config).rows}
  assert results["device"].keys() == results["grain"].keys()
  for model, value in results["device"].items():
    assert results["grain"][model] == pytest.approx(value, abs=1e-5), model


@pytest.mark.parametrize("kd", ["ranking_distillation", "fsltr_priority", "soft_recall"])
def test_order_only_losses_read_only_the_teachers_order(kd):
  """The losses whose docstrings say they assume only an order give the same loss for a
  logged rank's −rank, the ranker's logits, and any increasing transform of them."""
  batch, raw = _lists(r=4, n=8, m=1, seed=4)
  batch = batch._replace(label=(np.arange(8) % 3 == 0).astype(np.float32)[None].repeat(4, 0),
                         exposed=np.ones((4, 8), bool) & batch.valid)
  ranks = np.argsort(np.argsort(-raw, axis=1), axis=1) + 1.0  # 1 = best within each list
  objective = make_objective(kd=kd, gt="bce")
  hp = {"alpha": 1.0, "rd_topk": 3.0, "rd_lambda": 1.0, "rd_mu": 0.5, "rd_warmup_steps": 0.0,
        "fsltr_topk": 3.0, "recall_k": 3.0, "recall_keep_ratio": 0.5, "neuralsort_tau": 1.0}
  s = jnp.asarray(np.random.default_rng(5).normal(size=(4, 8)), jnp.float32)
  value = lambda t: float(objective(s, batch._replace(teacher_scores=np.float32(t)), hp,
                                    step=3, rng=jax.random.key(1)))
  base = value(raw)
  assert value(to_logits(ranks, kind="rank")) == pytest.approx(base, rel=1e-6)
  assert value(np.exp(raw) * 3.0 - 1.0) == pytest.approx(base, rel=1e-6)


def test_probability_column_gives_the_logit_columns_teacher(tmp_path):
  """A column of probabilities σ(x) read with score_kind='probability' gives the teacher
  logits x (inside the clip), with the same missing slots; an ensemble weight per column
  is checked against the number of columns."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  from prerank_jax.data.registry import load_dataset

  write_logs(tmp_path / "raw" / "plain.parquet", missing_top=6)
  table = pq.read_table(tmp_path / "raw" / "plain.parquet")
  x = np.asarray(table.column("ranker_score").to_pylist(), dtype=float)
  prob = pa.array([None if np.isnan(v) else float(1 / (1 + np.exp(-v))) for v in x])
  pq.write_table(table.append_column("ranker_prob", prob), tmp_path / "raw" / "logs.parquet")
  logits = load_dataset(logged_config(tmp_path))
  config = logged_config(tmp_path, columns=("ranker_prob",), score_kind="probability")
  probs = load_dataset(config)
  for split in ("train", "valid", "test"):
    a, b = logits.splits[split], probs.splits[split]
    np.testing.assert_array_equal(a.teacher_mask, b.teacher_mask)
    np.testing.assert_allclose(b.teacher_scores, a.teacher_scores, rtol=1e-4, atol=1e-5)
  both = logged_config(tmp_path, columns=("ranker_score", "ranker_prob"))
  both.student.loss.ensemble_weights = (1.0,)
  with pytest.raises(ConfigError, match="ensemble_weights.*2 logged teacher"):
    validate_config(both)
  both.student.loss.ensemble_weights = (1.0, 3.0)
  validate_config(both)


def test_letor_cli_run_with_score_files(tmp_path):
  """LETOR files with LightGBM-format score files train from the CLI with a logged
  teacher; the teacher row's NDCG@10 equals the test score file's NDCG@10 over the judged
  labels, computed here from the raw files."""
  from prerank_jax.cli import main
  from tests.data.test_ids import write_libsvm

  for name, seed in (("train.txt", 0), ("test.txt", 2)):
    write_libsvm(tmp_path / "raw" / name, seed=seed, num_queries=20, prefix=name[:2])
  test_lines = [line for line in (tmp_path / "raw" / "test.txt").read_text().splitlines()
                if line.split("#")[0].strip()]
  rng = np.random.default_rng(9)
  for name in ("train.txt", "test.txt"):
    lines = [line for line in (tmp_path / "raw" / name).read_text().splitlines()
             if line.split("#")[0].strip()]
    scores = [float(line.split()[0]) + rng.normal() for line in lines]
    (tmp_path / "raw" / f"{name}.pred").write_text("\n".join(map(repr, scores)) + "\n")
  root = Path(__file__).resolve().parents[2]
  code = main(["prerank-jax", "sweep", f"--config={root / 'configs' / 'letor.py'}:smoke",
               "--config.dataset=letor", f"--config.workdir={tmp_path / 'runs'}",
               "--config.name=letor_logged", f"--config.source.data_dir={tmp_path / 'tfds'}",
               f"--config.source.manual_dir={tmp_path / 'raw'}",
               "--config.source.student_features=()", "--config.source.list_size=20",
               "--config.source.min_list_size=5", "--config.wandb.mode=disabled",
               "--config.progress=False", "--config.sweep.temperature=(1.0,)",
               "--config.sweep.alpha=(1.0,)", "--config.teacher.model.name=logged",
               "--config.source.teacher_score_file.train=('train.txt.pred',)",
               "--config.source.teacher_score_file.test=('test.txt.pred',)"])
  assert code == 0
  with open(tmp_path / "runs" / "letor_logged" / "results.csv") as f:
    rows = {r["model"]: r for r in csv.DictReader(f)}
  scores = [float(v) for v in (tmp_path / "raw" / "test.txt.pred").read_text().split()]
  by_query: dict[str, list] = {}
  for line, score in zip(test_lines, scores):
    by_query.setdefault(line.split()[1], []).append((score, float(line.split()[0])))
  values = [numpy_ndcg(np.array([s for s, _ in q]), np.array([y for _, y in q]), 10)
            for q in by_query.values() if max(y for _, y in q) > 0]
  assert float(rows["teacher"]["ndcg@10"]) == pytest.approx(float(np.mean(values)), abs=1e-5)
