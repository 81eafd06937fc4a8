"""Scores files with exported students in a fresh process, for tests/host/test_artifact.py.

  python tests/host/score_fresh_process.py ARTIFACT INPUT OUTPUT [--keep COL] [ARTIFACT INPUT OUTPUT ...]

Scores each (artifact, input, output) triple with :func:`prerank_jax.host.scoring.score_file`
and prints one JSON line: the rows scored per output and which training-side modules the
process imported (none should be: loading an artifact needs jax and the project's small
loader, not flax, optax, orbax, TFDS, grain or the training code).
"""

from __future__ import annotations

import json
import sys

TRAINING_SIDE = ("flax", "optax", "orbax", "tensorflow_datasets", "grain", "ml_collections",
                 "prerank_jax.train", "prerank_jax.models", "prerank_jax.losses",
                 "prerank_jax.data.tabular", "prerank_jax.host.runner",
                 "prerank_jax.host.checkpoint")


def main(argv: list[str]) -> int:
  from prerank_jax.host.scoring import score_file

  keep = []
  if "--keep" in argv:
    i = argv.index("--keep")
    keep, argv = [argv[i + 1]], argv[:i] + argv[i + 2:]
  if len(argv) % 3:
    print(__doc__, file=sys.stderr)
    return 2
  rows = {}
  for artifact, source, output in zip(argv[0::3], argv[1::3], argv[2::3]):
    rows[output] = score_file(artifact, source, output, keep=keep).rows
  imported = sorted(m for m in sys.modules
                    if any(m == t or m.startswith(t + ".") for t in TRAINING_SIDE))
  print(json.dumps({"rows": rows, "training_side_modules": imported}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
