"""The README stays an entry point and the documentation site's sources stay buildable.

Fast checks (no Sphinx build: `.ci/run` builds the site with warnings as errors): the
README's length, its links and commands, every page's title, the toctrees' globs and the
docstring conversion the site's extension applies.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

sys.path.insert(0, str(DOCS / "_ext"))
import prerank_docs  # noqa: E402  (docs/_ext/prerank_docs.py)


def test_readme_is_at_most_150_lines():
  assert len(README.read_text().splitlines()) <= 150


def test_readme_links_point_at_existing_files():
  links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
  local = [link for link in links if not link.startswith("http")]
  assert local, "the README links into the docs"
  missing = [link for link in local if not (ROOT / link).exists()]
  assert not missing, missing


def test_readme_commands_are_the_ci_commands():
  readme = README.read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  assert '-e ".[test,docs]"' in ci
  assert ".venv/bin/python -m pytest -q" in readme and "-m pytest -q" in ci
  sphinx = re.search(r"-m sphinx -W --keep-going -j 2 .*-b html docs docs/_build/html", ci)
  assert sphinx and "-m sphinx -W --keep-going -j 2 -b html docs docs/_build/html" in readme
  assert ".venv/bin/prerank-jax quickstart --config.name=first" in readme
  assert "--config=configs/quickstart.py:smoke" in readme


def test_readme_shows_no_placeholder_and_no_history():
  readme = README.read_text()
  assert "SMOKE_TABLE" not in readme
  assert not re.search(r"issue \d+|git show", readme)


def _pages():
  return sorted(p for p in DOCS.rglob("*.md")
                if not {"_build", "_generated"} & set(p.relative_to(DOCS).parts))


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_page_starts_with_a_title(page):
  assert page.read_text().startswith("# "), f"{page} must start with a '# Title' line"


def test_the_index_picks_up_every_page_of_the_shared_folders():
  index = (DOCS / "index.md").read_text()
  for folder in ("guides", "reference", "research", "developer"):
    assert f"{folder}/*" in index, f"docs/index.md: a glob toctree for {folder}/"
  for page in ("start/install", "start/quickstart", "start/concepts", "api/index",
               "benchmarks", "changelog"):
    assert page in index


def test_docstring_conventions_become_valid_rst():
  lines = [
      "Listwise KD.",
      "",
      "Definition:",
      "  p = softmax(t / T)",
      "      (aligned continuation)",
      "Pair weights:",
      "  ``uniform``: 1",
      "Recall is |S ∩ T| / |T|; ``a | b`` stays literal.",
      "",
      "Args:",
      "  x: ``[..., N]`` scores.",
      "",
      "=====  =====",
      "name   role",
      "=====  =====",
      "``mlp_heavy_no_cross`` ablation",
      "=====  =====",
  ]
  out = prerank_docs.rst_docstring(lines)
  assert "Definition::" in out and "Pair weights::" in out
  assert "Recall is \\|S ∩ T\\| / \\|T\\|; ``a | b`` stays literal." in out
  assert "Args:" in out  # napoleon's sections are left to napoleon
  table = out.index("  =====  =====")
  assert out[table - 2] == "::"  # the table is a literal block
  # A literal block always ends with a blank line before less-indented text.
  assert out[out.index("Pair weights::") - 1] == ""


def test_generated_reference_covers_every_field_and_command(tmp_path):
  from prerank_jax import cli

  (tmp_path / "_generated").mkdir()
  prerank_docs.generate(tmp_path)
  fields = (tmp_path / "_generated" / "config_fields.md").read_text()
  assert "| `sweep.temperature` | `(1, 4)` |" in fields
  assert "(not documented)" not in fields
  commands = (tmp_path / "_generated" / "cli_help.md").read_text()
  for command in cli.COMMANDS:
    assert f"## `prerank-jax {command}`" in commands


def test_the_quickstart_page_shows_what_the_kept_quickstart_run_printed():
  """docs/start/quickstart.md's printed block is the output of the kept quickstart run
  (benchmarks/results/quickstart/run.json, written by `python benchmarks/quickstart_run.py`),
  and that run's results.csv rebuilds the table it printed."""
  import json

  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quickstart_run

  record = json.loads((quickstart_run.RESULTS / "run.json").read_text())
  page = (DOCS / "start" / "quickstart.md").read_text()
  blocks = re.findall(r"```\n(plan:.*?)\n```", page, flags=re.S)
  assert blocks == [quickstart_run.docs_output(record["stdout"])], (
      "regenerate the block from benchmarks/results/quickstart/run.json")
  assert quickstart_run.terminal_table(quickstart_run.RESULTS / "results.csv") in record["stdout"]


def _readme_first_run_table() -> str:
  """The table block of the README's "A first run: the quickstart" section."""
  readme = README.read_text().split("## A first run: the quickstart")[1]
  return re.search(r"```\n(model .*?)\n```", readme, flags=re.S).group(1)


def test_the_readme_shows_the_kept_quickstart_run_and_its_measured_times():
  """The README's first-run table is the kept run's (benchmarks/results/quickstart/), and the
  cold and warm times it quotes are that run.json's medians, rounded."""
  import json

  sys.path.insert(0, str(ROOT / "benchmarks"))
  import quickstart_run

  record = json.loads((quickstart_run.RESULTS / "run.json").read_text())
  assert _readme_first_run_table() == quickstart_run.terminal_table(
      quickstart_run.RESULTS / "results.csv")
  runs = record["runs"]
  readme = README.read_text()
  assert (f"about {runs['cold']['wall_s']:.0f} s from an\nempty compilation cache and "
          f"{runs['warm']['wall_s']:.0f} s with a warm one") in readme


@pytest.mark.slow
def test_the_quickstart_prints_the_readmes_table_today(tmp_path):
  """The README's command, run by this code (in a subprocess, as a user runs it), prints the
  README's table: every printed value to its 4 decimals, give or take the last one. It
  compiles at XLA's default optimisation level, as the CLI does (the tests' level 0 moves
  the trained students by up to 3e-3 in ndcg@10 after 5 epochs)."""
  import os
  import subprocess

  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "xla_backend_optimization_level" not in f)
  cmd = [sys.executable, "-m", "prerank_jax.cli", "quickstart", f"--config.workdir={tmp_path}",
         "--config.name=first", "--config.progress=False", "--config.wandb.mode=disabled"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": flags})
  assert out.returncode == 0, out.stderr[-2000:]
  block = _readme_first_run_table().splitlines()
  header = re.split(r"\s{2,}", block[0].strip())
  shown = {cells[0]: dict(zip(header[1:], cells[1:]))
           for cells in (re.split(r"\s{2,}", line.strip()) for line in block[2:])}
  with open(tmp_path / "first" / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["model"] for r in rows] == list(shown)
  checked = 0
  for row in rows:
    for column, printed in shown[row["model"]].items():
      if re.fullmatch(r"-?[0-9]\.[0-9]{4}", printed):
        assert abs(float(row[column]) - float(printed)) <= 1.01e-4, (row["model"], column)
        checked += 1
  assert checked >= 8 * 5
