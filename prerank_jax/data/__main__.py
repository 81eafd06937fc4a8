"""Prepares a dataset once: ``python -m prerank_jax.data --config=configs/<x>.py [...]``.

Reads the raw files named by the config (``config.dataset``, ``config.source``), writes the
TFDS dataset as ArrayRecord under ``source.data_dir`` and prints each split's size. Runs
reuse it; running this again is a no-op. Nothing is downloaded.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
  from absl import flags
  from ml_collections import config_flags

  from prerank_jax.config import ConfigError, validate_config
  from prerank_jax.data.registry import DatasetMissingError, load_dataset
  from prerank_jax.data.tfds_base import RecordSplit

  argv = list(sys.argv if argv is None else argv)
  paths = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")]
  if not paths:
    print(__doc__, file=sys.stderr)
    return 2
  flag_values = flags.FlagValues()  # its own, so main() can run twice in one process
  # With the file as the default (as in prerank_jax/cli.py), the --config.* overrides apply.
  config_flags.DEFINE_config_file("config", paths[-1], "a configs/*.py file, optionally :arg",
                                  flag_values=flag_values, lock_config=True)
  saved, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
  try:
    flag_values(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    print(f"prerank_jax.data: bad flag or config override: {e}", file=sys.stderr)
    return 2
  finally:
    sys.argv = saved
  config = flag_values.config
  try:
    validate_config(config)
    loaded = load_dataset(config, show=True)
  except (ConfigError, DatasetMissingError, ValueError) as e:
    print(f"prerank_jax.data: {e}", file=sys.stderr)
    return 2
  where = loaded.builder.data_path if loaded.builder is not None else "(in memory)"
  print(f"{config.dataset}: {loaded.identity} at {where}")
  for name, batch in loaded.splits.items():
    head = batch.take(slice(0, 1))
    if isinstance(batch, RecordSplit):  # left on disk (streaming.read_from="records")
      exposed = sum(int(block.exposed.sum()) for _, block in batch.blocks())
    else:
      exposed = int(batch.exposed.sum())
    print(f"  {name}: {batch.num_requests} requests × N={batch.list_size}; context "
          f"{head.context.shape[-1]}, items {head.items.shape[-1]}, cross "
          f"{head.cross.shape[-1]} features; {int(batch.valid.sum())} candidates, "
          f"{exposed} exposed")
  return 0


if __name__ == "__main__":
  sys.exit(main())
