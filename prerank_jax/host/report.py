"""Result tables: terminal text, CSV and Markdown, written atomically into a run dir."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

Row = dict[str, Any]


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.4g}"
  return str(value)


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
  """An aligned plain-text table (the terminal view)."""
  cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  line = lambda xs: "  ".join(x.rjust(w) if i else x.ljust(w)
                              for i, (x, w) in enumerate(zip(xs, widths)))
  return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def markdown_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
  out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
  return "\n".join(out)


def csv_text(rows: Sequence[Row], columns: Sequence[str]) -> str:
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


def write_run_dir(run_dir: Path, files: dict[str, str], *, overwrite: bool) -> None:
  """Writes ``files`` (name → text) as a complete run directory, atomically.

  Everything is written to a sibling temporary directory first and renamed into place
  only when complete, so a crash never leaves a half-written or garbage run directory,
  and an existing run is replaced only when ``overwrite`` is set.
  """
  run_dir = Path(run_dir)
  if run_dir.exists() and not overwrite:
    raise FileExistsError(f"{run_dir} exists; choose another --config.name or pass "
                          "--config.overwrite=True")
  run_dir.parent.mkdir(parents=True, exist_ok=True)
  tmp = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  for name, text in files.items():
    (tmp / name).write_text(text)
  if run_dir.exists():
    old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
    os.replace(run_dir, old)
    os.replace(tmp, run_dir)
    shutil.rmtree(old)
  else:
    os.replace(tmp, run_dir)


def run_files(rows: Sequence[Row], columns: Sequence[str], *, config_json: str,
              history: dict[str, Any], header: str) -> dict[str, str]:
  """The files of a finished run: results.csv, results.md, config.json, history.json."""
  md = f"{header}\n\n{markdown_table(rows, columns)}\n"
  return {
      "results.csv": csv_text(rows, columns),
      "results.md": md,
      "config.json": config_json,
      "history.json": json.dumps(history, indent=1),
  }
