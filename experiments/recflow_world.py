"""A simulated world written in RecFlow's exact file layout, with its hidden truth beside it.

    python experiments/recflow_world.py --out DIR [--smoke] [--seed S] [--days D]
        [--requests R] [--retrieved C]

writes (RecFlow's README, "Dataset Organization"; the names are
:mod:`prerank_jax.data.recflow`'s constants)::

    DIR/all_stage/<day>.feather            every candidate of every request of the day
    DIR/realshow/<day>.feather             the exposed ones (realshow == 1)
    DIR/seq_effective_50_dict/<day>.pkl    {request_id: int64 [50, 10]} the user's last 50
                                           effective views before the request, left-padded
    DIR/request_id_dict/<day>.pkl          {request_id: {stage: int64 [n, 8]}}
    DIR/others/id_cnt.pkl                  {field: number of distinct ids}
    DIR/others/coarse_rank_test.feather    every candidate of the last day's requests
                                           (and a copy named prerank_test.feather, the name
                                           RecFlow's coarse/eval_dssm.py reads); what
                                           RecFlow's own file holds is not documented
                                           beyond its columns
    DIR/hidden_truth/<day>.feather         request_id, video_id, true_logit,
                                           p_effective_view: NOT part of RecFlow

Every column of the README's feature table is written as int64 with exactly its name.
Days start at 2024-01-13, RecFlow's first day.

The cascade that makes the stage flags, per request (sizes for the default; ``--smoke``
in brackets; ``--retrieved C`` scales them, see :func:`cascade_sizes`, e.g. C = 470 for
RecFlow's test lists): retrieval returns C = 120 [60] candidates; the pre-ranker keeps its top 60
[40] (the rest: ``prerank_neg``), the coarse ranker its top 30 [25] (``coarse_neg``);
the ranker orders those (``rank_index`` 0-based; top 10: ``rank_pos``, the rest
``rank_neg``); the reranker orders the ranker's top 20 (``rerank_index``; top 10:
``rerank_pos``, the rest ``rerank_neg``); its top 6 are exposed (``realshow``). Each stage
scores the true logit plus Gaussian noise shrinking along the cascade (σ = 2, 1.2, 0.6,
0.3), so later stages agree more with the truth. A candidate keeps every flag it earned
(an exposed candidate is also ``rank_pos`` or ``rank_neg`` and ``rerank_pos``), and
``request_id_dict`` lists it under each of those stages; ``rank_index`` and
``rerank_index`` are -1 where the candidate did not reach that stage. These are this
world's choices: RecFlow's README does not say whether its stage flags overlap.

The truth: users have interests over first-level categories (Dirichlet) and authors they
follow; videos have a category, an author, a quality with a popularity skew and a duration.
true_logit(u, v) = 2·log(C1 · interest_u[cate_one(v)]) + quality(v) + 1.5·[u follows
author(v)] + ε(u, v) − 1.5; an exposed candidate is an effective view with probability
sigmoid(true_logit); long views, likes, follows, forwards and comments are rarer events
drawn from it. The behaviour sequence of a request is drawn from the user's interests at
first and then holds the user's own effective views of the previous requests.

Runtime on the shared 2-core CPU (busy with other jobs): ``--smoke`` (6 days × 150
requests × 60 candidates) 2.4 s wall; the default (6 days × 5,000 requests × 120
candidates, 3.6 M rows, 589 MB) 94 s wall, 25 s CPU.
"""

from __future__ import annotations

import argparse
import datetime
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prerank_jax.data.recflow import (  # noqa: E402
    COLUMNS, FOLDERS, ID_CNT_FIELDS, SEQ_COLUMNS, SEQ_LEN, STAGES, vocab_flags)

FIRST_DAY = datetime.date(2024, 1, 13)
# Per request: retrieved, kept by pre-rank, kept by coarse rank, reranked, exposed.
SIZES = {"default": dict(retrieved=120, prerank_keep=60, coarse_keep=30, rerank_in=20,
                         exposed=6),
         "smoke": dict(retrieved=60, prerank_keep=40, coarse_keep=25, rerank_in=20,
                       exposed=6)}
NOISE = dict(prerank=2.0, coarse=1.2, rank=0.6, rerank=0.3)


def day_name(i: int) -> str:
  """The ISO name of day ``i`` counted from RecFlow's first day, 2024-01-13."""
  return (FIRST_DAY + datetime.timedelta(days=i)).isoformat()


