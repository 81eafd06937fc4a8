"""MovieLens (raw GroupLens files) as a TFDS dataset (``prerank_movielens``).

Input: the files of ``ml-100k.zip`` (``u.data``, ``u.item``, ``u.user``) or ``ml-1m.zip``
(``ratings.dat``, ``movies.dat``, ``users.dat``) from https://grouplens.org/datasets/movielens/,
extracted into the manual directory (directly or in its ``ml-100k/`` / ``ml-1m/`` folder).

A request is a user. Each user's ratings are sorted by time; the first ``history_fraction``
of them are the user's *history* (used only for the teacher's affinity features), the rest
are the user's *rated candidates*. Users are split into train/valid/test at random
(``valid_fraction``, ``test_fraction``, seeded).

* **candidates**: the rated candidates (at most ``N − num_negatives`` of them, a seeded
  uniform subset when there are more) plus items the user never rated, sampled uniformly,
  up to ``N = list_size``; then shuffled, so position carries no information;
* **context** (user attributes, 23 features): ``age/50``, ``gender == M``, occupation
  one-hot (21);
* **items** (student and teacher): genre multi-hot (19 in ml-100k, 18 in ml-1m) and
  ``(year − 1990)/20`` of the release year (the mean year when unknown);
* **cross** (teacher only, ``G + 2`` features): user×genre affinities from the history,
  ``a_g = shrunk mean of (rating − user mean) over history items of genre g``: the item's
  ``genre ⊙ a``, the mean of ``a`` over the item's genres, and the share of the history in
  the item's genres;
* **label** = the rating (1–5) of a rated candidate, 0 otherwise; **exposed** = rated;
  **true_relevance** = the same ratings (unrated candidates count as 0: there is no hidden
  truth here, unlike the simulator and LETOR); no propensities.

Licence: the GroupLens MovieLens licence allows research use but not redistribution
without permission; prerank-jax ships this loader, not the data.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from prerank_jax.batch import Batch
from prerank_jax.data import tfds_base
from prerank_jax.fingerprint import fingerprint

VERSION = "1.0.0"
SPLITS = ("train", "valid", "test")
GENRES_1M = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
             "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
             "Romance", "Sci-Fi", "Thriller", "War", "Western")
GENRES_100K = ("unknown", *GENRES_1M)
OCCUPATIONS_100K = ("administrator", "artist", "doctor", "educator", "engineer",
                    "entertainment", "executive", "healthcare", "homemaker", "lawyer",
                    "librarian", "marketing", "none", "other", "programmer", "retired",
                    "salesman", "scientist", "student", "technician", "writer")
NUM_OCCUPATIONS = 21  # ml-1m codes them 0..20
CONTEXT_FEATURES = 2 + NUM_OCCUPATIONS
VARIANTS = {
    "100k": dict(files=("u.data", "u.item", "u.user"), folder="ml-100k",
                 genres=GENRES_100K, url="https://files.grouplens.org/datasets/movielens/ml-100k.zip"),
    "1m": dict(files=("ratings.dat", "movies.dat", "users.dat"), folder="ml-1m",
               genres=GENRES_1M, url="https://files.grouplens.org/datasets/movielens/ml-1m.zip"),
}
LICENCE = ("GroupLens MovieLens licence: research use; no redistribution without "
           "permission. prerank-jax ships this loader, not the data.")
_SHRINK = 5.0  # prior count of the affinity's shrinkage towards 0


@dataclasses.dataclass
class Ratings:
  """Raw MovieLens tables as arrays (user and item ids are the files' own ids)."""

  user: np.ndarray     # [n] int
  item: np.ndarray     # [n] int
  rating: np.ndarray   # [n] float32
  time: np.ndarray     # [n] int
  genres: dict         # item id -> [G] float32 multi-hot
  year: dict           # item id -> float year or nan
  users: dict          # user id -> [CONTEXT_FEATURES] float32


def _read(path: Path) -> list[str]:
  return path.read_text(encoding="latin-1").splitlines()


def read_100k(folder: Path) -> Ratings:
  table = np.loadtxt(folder / "u.data", dtype=np.int64, ndmin=2)
  genres, year = {}, {}
  for line in _read(folder / "u.item"):
    if not line.strip():
      continue
    parts = line.split("|")
    item = int(parts[0])
    date = parts[2].strip()
    year[item] = float(date[-4:]) if len(date) >= 4 and date[-4:].isdigit() else np.nan
    genres[item] = np.asarray([float(x) for x in parts[-len(GENRES_100K):]], np.float32)
  users = {}
  occupation = {name: i for i, name in enumerate(OCCUPATIONS_100K)}
  for line in _read(folder / "u.user"):
    if not line.strip():
      continue
    uid, age, gender, job, _ = line.split("|")
    ctx = np.zeros(CONTEXT_FEATURES, np.float32)
    ctx[0], ctx[1] = float(age) / 50.0, float(gender == "M")
    ctx[2 + occupation.get(job, occupation["other"])] = 1.0
    users[int(uid)] = ctx
  return Ratings(table[:, 0], table[:, 1], table[:, 2].astype(np.float32), table[:, 3],
                 genres, year, users)


def read_1m(folder: Path) -> Ratings:
  rows = [line.split("::") for line in _read(folder / "ratings.dat") if line.strip()]
  table = np.asarray(rows, np.int64).reshape(-1, 4)
  genres, year = {}, {}
  index = {g: i for i, g in enumerate(GENRES_1M)}
  for line in _read(folder / "movies.dat"):
    if not line.strip():
      continue
    item, title, names = line.split("::")
    title = title.strip()
    year[int(item)] = (float(title[-5:-1]) if title.endswith(")") and title[-5:-1].isdigit()
                       else np.nan)
    g = np.zeros(len(GENRES_1M), np.float32)
    for name in names.strip().split("|"):
      if name in index:
        g[index[name]] = 1.0
    genres[int(item)] = g
  users = {}
  for line in _read(folder / "users.dat"):
    if not line.strip():
      continue
    uid, gender, age, job, _ = line.split("::")
    ctx = np.zeros(CONTEXT_FEATURES, np.float32)
    ctx[0], ctx[1] = float(age) / 50.0, float(gender == "M")
    ctx[2 + min(int(job), NUM_OCCUPATIONS - 1)] = 1.0
    users[int(uid)] = ctx
  return Ratings(table[:, 0], table[:, 1], table[:, 2].astype(np.float32), table[:, 3],
                 genres, year, users)


def find_folder(manual: Path, variant: str) -> Path | None:
  """The folder holding a variant's three files (the manual dir or its ml-* folder)."""
  spec = VARIANTS[variant]
  for folder in (manual, manual / spec["folder"]):
    if all((folder / f).is_file() for f in spec["files"]):
      return folder
  return None


def build_requests(data: Ratings, params: dict, genre_names) -> dict[str, list[dict]]:
  """Every user with history and rated candidates → one record, grouped by split."""
  n, num_neg = params["list_size"], params["num_negatives"]
  num_genres = len(genre_names)
  items = np.asarray(sorted(data.genres), np.int64)
  genre_matrix = np.stack([data.genres[i] for i in items])
  years = np.asarray([data.year[i] for i in items], np.float64)
  years = np.where(np.isnan(years), np.nanmean(years), years)
  item_features = np.concatenate([genre_matrix, ((years - 1990.0) / 20.0)[:, None]],
                                 axis=1).astype(np.float32)
  position = {int(item): k for k, item in enumerate(items)}

  order = np.lexsort((data.item, data.time, data.user))
  user, item, rating = data.user[order], data.item[order], data.rating[order]
  bounds = np.flatnonzero(np.diff(user)) + 1
  starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(user)]])
  users = [int(user[s]) for s in starts]
  split_of = np.empty(len(users), np.int64)
  perm = np.random.default_rng([params["seed"], 11]).permutation(len(users))
  num_valid = int(round(params["valid_fraction"] * len(users)))
  num_test = int(round(params["test_fraction"] * len(users)))
  split_of[perm[:num_valid]] = 1
  split_of[perm[num_valid:num_valid + num_test]] = 2
  split_of[perm[num_valid + num_test:]] = 0

  out = {s: [] for s in SPLITS}
  for u, (s, e) in enumerate(zip(starts, ends)):
    uid = users[u]
    count = e - s
    num_hist = int(np.floor(params["history_fraction"] * count))
    if num_hist < 1 or count - num_hist < 1 or uid not in data.users:
      continue
    rng = np.random.default_rng([params["seed"], uid])
    hist_items = np.asarray([position[int(i)] for i in item[s:s + num_hist]])
    hist_rating = rating[s:s + num_hist]
    fut_items = np.asarray([position[int(i)] for i in item[s + num_hist:e]])
    fut_rating = rating[s + num_hist:e]
    # Affinities from the history only.
    hg = genre_matrix[hist_items]                                        # [h, G]
    centred = hist_rating - hist_rating.mean()
    counts = hg.sum(0)
    affinity = (hg * centred[:, None]).sum(0) / (counts + _SHRINK)       # [G]
    share = counts / max(1.0, counts.sum())                              # [G]
    # Candidates: rated (capped), then never-rated items up to N.
    keep = min(len(fut_items), n - num_neg)
    pick = np.sort(rng.choice(len(fut_items), size=keep, replace=False))
    rated_items, rated_labels = fut_items[pick], fut_rating[pick]
    seen = np.zeros(len(items), bool)
    seen[hist_items], seen[fut_items] = True, True
    pool = np.flatnonzero(~seen)
    extra = rng.choice(pool, size=min(n - keep, len(pool)), replace=False)
    cand = np.concatenate([rated_items, extra])
    label = np.concatenate([rated_labels, np.zeros(len(extra), np.float32)])
    shuffle = rng.permutation(len(cand))
    cand, label = cand[shuffle], label[shuffle]
    k = len(cand)
    g = genre_matrix[cand]                                               # [k, G]
    per_item = g * affinity
    num_g = np.maximum(1.0, g.sum(1))
    cross = np.concatenate([per_item, (per_item.sum(1) / num_g)[:, None],
                            ((g * share).sum(1) / num_g)[:, None]], axis=1)
    pad = functools.partial(tfds_base.pad_rows, length=n)
    exposed = label > 0
    out[SPLITS[split_of[u]]].append({
        "context": data.users[uid],
        "items": pad(item_features[cand]),
        "cross": pad(cross.astype(np.float32)),
        "label": pad(label.astype(np.float32)),
        "exposed": pad(exposed),
        "valid": np.arange(n) < k,
        "true_relevance": pad(label.astype(np.float32)),
        "request_id": str(uid),
    })
  assert num_genres == genre_matrix.shape[1]
  return out


