"""Datasets by name: ``config.dataset`` → a loader of ``{"train", "valid", "test"} → Batch``.

=========================  ==============================================================
name                       data
=========================  ==============================================================
``simulator``              the cascade simulator in memory (``config.data``, the default)
``simulator_tfds``         the same, as the TFDS dataset ``prerank_simulator`` on disk
                           (``source.preset`` or ``config.data``)
``letor``                  your LibSVM ranking files (``label qid:Q f:v ...``)
``mslr_web/10k_fold1`` …   TFDS catalog names of LETOR datasets (MSLR-WEB10K/30K folds
``istella/{main,s,x}``     1–5, Istella, Yahoo C14) read from extracted files
``yahoo_ltrc/{set1,set2}``
``movielens``              GroupLens ml-100k or ml-1m files (``movielens/100k``,
                           ``movielens/1m`` pick one; ``-ratings`` suffixes accepted)
``tabular``                your Parquet or CSV table (the file's suffix decides how it
                           is read); ``parquet`` and ``csv`` are aliases of ``tabular``:
                           the same loader, builder and prepared dataset
``recflow``                RecFlow's folders, RecFlow's coarse-ranking or LCRON's protocol
                           (``configs/recflow.py``)
=========================  ==============================================================

Every dataset but ``simulator`` is a TFDS builder written as ArrayRecord under
``source.data_dir`` on first use and reused afterwards; ``python -m prerank_jax.data``
prepares one explicitly. Their fields live in ``config.source`` (see
``configs/quickstart.py``, values in ``prerank_jax/data/sources.py``) and are checked by
:func:`prerank_jax.data.validation.validate_data_config`; a missing dataset's message is
made in ``prerank_jax/data/messages.py``. This module only dispatches.

This module imports neither TFDS nor grain; loaders import them when called.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from prerank_jax.batch import Batch
from prerank_jax.data import letor as _letor_names  # light: numpy only
from prerank_jax.data.ids import SplitIds, check_ids
from prerank_jax.data.sources import CONFIG_FILES, CONFIG_SOURCES
from prerank_jax.data import tfds_base
from prerank_jax.data.tfds_base import DatasetMissingError

__all__ = ["ALIASES", "DATASETS", "DatasetMissingError", "load_dataset", "load_splits"]


class DatasetSpec(NamedTuple):
  kind: str            # simulator | simulator_tfds | letor | movielens | tabular
  description: str

  @property
  def config_file(self) -> str:
    """The ``configs/`` file that sets the dataset up."""
    return CONFIG_FILES[self.kind]

  @property
  def source(self) -> Mapping[str, Any]:
    """``config.source`` as ``config_file`` sets it
    (:data:`~prerank_jax.data.sources.CONFIG_SOURCES`): what
    :func:`~prerank_jax.data.messages.prepare_command` compares a config against."""
    return CONFIG_SOURCES[self.config_file]


DATASETS: dict[str, DatasetSpec] = {
    "simulator": DatasetSpec("simulator", "the cascade simulator, in memory"),
    "simulator_tfds": DatasetSpec("simulator_tfds",
                                  "the cascade simulator as a TFDS dataset on disk"),
    "letor": DatasetSpec("letor", "LibSVM ranking files"),
    **{name: DatasetSpec("letor", f"the {name} LETOR files")
       for name in _letor_names.CATALOG},
    "movielens": DatasetSpec("movielens", "MovieLens (auto)"),
    **{f"movielens/{v}{suffix}": DatasetSpec("movielens", f"MovieLens ml-{v}")
       for v in ("100k", "1m") for suffix in ("", "-ratings")},
    "tabular": DatasetSpec("tabular", "a Parquet or CSV table"),
    "recflow": DatasetSpec("recflow", "RecFlow's files (the coarse or LCRON protocol)"),
}
#: Other names of a dataset: the same spec (loader, builder, prepared files) as the name
#: they stand for. ``tabular`` reads Parquet and CSV alike (by the file's suffix).
ALIASES: dict[str, str] = {"parquet": "tabular", "csv": "tabular"}
DATASETS.update({alias: DATASETS[name] for alias, name in ALIASES.items()})


class Loaded(NamedTuple):
  splits: dict[str, Batch]
  builder: Any        # the prepared TFDS builder, or None for the in-memory simulator
  identity: str       # dataset name/config/version (keys the teacher-score cache)
  # The user's request/candidate IDs per split (prerank_jax/data/ids.py), or None where
  # the dataset has none (the simulator): outputs then use internal indices.
  ids: dict[str, SplitIds] | None = None


def _module(kind: str):
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds as module
  elif kind == "letor":
    from prerank_jax.data import letor as module
  elif kind == "movielens":
    from prerank_jax.data import movielens as module
  elif kind == "tabular":
    from prerank_jax.data import tabular as module
  elif kind == "recflow":
    from prerank_jax.data import recflow as module
  else:
    raise ValueError(f"dataset kind {kind!r} has no TFDS builder")
  return module


def make_builder(config) -> tuple[Any, str | None]:
  """``(builder, missing)`` of a TFDS-backed dataset without preparing it (milliseconds,
  except that LETOR parses its raw files when they are not prepared yet)."""
  kind = DATASETS[config.dataset].kind
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds

    params, seed = simulator_params(config)
    return simulator_tfds.make_builder(params, seed=seed, data_dir=config.source.data_dir), None
  return _module(kind).make_builder(config)


def simulator_params(config) -> tuple[dict, int]:
  from prerank_jax.data import simulator_tfds

  preset = config.source.preset
  return (dict(simulator_tfds.PRESETS[preset]) if preset else config.data.to_dict()), int(
      config.seed)


def load_dataset(config, *, show: bool = False) -> Loaded:
  """Loads (preparing once when needed) the splits named by ``config.dataset``.

  Raises:
    DatasetMissingError: at once (no download attempt), with what to download, where to
      put it and the command that prepares it.
  """
  if config.dataset not in DATASETS:
    raise ValueError(f"dataset: unknown dataset {config.dataset!r}; valid names are "
                     f"{sorted(DATASETS)}")
  kind = DATASETS[config.dataset].kind
  # streaming.read_from="records": the train split stays in its ArrayRecord files
  # (a tfds_base.RecordSplit), read a block or a training step at a time.
  lazy_train = tfds_base.train_from_records(config)
  if kind == "simulator":
    from prerank_jax.data.simulator import simulate

    return Loaded(simulate(config.data, seed=config.seed), None,
                  f"simulator/{config.seed}")
  if kind == "simulator_tfds":
    from prerank_jax.data import simulator_tfds

    params, seed = simulator_params(config)
    splits, builder = simulator_tfds.load(params, seed=seed, data_dir=config.source.data_dir,
                                          show=show, lazy_train=lazy_train)
    return Loaded(splits, builder, builder.info.full_name)
  module = _module(kind)
  splits, builder = module.load(config, show=show, lazy_train=lazy_train)
  ids = None
  if hasattr(module, "split_ids"):  # tabular, LETOR: the user's request/candidate IDs
    # (not of a train split left on disk: outputs then carry no train scores)
    ids = {name: check_ids(module.split_ids(config, builder, name),
                           num_requests=batch.num_requests, list_size=batch.list_size,
                           name=name)
           for name, batch in splits.items() if not isinstance(batch, tfds_base.RecordSplit)}
  return Loaded(splits, builder, builder.info.full_name, ids)


def load_splits(config) -> dict[str, Batch]:
  """``{"train", "valid", "test"} → Batch`` of ``config.dataset`` (not yet validated)."""
  return load_dataset(config).splits