class World:
  """Users, videos and their hidden affinities (all numpy, seeded)."""

  def __init__(self, rng: np.random.Generator, *, users: int, videos: int, authors: int,
               cate_one: int, cate_two: int):
    self.rng = rng
    self.c1, self.c2 = cate_one, cate_two
    self.interest = rng.dirichlet(np.full(cate_one, 0.3), size=users)
    self.follows = rng.random((users, authors)) < 3.0 / authors
    self.age = rng.integers(0, 8, users)
    self.gender = rng.integers(0, 3, users)
    self.province = rng.integers(0, 34, users)
    self.device = rng.permutation(users)
    self.v_cate_one = rng.integers(0, cate_one, videos)
    self.v_cate_two = self.v_cate_one * (cate_two // cate_one) + rng.integers(
        0, cate_two // cate_one, videos)
    self.v_author = rng.integers(0, authors, videos)
    self.v_quality = rng.normal(0.0, 0.7, videos)
    self.v_popularity = np.exp(1.2 * self.v_quality + rng.normal(0, 1.0, videos))
    self.v_popularity /= self.v_popularity.sum()
    self.v_upload_type = rng.integers(0, 5, videos)
    self.v_duration = (rng.lognormal(10.3, 0.7, videos)).astype(np.int64)   # ms, ~30 s
    start = int(datetime.datetime(2023, 12, 1, tzinfo=datetime.timezone.utc).timestamp())
    self.v_upload = start + rng.integers(0, 40 * 86400, videos)             # seconds
    self.history: dict[int, list[np.ndarray]] = {}
    self._by_cat = np.argsort(self.v_cate_one, kind="stable")
    self._cat_count = np.bincount(self.v_cate_one, minlength=cate_one)
    self._cat_start = np.concatenate([[0], np.cumsum(self._cat_count)[:-1]])

  def videos_of(self, cats: np.ndarray) -> np.ndarray:
    """One uniformly drawn video of each category in ``cats``."""
    offset = (self.rng.random(len(cats)) * self._cat_count[cats]).astype(np.int64)
    return self._by_cat[self._cat_start[cats] + offset]

  def true_logit(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    affinity = np.log(self.c1 * self.interest[u, self.v_cate_one[v]] + 1e-3)
    follow = self.follows[u, self.v_author[v]]
    noise = self.rng.normal(0.0, 0.5, v.shape)
    return 2.0 * affinity + self.v_quality[v] + 1.5 * follow + noise - 1.5

  def retrieve(self, u: int, size: int) -> np.ndarray:
    """Half by the user's interests, half by popularity; distinct videos."""
    cats = self.rng.choice(self.c1, size=3 * size, p=self.interest[u])
    by_cat = self.videos_of(cats)
    popular = self.rng.choice(len(self.v_popularity), size=3 * size, p=self.v_popularity)
    pool = np.concatenate([by_cat[: 3 * size // 2], popular[: 3 * size // 2]])
    pool = pool[np.sort(np.unique(pool, return_index=True)[1])]
    while len(pool) < size:  # rare: top up with uniform draws
      extra = self.rng.integers(0, len(self.v_popularity), size)
      pool = np.concatenate([pool, extra])
      pool = pool[np.sort(np.unique(pool, return_index=True)[1])]
    return self.rng.permutation(pool[:size])

  def sequence(self, u: int, now_ms: int) -> np.ndarray:
    """int64 [SEQ_LEN, 10] of the user's last effective views, real rows at the end."""
    rows = self.history.get(u)
    if rows is None:  # a first request: a history drawn from the user's interests
      n = int(self.rng.integers(5, SEQ_LEN + 1))
      cats = self.rng.choice(self.c1, size=n, p=self.interest[u])
      vids = self.videos_of(cats)
      times = now_ms - np.sort(self.rng.integers(1, 30 * 86400_000, n))[::-1]
      rows = [self._seq_row(v, int(t), int(self.v_duration[v] * 0.6), -1)
              for v, t in zip(vids, times)]
      self.history[u] = rows
    rows = rows[-SEQ_LEN:]
    out = np.zeros((SEQ_LEN, len(SEQ_COLUMNS)), np.int64)
    if rows:
      out[SEQ_LEN - len(rows):] = np.stack(rows)
    return out

  def _seq_row(self, v: int, time_ms: int, playing_ms: int, request_id: int) -> np.ndarray:
    return np.asarray([v, self.v_author[v], self.v_cate_two[v], self.v_cate_one[v],
                       self.v_upload_type[v], self.v_upload[v], self.v_duration[v], time_ms,
                       playing_ms, request_id], np.int64)

  def remember(self, u: int, v: int, time_ms: int, playing_ms: int, request_id: int) -> None:
    self.history.setdefault(u, []).append(self._seq_row(v, time_ms, playing_ms, request_id))
    self.history[u] = self.history[u][-SEQ_LEN:]


def top(scores: np.ndarray, keep: int) -> np.ndarray:
  """Indices of the ``keep`` largest scores, best first."""
  return np.argsort(-scores, kind="stable")[:keep]


def simulate_request(world: World, rng: np.random.Generator, request_id: int, u: int,
                     now_ms: int, sizes: dict) -> tuple[dict, dict, np.ndarray]:
  """One request through the cascade: ``(columns, request_dict, truth)``."""
  v = world.retrieve(u, sizes["retrieved"])
  n = len(v)
  logit = world.true_logit(np.full(n, u), v)
  flags = {name: np.zeros(n, np.int64) for name in STAGES}
  rank_index = np.full(n, -1, np.int64)
  rerank_index = np.full(n, -1, np.int64)
  stage = lambda name, idx: logit[idx] + rng.normal(0, NOISE[name], len(idx))
  everyone = np.arange(n)
  pre = everyone[top(stage("prerank", everyone), sizes["prerank_keep"])]
  flags["prerank_neg"][np.setdiff1d(everyone, pre)] = 1
  coarse = pre[top(stage("coarse", pre), sizes["coarse_keep"])]
  flags["coarse_neg"][np.setdiff1d(pre, coarse)] = 1
  ranked = coarse[top(stage("rank", coarse), len(coarse))]
  rank_index[ranked] = np.arange(len(ranked))
  flags["rank_pos"][ranked[:10]] = 1
  flags["rank_neg"][ranked[10:]] = 1
  rer_in = ranked[:sizes["rerank_in"]]
  reranked = rer_in[top(stage("rerank", rer_in), len(rer_in))]
  rerank_index[reranked] = np.arange(len(reranked))
  flags["rerank_pos"][reranked[:10]] = 1
  flags["rerank_neg"][reranked[10:]] = 1
  shown = reranked[:sizes["exposed"]]
  flags["realshow"][shown] = 1
  p = 1.0 / (1.0 + np.exp(-logit))
  effective = np.zeros(n, np.int64)
  effective[shown] = rng.random(len(shown)) < p[shown]
  watch = np.where(effective > 0, rng.uniform(0.3, 1.6, n), rng.uniform(0.0, 0.3, n))
  duration = world.v_duration[v]
  playing = np.where(flags["realshow"] > 0, (watch * duration).astype(np.int64), 0)
  long_view = (flags["realshow"] > 0) & (watch >= 1.0)
  bern = lambda rate: ((effective > 0) & (rng.random(n) < rate)).astype(np.int64)
  cols = dict(
      request_id=np.full(n, request_id), request_timestamp=np.full(n, now_ms),
      user_id=np.full(n, u), device_id=np.full(n, world.device[u]),
      age=np.full(n, world.age[u]), gender=np.full(n, world.gender[u]),
      province=np.full(n, world.province[u]), video_id=v, author_id=world.v_author[v],
      category_level_one=world.v_cate_one[v], category_level_two=world.v_cate_two[v],
      upload_type=world.v_upload_type[v], upload_timestamp=world.v_upload[v],
      duration=duration, **flags, rank_index=rank_index, rerank_index=rerank_index,
      playing_time=playing, effective_view=effective,
      long_view=long_view.astype(np.int64), like=bern(0.1), follow=bern(0.02),
      forward=bern(0.02), comment=bern(0.03))
  dict_cols = np.stack([v, world.v_author[v], duration, world.v_cate_two[v],
                        world.v_upload_type[v], world.v_upload[v], world.v_cate_one[v],
                        effective], axis=1).astype(np.int64)
  request_dict = {name: dict_cols[flags[name] > 0] for name in STAGES}
  for i in np.flatnonzero(effective):
    world.remember(u, int(v[i]), now_ms, int(playing[i]), request_id)
  truth = np.stack([v, logit, p], axis=1)
  return cols, request_dict, truth


def write_feather(path: Path, columns: dict) -> None:
  """Writes RecFlow's 30 columns (:data:`COLUMNS`, in the README's order) as int64."""
  import pyarrow as pa
  import pyarrow.feather as feather

  table = pa.table({name: pa.array(np.asarray(columns[name], np.int64), pa.int64())
                    for name in COLUMNS})
  path.parent.mkdir(parents=True, exist_ok=True)
  feather.write_feather(table, path)


def cascade_sizes(retrieved: int) -> dict:
  """Stage sizes for ``retrieved`` candidates a request: the pre-ranker keeps half, the
  coarse ranker a quarter (at least 30), the reranker reorders the ranker's top 20 and
  exposes 6. Every stage LCRON draws from keeps at least 10 candidates."""
  if retrieved < 80:
    raise ValueError(f"--retrieved: at least 80 (10 candidates for each stage LCRON draws "
                     f"from), got {retrieved}")
  coarse = max(30, retrieved // 4)
  return dict(retrieved=retrieved, prerank_keep=retrieved // 2, coarse_keep=coarse,
              rerank_in=20, exposed=6)


def write_world(out: Path, *, smoke: bool = False, seed: int = 0, days: int = 6,
                requests: int | None = None, retrieved: int | None = None) -> dict:
  """Writes the world under ``out``; returns a summary (days, rows, requests)."""
  import pyarrow as pa
  import pyarrow.feather as feather

  sizes = cascade_sizes(retrieved) if retrieved else SIZES["smoke" if smoke else "default"]
  requests = requests or (150 if smoke else 5000)
  rng = np.random.default_rng(seed)
  world = World(rng, users=max(50, requests // 5), videos=2000 if smoke else 20000,
                authors=200 if smoke else 2000, cate_one=12, cate_two=48)
  out = Path(out)
  for folder in FOLDERS:
    (out / folder).mkdir(parents=True, exist_ok=True)
  next_request = 0
  summary = {"days": [], "rows": 0, "requests": 0}
  seen = {f: set() for f in ID_CNT_FIELDS}
  test_parts = []
  for d in range(days):
    name = day_name(d)
    day_start = int(datetime.datetime.combine(FIRST_DAY + datetime.timedelta(days=d),
                                              datetime.time(),
                                              tzinfo=datetime.timezone.utc).timestamp())
    times = day_start * 1000 + np.sort(rng.integers(0, 86400_000, requests))
    users = rng.integers(0, len(world.interest), requests)
    parts, seqs, dicts, truths = [], {}, {}, []
    for t, u in zip(times, users):
      rid = next_request
      next_request += 1
      seqs[rid] = world.sequence(int(u), int(t))
      cols, request_dict, truth = simulate_request(world, rng, rid, int(u), int(t), sizes)
      parts.append(cols)
      dicts[rid] = request_dict
      truths.append((np.full(len(truth), rid), truth))
    day = {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}
    for f in ID_CNT_FIELDS:
      seen[f].update(np.unique(day[f]).tolist())
    write_feather(out / "all_stage" / f"{name}.feather", day)
    shown = day["realshow"] > 0
    write_feather(out / "realshow" / f"{name}.feather", {c: day[c][shown] for c in COLUMNS})
    with open(out / "seq_effective_50_dict" / f"{name}.pkl", "wb") as f:
      pickle.dump(seqs, f, protocol=4)
    with open(out / "request_id_dict" / f"{name}.pkl", "wb") as f:
      pickle.dump(dicts, f, protocol=4)
    rid = np.concatenate([r for r, _ in truths])
    tr = np.concatenate([t for _, t in truths])
    (out / "hidden_truth").mkdir(exist_ok=True)
    feather.write_feather(pa.table({
        "request_id": rid.astype(np.int64), "video_id": tr[:, 0].astype(np.int64),
        "true_logit": tr[:, 1].astype(np.float32),
        "p_effective_view": tr[:, 2].astype(np.float32)}),
        out / "hidden_truth" / f"{name}.feather")
    if d == days - 1:  # the coarse-ranking test file: every candidate of the last day
      test_parts.append(day)
    summary["days"].append(name)
    summary["rows"] += int(len(day["request_id"]))
    summary["requests"] += requests
  test = test_parts[0]
  for test_name in ("coarse_rank_test.feather", "prerank_test.feather"):
    write_feather(out / "others" / test_name, test)
  # IDs are contiguous from 0, so the number of distinct IDs of a field is its largest + 1
  # (RecFlow's tables have id_cnt + 2 rows: padding 0 and the IDs shifted by 1).
  id_cnt = {f: int(max(seen[f])) + 1 for f in ID_CNT_FIELDS}
  with open(out / "others" / "id_cnt.pkl", "wb") as f:
    pickle.dump(id_cnt, f, protocol=4)
  return summary


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="the folder to write (RecFlow's root)")
  parser.add_argument("--smoke", action="store_true", help="a small world for tests")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--days", type=int, default=6)
  parser.add_argument("--requests", type=int, default=0, help="per day; 0 = the default")
  parser.add_argument("--retrieved", type=int, default=0,
                      help="candidates a request (>= 80; 0 = 120, or 60 with --smoke); "
                      "the configs' source.list_size must be at least this")
  args = parser.parse_args(argv)
  if args.days < 2:
    parser.error("--days: at least 2 (training days and a test day)")
  if args.retrieved and args.retrieved < 80:
    parser.error(f"--retrieved: at least 80 (10 candidates for each stage LCRON draws "
                 f"from), got {args.retrieved}")
  summary = write_world(Path(args.out), smoke=args.smoke, seed=args.seed, days=args.days,
                        requests=args.requests or None, retrieved=args.retrieved or None)
  print(f"wrote {summary['requests']} requests, {summary['rows']} stage rows over "
        f"{summary['days'][0]}..{summary['days'][-1]} to {args.out}")
  print("ID table sizes for configs/recflow.py:<coarse|lcron>,ids (DSSM/DIN):\n  "
        + " ".join(vocab_flags(args.out)))


if __name__ == "__main__":
  main()