def _builder_class():
  import tensorflow_datasets as tfds

  tfds_base.quiet_tfds()

  @dataclasses.dataclass
  class MovielensConfig(tfds.core.BuilderConfig):
    variant: str = "100k"
    folder: str = ""
    params: dict = dataclasses.field(default_factory=dict)

  class PrerankMovielens(tfds.core.GeneratorBasedBuilder):
    """MovieLens ratings as pre-ranking requests (see the module docstring)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [MovielensConfig(name="placeholder", params={"list_size": 1},
                                       description="use prerank_jax.data.movielens.make_builder")]

    def _shapes(self):
      c = self.builder_config
      g = len(VARIANTS[c.variant]["genres"])
      return tfds_base.record_shapes(context=CONTEXT_FEATURES, list_size=c.params["list_size"],
                                     items=g + 1, cross=g + 2, truth=True, propensity=False)

    def _info(self):
      c = self.builder_config
      return tfds_base.dataset_info(
          self, self._shapes(), description=__doc__, license_note=LICENCE,
          homepage="https://grouplens.org/datasets/movielens/",
          metadata={"variant": c.variant, "params": c.params,
                    "genres": list(VARIANTS[c.variant]["genres"])})

    def _split_generators(self, dl_manager):
      c = self.builder_config
      folder = Path(c.folder)
      data = read_100k(folder) if c.variant == "100k" else read_1m(folder)
      self._requests = build_requests(data, c.params, VARIANTS[c.variant]["genres"])
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      shapes = self._shapes()
      if not self._requests[split]:
        raise ValueError(f"movielens: split {split!r} has no users; change "
                         "source.valid_fraction/test_fraction")
      for i, record in enumerate(self._requests[split]):
        yield i, tfds_base.check_record(record, shapes)

  return PrerankMovielens, MovielensConfig


# The builder classes, defined on first use (TFDS is imported lazily).
builder_classes = functools.cache(_builder_class)


def variant_of(dataset: str) -> str:
  """``"100k"``/``"1m"`` from the dataset name, or ``""`` (auto: whichever is present)."""
  tail = dataset.split("/", 1)[1] if "/" in dataset else ""
  return tail.split("-", 1)[0]


def params_of(config) -> dict[str, Any]:
  s = config.source
  return {"list_size": int(s.list_size), "num_negatives": int(s.num_negatives),
          "history_fraction": float(s.history_fraction),
          "valid_fraction": float(s.valid_fraction), "test_fraction": float(s.test_fraction),
          "seed": int(config.seed)}


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)``; see :func:`prerank_jax.data.letor.make_builder`."""
  from prerank_jax.data import messages

  data_dir = tfds_base.default_data_dir(config.source.data_dir)
  manual = (Path(config.source.manual_dir).expanduser() if config.source.manual_dir
            else data_dir / "downloads" / "manual" / "movielens").resolve()
  params = params_of(config)
  wanted = variant_of(config.dataset)
  candidates = [wanted] if wanted else list(VARIANTS)
  cls, config_cls = builder_classes()
  for variant in candidates:
    name = f"{variant}-n{params['list_size']}-{fingerprint([variant, params], length=10)}"
    folder = find_folder(manual, variant)
    builder_config = config_cls(name=name, variant=variant, params=params,
                                folder=str(folder or ""), description=f"ml-{variant}")
    builder = cls(config=builder_config, data_dir=str(data_dir), file_format="array_record")
    if folder is not None or tfds_base.is_prepared(builder):
      return builder, None
  spec = VARIANTS[candidates[0]]
  where = [(str(manual / spec["folder"] / f), "missing") for f in spec["files"]]
  return None, messages.missing_message(
      config, kind="movielens", what=(f"ml-{candidates[0]}.zip from {spec['url']} (or "
                    + " / ".join(VARIANTS[v]["url"] for v in VARIANTS if v != candidates[0])
                    + ")"), licence=LICENCE, manual_dir=manual, where=where)


def load(config, *, show: bool = False, lazy_train: bool = False
         ) -> tuple[dict[str, Batch], Any]:
  builder, missing = make_builder(config)
  if builder is None:
    raise tfds_base.DatasetMissingError(missing)
  builder = tfds_base.prepare(builder, missing=None, show=show)
  return tfds_base.read_splits(builder, SPLITS, lazy_train=lazy_train), builder
