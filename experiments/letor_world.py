"""E1, E2 and E7 on LETOR-format files with simulated exposure (``--letor``).

The simulator's world of each world seed is written as LibSVM ranking files
(``train.txt``, ``vali.txt``, ``test.txt``: ``<grade> qid:<q> <id>:<value> ...``, one
candidate a line, every valid candidate of every request) and read back through the
project's LETOR loader (``prerank_jax/data/letor.py``, ``configs/letor.py``), which, as on
MSLR-WEB, treats the files as fully judged and simulates the logs itself: a noisy logging
ranker over the judged grades exposes its top E, with position bias. So the same methods
run on the same world twice: once with the simulator's own logs (``e*_<name>``), once
through the LETOR route (``e*_<name>_letor``), where the labels are the world's true
grades, features are normalised with train statistics and the ground-truth loss is
``configs/letor.py``'s listwise ``softmax`` (graded labels).

What is written, per world (``write_world``):

* label: the true relevance grade ``true_relevance`` (0..relevance_grades−1);
* ``qid``: ``tr<r>``, ``va<r>``, ``te<r>`` (distinct across the split files);
* features 1..Fc: the request's context features (the same on every line of a query);
  Fc+1..Fc+Fi: the item features (the last one is the noisy item popularity);
  Fc+Fi+1..Fc+Fi+Fx: the cross (user × item) features, the teacher's only;
* the simulator's logs (``label``, ``exposed``, propensities) are not written.

How the simulator's knobs carry over to the LETOR loader (``use_letor_world``):

* ``data.num_exposed`` → ``source.num_exposed``; ``data.position_bias`` →
  ``source.position_bias`` (η, examination ``(1/p)^η``); ``data.list_size`` →
  ``source.list_size``; ``source.min_list_size`` = ``eval.k``;
* ``data.logging_popularity > 0`` → ``source.logging_feature`` = the popularity feature
  (id Fc+Fi): the logging ranker orders by that feature plus noise, no longer by the grade
  (a harsher version of the simulator's popularity-ordered logs, which add the popularity to
  the utility);
* ``source.logging_noise`` stays ``configs/letor.py``'s 1.0 (on the grade scale);
* ``source.student_features`` = 1..Fc+Fi (context and item), ``teacher_features`` = all.

The files depend only on the world seed and the world's size (the simulator's logging
knobs are reset to the preset's before writing), so every method of a world reads the
same files; the loader prepares one TFDS dataset per setting of its logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness import Experiment, Method

SPLIT_FILES = (("train", "train.txt", "tr"), ("valid", "vali.txt", "va"),
               ("test", "test.txt", "te"))
# Knobs of the simulator's own logging policy: reset before writing (the LETOR loader
# simulates the logs), so that every setting of a world reads identical files.
LOGGING_KNOBS = ("logging_noise", "logging_popularity", "position_bias")
# The full LETOR variant's world: the quickstart's "small" world with fewer requests (the
# LETOR route writes the files once per world and prepares them once per setting of the
# logs: about 13 s and 33 s at this size on the loaded 2-core CPU), so that each of E1, E2
# and E7 fits in 8-13 minutes on an idle 2-core CPU at 5 world seeds (measured: 7.9, 11.0
# and 12.7 minutes for E2, E7 and E1 with a warm compilation cache; see the README).
FULL_WORLD = {"num_requests": 1000, "num_eval_requests": 300}
FULL_WORLD_SEEDS: dict[str, tuple[int, ...]] = {}  # per experiment, if ever needed
DEFAULT_WORLD_SEEDS = tuple(range(10))  # 10 worlds, as the simulator's experiments (issue 23)
FULL_REPLICATES = (0,)


@dataclasses.dataclass(frozen=True)
class WorldLayout:
  """Feature ids (1-based, as written) of one world's LETOR files."""

  context: tuple[int, ...]
  items: tuple[int, ...]
  cross: tuple[int, ...]

  @property
  def student(self) -> tuple[int, ...]:
    return self.context + self.items

  @property
  def popularity(self) -> int:
    """The noisy item popularity: the simulator's last item feature."""
    return self.items[-1]


def layout_of(params: dict[str, Any]) -> WorldLayout:
  fc, fi, fx = (int(params[k]) for k in ("context_features", "item_features",
                                          "cross_features"))
  return WorldLayout(tuple(range(1, fc + 1)), tuple(range(fc + 1, fc + fi + 1)),
                     tuple(range(fc + fi + 1, fc + fi + fx + 1)))


def world_params(data: dict[str, Any]) -> dict[str, Any]:
  """The simulator knobs the files are written from: ``data`` with the logging knobs of
  the presets (identical in every preset)."""
  from prerank_jax.data.simulator import PRESETS
  return {**dict(data), **{k: PRESETS["small"][k] for k in LOGGING_KNOBS}}


