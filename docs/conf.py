"""Sphinx configuration of the prerank-jax documentation site.

Build (what ``.ci/run`` runs, warnings as errors):
  .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

Generated at build time, never edited by hand (both folders are git-ignored):
  docs/_generated/   config fields and CLI help (prerank_jax.host.config_reference, cli)
  docs/notebooks/    copies of notebooks/*.ipynb, executed by myst-nb
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

project = "prerank-jax"
author = "prerank-jax authors"
copyright = "2026, prerank-jax authors"

extensions = [
    "myst_nb",                 # MyST Markdown pages and executed notebooks (also loads myst_parser)
    "sphinx.ext.autodoc",      # the API pages come from the docstrings
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",     # Google-style Args/Returns/Raises sections
    "sphinx.ext.mathjax",
    "prerank_docs",            # docs/_ext/prerank_docs.py: generated config/CLI reference
]

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]  # pages moved from the README start at ## levels in places

source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]

# Autodoc: signatures without type annotations (the docstrings say the shapes); members in
# source order. Not nitpicky: jax/flax/ml_collections types have no local inventory (there is no
# network for intersphinx on the build machines), so every annotation would be a broken reference.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
autosummary_generate = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each member

# Notebooks: executed during the build (they make their own smoke runs in temporary
# directories), cached by jupyter-cache between builds on one machine.
nb_execution_mode = os.environ.get("PRERANK_DOCS_NB_EXECUTION", "cache")
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
# The notebooks' kernels inherit this: their smoke runs compile many of the same programs
# (the smoke teacher, the evaluation), so each compiles once per build, not once per notebook.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(DOCS / "_build" / ".xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

html_theme = "sphinx_book_theme"
html_title = "prerank-jax"
html_theme_options = {"show_toc_level": 2}


def _copy_notebooks() -> None:
  """notebooks/*.ipynb → docs/notebooks/ (the source of truth stays in notebooks/)."""
  target = DOCS / "notebooks"
  target.mkdir(exist_ok=True)
  for old in target.glob("*.ipynb"):
    if not (ROOT / "notebooks" / old.name).exists():
      old.unlink()
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    dest = target / nb.name
    if not dest.exists() or dest.read_bytes() != nb.read_bytes():
      shutil.copyfile(nb, dest)


_copy_notebooks()
