"""The cascade simulator as a TFDS dataset: ``prerank_simulator/{tiny,...,xlarge}``.

The records are exactly what :func:`prerank_jax.data.simulator.simulate` returns for the
same knobs and seed (tested), written once to
``<data_dir>/prerank_simulator/<config>/<VERSION>`` and reused. Use it when the data
should be a versioned artefact on disk: streaming with grain, a teacher-score cache next
to it, or a ``large``/``xlarge`` preset (lists of 1,000 and 5,000) bigger than device
memory (simulated and written in chunks, never held whole).

Config names: a preset name (``tiny``, ``small``, ``default``, ``large``, ``xlarge``) for
seed 0; other seeds are ``<preset>-seed<k>``; any other knob set is
``custom-<hash of knobs and seed>``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np

from prerank_jax.data import simulator as sim
from prerank_jax.data import tfds_base
from prerank_jax.fingerprint import fingerprint

VERSION = "1.2.0"

PRESETS: dict[str, dict[str, Any]] = dict(sim.PRESETS)  # the simulator's, one definition
SPLITS = ("train", "valid", "test")


def config_name(params: Mapping[str, Any], seed: int) -> str:
  """The builder config name of a knob set and seed (see the module docstring)."""
  params = sim.validate_simulator_params(params)
  for name, preset in PRESETS.items():
    if sim.validate_simulator_params(preset) == params:
      return name if seed == 0 else f"{name}-seed{seed}"
  return f"custom-{fingerprint({'params': params, 'seed': seed}, length=10)}"


def _chunks(rng: np.random.Generator, world: dict, p: dict, r: int):
  """``simulator._simulate_split`` chunk by chunk (the same chunking, so the same draws)."""
  n = p["list_size"]
  per_request = p["retrieval_pool"] * n * (p["latent_dim"] + 2) + n * (
      p["latent_dim"] + p["item_features"] + p["cross_features"] + 8)
  chunk = max(1, sim._CHUNK_ELEMENTS // per_request)
  for start in range(0, r, chunk):
    c = min(chunk, r - start)
    yield start, sim._simulate_chunk(rng, world, p, c)


def _builder_class():
  import tensorflow_datasets as tfds

  tfds_base.quiet_tfds()

  @dataclasses.dataclass
  class SimulatorConfig(tfds.core.BuilderConfig):
    params: dict = dataclasses.field(default_factory=dict)
    seed: int = 0

  class PrerankSimulator(tfds.core.GeneratorBasedBuilder):
    """The prerank-jax cascade simulator (see ``prerank_jax/data/simulator.py``)."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release: the batch schema, one request a record.",
                     "1.1.0": "exposure_propensity: Monte-Carlo exposure probabilities.",
                     "1.2.0": "large: lists of 1,000 (was 300); xlarge: lists of 5,000."}
    BUILDER_CONFIGS = [SimulatorConfig(name=name, params=dict(p), seed=0,
                                       description=f"the {name!r} simulator preset, seed 0")
                       for name, p in PRESETS.items()]

    def _shapes(self):
      p = sim.validate_simulator_params(self.builder_config.params)
      ids = p.get("ids", False)  # the ID world: user; item, author, category; behaviour
      return tfds_base.record_shapes(
          context=p["context_features"], list_size=p["list_size"],
          items=p["item_features"], cross=p["cross_features"], truth=True, propensity=True,
          exposure=True, context_ids=1 if ids else 0, item_ids=3 if ids else 0,
          sequence=(p["sequence_length"], 3) if ids else (0, 0))

    def _info(self):
      return tfds_base.dataset_info(
          self, self._shapes(), description=sim.__doc__,
          metadata={"params": self.builder_config.params, "seed": self.builder_config.seed})

    def _split_generators(self, dl_manager):
      self._states: dict[str, dict] = {}
      return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
      p = sim.validate_simulator_params(self.builder_config.params)
      sizes = {"train": p["num_requests"], "valid": p["num_eval_requests"],
               "test": p["num_eval_requests"]}
      rng = np.random.default_rng(self.builder_config.seed)
      world = sim._make_world(rng, p)
      position = SPLITS.index(split)
      if position and SPLITS[position - 1] in self._states:
        rng.bit_generator.state = self._states[SPLITS[position - 1]]
      else:  # replay the earlier splits (only when TFDS generates out of order)
        for earlier in SPLITS[:position]:
          for _ in _chunks(rng, world, p, sizes[earlier]):
            pass
      shapes = self._shapes()
      for start, chunk in _chunks(rng, world, p, sizes[split]):
        for i in range(len(chunk["valid"])):
          record = {k: v[i] for k, v in chunk.items()}
          record["request_id"] = f"{split}-{start + i}"
          yield start + i, tfds_base.check_record(record, shapes)
      self._states[split] = rng.bit_generator.state

  return PrerankSimulator, SimulatorConfig


# The builder classes, defined on first use (TFDS is imported lazily).
builder_classes = functools.cache(_builder_class)


def make_builder(params: Mapping[str, Any], *, seed: int, data_dir: str = ""):
  """The builder for a knob set and seed; ``prepare`` it, then read its splits."""
  cls, config_cls = builder_classes()
  name = config_name(params, seed)
  known = {c.name for c in cls.BUILDER_CONFIGS}
  config = name if name in known else config_cls(
      name=name, params=sim.validate_simulator_params(params), seed=seed,
      description="custom simulator knobs")
  return cls(config=config, data_dir=str(tfds_base.default_data_dir(data_dir)),
             file_format="array_record")


def load(params: Mapping[str, Any], *, seed: int, data_dir: str = "",
         show: bool = False, lazy_train: bool = False) -> tuple[dict, Any]:
  """Prepares (once) and reads ``{"train", "valid", "test"} → Batch``; also returns the
  builder (its ``info.full_name`` identifies the data)."""
  builder = tfds_base.prepare(make_builder(params, seed=seed, data_dir=data_dir),
                              missing=None, show=show)
  return tfds_base.read_splits(builder, SPLITS, lazy_train=lazy_train), builder