def letor_lines(features: np.ndarray, grades: np.ndarray, valid: np.ndarray,
                prefix: str) -> list[str]:
  """LibSVM ranking lines of one split.

  Args:
    features: ``[R, N, F]`` every feature of every candidate.
    grades: ``[R, N]`` integer-valued relevance grades.
    valid: ``[R, N]`` bool; padding is not written.
    prefix: query-id prefix (distinct per split).

  Returns:
    One ``"<grade> qid:<prefix><r> 1:<v> ... F:<v>"`` line per valid candidate, requests in
    order.
  """
  r_idx, n_idx = np.nonzero(valid)
  body = "".join(f" {i + 1}:%.6g" for i in range(features.shape[-1]))
  fmt = "%d qid:" + prefix + "%d" + body
  values = features[r_idx, n_idx].astype(np.float64)
  return [fmt % (g, r, *row) for g, r, row in zip(
      grades[r_idx, n_idx].astype(np.int64).tolist(), r_idx.tolist(), values.tolist())]


def write_world(folder: Path, data: dict[str, Any], *, seed: int) -> WorldLayout:
  """Writes one simulated world as ``train.txt``/``vali.txt``/``test.txt`` into ``folder``
  (once: an existing complete folder is reused) and returns its feature layout."""
  from prerank_jax.data.simulator import simulate
  params = world_params(data)
  layout = layout_of(params)
  folder = Path(folder)
  done = folder / "world.json"
  if done.exists():
    return layout
  folder.mkdir(parents=True, exist_ok=True)
  splits = simulate(params, seed=seed)
  for split, filename, prefix in SPLIT_FILES:
    b = splits[split]
    n = b.valid.shape[1]
    context = np.broadcast_to(np.asarray(b.context)[:, None, :],
                              (b.valid.shape[0], n, b.context.shape[-1]))
    features = np.concatenate([context, np.asarray(b.items), np.asarray(b.cross)], axis=-1)
    lines = letor_lines(features, np.asarray(b.true_relevance), np.asarray(b.valid), prefix)
    (folder / filename).write_text("\n".join(lines) + "\n")
  done.write_text(json.dumps({"seed": int(seed), "params": params,
                              "layout": dataclasses.asdict(layout)}, indent=1))
  return layout


def use_letor_world(config: Any) -> None:
  """Points a config built on ``configs/letor.py`` at its world's LETOR files (written
  under ``config.workdir`` on first use) and carries the simulator's knobs over (see the
  module docstring). Needs ``config.workdir`` set."""
  if not config.workdir:
    raise ValueError("config.workdir: the LETOR files are written under it; set it first")
  data = dict(config.data)
  params = world_params(data)
  key = hashlib.sha256(json.dumps({"seed": int(config.seed), "params": params},
                                  sort_keys=True).encode()).hexdigest()[:10]
  folder = Path(config.workdir) / "letor_worlds" / f"world{config.seed}-{key}"
  layout = write_world(folder, data, seed=int(config.seed))
  config.dataset = "letor"
  config.source.manual_dir = str(folder)
  config.source.data_dir = str(Path(config.workdir) / "letor_worlds" / "tfds")
  config.source.student_features = layout.student
  config.source.teacher_features = ()
  config.source.list_size = int(data["list_size"])
  config.source.min_list_size = int(config.eval.k)
  config.source.num_exposed = int(data["num_exposed"])
  config.source.position_bias = float(data["position_bias"])
  config.source.logging_feature = layout.popularity if data["logging_popularity"] > 0 else 0


LETOR_NOTES = """## On LETOR files

The simulator's world of each world seed, written as LibSVM ranking files (the true grade
as label, context, item and cross features; no logs) and read through the LETOR loader
(`dataset=letor`, `configs/letor.py`: listwise `softmax` ground-truth loss, features
normalised with train statistics), which simulates the logs: a noisy logging ranker
(noise 1.0 on the grade) exposes its top E (`data.num_exposed`) with position bias
η = `data.position_bias`; `data.logging_popularity > 0` becomes `source.logging_feature`
= the popularity feature (the logs are ordered by popularity and noise alone). See
`experiments/letor_world.py`."""


def letor_experiment(exp: Experiment) -> Experiment:
  """``exp`` on LETOR files: the same methods and claims, the base config
  ``configs/letor.py``, each world's files written by :func:`write_world`."""
  def methods(smoke: bool) -> Sequence[Method]:
    out = exp.methods(smoke)
    if not smoke:
      out = [Method(m.name, {**{f"data.{k}": v for k, v in FULL_WORLD.items()},
                             **m.overrides}) for m in out]
    return out

  def configure(config: Any, method: Method) -> None:
    if exp.configure is not None:
      exp.configure(config, method)
    use_letor_world(config)

  def notes(frame) -> str:
    return "\n\n".join(filter(None, [LETOR_NOTES, exp.notes(frame) if exp.notes else ""]))

  return dataclasses.replace(
      exp, name=f"{exp.name}_letor", title=f"{exp.title} (LETOR files)", methods=methods,
      configure=configure, notes=notes, base="letor",
      world_seeds=FULL_WORLD_SEEDS.get(exp.name, DEFAULT_WORLD_SEEDS),
      replicates=FULL_REPLICATES)
