"""What a benchmark's raw results record about the machine and the moment they were taken."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
  info = Path("/proc/cpuinfo")
  if info.exists():
    for line in info.read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return platform.processor() or "unknown"


def load_average() -> list[float]:
  """The 1-, 5- and 15-minute load averages (``[]`` where the OS has none)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def machine() -> dict[str, Any]:
  """CPU model, core count, OS, Python and JAX versions, UTC date and the load average
  (a shared machine's load inflates every wall time: the load says how much)."""
  import jax
  return {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
          "python": platform.python_version(), "jax": jax.__version__,
          "device": jax.devices()[0].device_kind,
          "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
          "load_average": load_average()}


def describe(m: dict[str, Any]) -> str:
  """One line: ``<cpu>, <cores> cores, <date> UTC, load <1-min load>``."""
  load = m.get("load_average") or ["?"]
  return f"{m['cpu']}, {m['cores']} cores, {m['date_utc']} UTC, load average {load[0]}"
