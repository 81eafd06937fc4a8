"""What a user reads when a dataset on disk is missing: what to download, its licence,
where to put it and the exact command that prepares it. Nothing is downloaded.

The loaders (``letor``, ``movielens``, ``tabular``) call :func:`missing_message`; this module
imports no loader, so none of them imports the registry that dispatches to it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from prerank_jax.data.sources import CONFIG_FILES, CONFIG_SOURCES
from prerank_jax.data.tfds_base import default_data_dir

__all__ = ["missing_message", "prepare_command"]


def prepare_command(config, *, kind: str) -> str:
  """The exact command that prepares ``config``'s dataset (a loader of ``kind``): the
  kind's config file plus every ``config.source`` field that differs from that file's
  value (:data:`~prerank_jax.data.sources.CONFIG_SOURCES`)."""
  config_file = CONFIG_FILES[kind]
  args = ["python", "-m", "prerank_jax.data", f"--config={config_file}",
          f"--config.dataset={config.dataset}"]
  if config.seed != 0:  # the seed of the simulated logging and of carved splits
    args.append(f"--config.seed={config.seed}")
  defaults = CONFIG_SOURCES[config_file]
  for key, value in config.source.items():
    default = defaults.get(key)
    if hasattr(value, "items"):  # a nested field (source.teacher_score_file): per sub-key
      pairs = [(f"{key}.{k}", v, (default or {}).get(k)) for k, v in value.items()]
    else:
      pairs = [(key, value, default if key in defaults else object())]
    for name, value, default in pairs:
      if isinstance(value, (tuple, list)):
        if isinstance(default, (tuple, list)) and tuple(value) == tuple(default):
          continue
        value = "(" + ",".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
      elif value == default:
        continue
      args.append(f"--config.source.{name}={value}")
  return " ".join(shlex.quote(a) for a in args)


def missing_message(config, *, kind: str, what: str, licence: str, manual_dir: Path,
                    where: list[tuple[str, str]]) -> str:
  """The instructions of a :class:`~prerank_jax.data.tfds_base.DatasetMissingError` (see
  its docstring), from a loader of ``kind``."""
  data_dir = default_data_dir(config.source.data_dir)
  lines = [f"dataset {config.dataset!r} is not prepared in {data_dir} and its raw files are "
           f"not all in {manual_dir}:"]
  lines += [f"  {path}  [{status}]" for path, status in where]
  lines += [
      f"What to download: {what}.",
      f"Licence: {licence}",
      f"Where to put it: extract it into {manual_dir} so that the files above exist (or "
      "point --config.source.manual_dir at the folder that holds them).",
      "Then prepare it once (a run also prepares it on first use):",
      f"  {prepare_command(config, kind=kind)}",
      "Nothing is downloaded automatically.",
  ]
  return "\n".join(lines)
