"""Long lists: the ``large`` (1,000 candidates a list) or ``xlarge`` (5,000) simulator preset,
trained end to end through the streaming input pipeline (``input_pipeline="grain"``: train
batches are fed from the host, only the validation split sits on the device).

  prerank-jax sweep --config=configs/large_lists.py:large
  prerank-jax sweep --config=configs/large_lists.py:xlarge
  python benchmarks/large_lists.py     # both, with fewer requests, peak memory recorded

Expected runtime: the full presets (20M train candidates each) are meant for an
accelerator. On a 2-core CPU, with the request counts cut as in the benchmark (1,000
train requests of 1,000 candidates; 200 of 5,000), each run takes a few minutes and peaks
at a few GB of resident memory: README "Sweeps at scale" has the measured figures.
Expected result: every distilled student beats the random reference, as in the quickstart.
``:smoke`` runs the quickstart's tiny lists through the same streaming path in seconds.
"""

from __future__ import annotations

from prerank_jax.config_files import quickstart_based
from prerank_jax.data.simulator import PRESETS


def get_config(arg: str | None = None):
  """``arg``: comma-separated flags out of ``large`` (the default), ``xlarge`` and
  ``smoke`` (the quickstart's smoke sizes and tiny lists, same pipeline)."""
  config, flags = quickstart_based(__file__, arg, ("large", "xlarge", "smoke"))
  if {"large", "xlarge"} <= flags:
    raise ValueError("configs/large_lists.py: choose one of 'large' and 'xlarge'")
  size = "xlarge" if "xlarge" in flags else "large"
  config.name = f"lists_{size}"
  config.input_pipeline = "grain"
  # Two distilled points and the ground-truth-only student: the cost is in the lists.
  config.sweep.temperature = (1.0, 4.0)
  config.sweep.alpha = (0.5,)
  if "smoke" not in flags:
    config.data.update(PRESETS[size])
    config.teacher.num_epochs = 4
    config.student.num_epochs = 6
    config.checkpoint_every = 2
  return config
