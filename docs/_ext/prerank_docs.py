"""Sphinx extension: pages generated from the code at build time, so they cannot drift.

Writes, before Sphinx reads any page (``builder-inited``):
  docs/_generated/config_fields.md   every field of configs/quickstart.py: default, range,
                                     meaning (prerank_jax.host.config_reference)
  docs/_generated/config_files.md    per configs/*.py file, the fields it changes
  docs/_generated/cli_help.md        ``prerank-jax <command> --help`` of every command
The reference pages include them with MyST's ``{include}`` directive.
"""

from __future__ import annotations

import re
from pathlib import Path



def _show(value) -> str:
  from prerank_jax.host.config_reference import _show as show
  return show(value)


def generate(docs: Path) -> None:
  """Writes the generated Markdown files under ``docs/_generated/``."""
  from prerank_jax import cli
  from prerank_jax.config_files import REPO_CONFIGS, repo_config
  from prerank_jax.host.config_reference import describe_fields, flatten, format_markdown

  out = docs / "_generated"
  out.mkdir(exist_ok=True)
  base = repo_config("quickstart")
  rows = describe_fields(base)
  missing = sorted({r.field for p in REPO_CONFIGS.glob("*.py")
                    for r in describe_fields(repo_config(p.stem)) if not r.documented})
  if missing:
    raise RuntimeError(f"config fields without a reference entry: {missing}; add them to "
                       "prerank_jax/host/config_reference.py::FIELDS")
  _write(out / "config_fields.md", format_markdown(rows))
  # Fields that only other config files add (e.g. the recflow source fields, the ID world).
  extra = {}
  for p in sorted(REPO_CONFIGS.glob("*.py")):
    for r in describe_fields(repo_config(p.stem)):
      if r.field not in dict(flatten(base)) and r.field not in extra:
        extra[r.field] = (p.stem, r)
  lines = ["| field | set by | default there | allowed | meaning |", "|---|---|---|---|---|"]
  lines += [f"| `{f}` | `configs/{stem}.py` | `{_show(r.default)}` | {_md(r.allowed)} | "
            f"{_md(r.meaning)} |" for f, (stem, r) in extra.items()]
  _write(out / "config_extra.md", "\n".join(lines) + "\n")

  base_values = dict(flatten(base))
  lines = []
  for name in sorted(p.stem for p in REPO_CONFIGS.glob("*.py") if p.stem != "quickstart"):
    config = repo_config(name)
    changed = [(f, v) for f, v in flatten(config) if _show(base_values.get(f)) != _show(v)]
    lines += [f"### `configs/{name}.py`", "", "| field | value |", "|---|---|"]
    lines += [f"| `{f}` | `{_show(v)}` |".replace("*", "\\*") for f, v in changed]
    lines.append("")
  smoke = dict(flatten(repo_config("quickstart", "smoke")))
  lines += ["### `configs/quickstart.py:smoke`", "", "| field | value |", "|---|---|"]
  lines += [f"| `{f}` | `{_show(v)}` |" for f, v in smoke.items()
            if _show(base_values.get(f)) != _show(v)]
  _write(out / "config_files.md", "\n".join(lines) + "\n")

  parts = []
  for command in cli.COMMANDS:
    parts += [f"## `prerank-jax {command}`", "", "```text", cli.command_help(command).rstrip(),
              "```", ""]
  _write(out / "cli_help.md", "\n".join(parts))


def _md(text: str) -> str:
  return text.replace("|", "\\|").replace("*", "\\*")


def _write(path: Path, text: str) -> None:
  if not path.exists() or path.read_text() != text:  # unchanged files keep their mtime
    path.write_text(text)


_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_DEFINITION = re.compile(r"^(\s*)(Definitions?|Definition \(.*\)):\s*$")


_NAPOLEON_SECTIONS = {"args", "arguments", "parameters", "returns", "return", "raises",
                      "yields", "yield", "attributes", "example", "examples", "note",
                      "notes", "warning", "warnings", "see also", "references", "todo",
                      "keyword args", "keyword arguments", "other parameters", "methods"}


def _block_header(lines: list[str], i: int):
  """A line ending in ``:`` whose next line is indented deeper: a block of aligned plain
  text (formulas, a small table) that is not one of napoleon's sections."""
  line = lines[i]
  stripped = line.strip()
  if (not stripped.endswith(":") or stripped.endswith("::") or i + 1 >= len(lines)
      or stripped[:-1].strip().lower() in _NAPOLEON_SECTIONS or stripped.startswith(".. ")):
    return None
  nxt = lines[i + 1]
  indent = len(line) - len(line.lstrip())
  if not nxt.strip() or len(nxt) - len(nxt.lstrip()) <= indent:
    return None
  return re.match(r"^(\s*)(.*):\s*$", line)


def _escape_bars(line: str) -> str:
  """``|x|`` (a cardinality or absolute value in a docstring) is a substitution in
  reStructuredText: escape the bars outside inline literals."""
  parts = line.split("``")
  return "``".join(p.replace("|", "\\|") if i % 2 == 0 else p for i, p in enumerate(parts))


def rst_docstring(lines: list[str]) -> list[str]:
  """The docstrings' plain-text conventions, made valid reStructuredText (in place order).

  - a ``Definition:`` section (Rax's convention: formulas in aligned plain text) becomes a
    literal block, so its alignment and symbols render as written;
  - a simple table (``=== ===`` borders) becomes a literal block, so a cell wider than its
    border renders instead of failing;
  - ``|`` outside literals is escaped (``|S|`` is not a substitution).
  """
  out: list[str] = []
  i = 0
  while i < len(lines):
    line = lines[i]
    m = _DEFINITION.match(line) or _block_header(lines, i)
    if m or _TABLE_BORDER.match(line):
      indent = len(line) - len(line.lstrip())
      if m:
        out += [f"{m.group(1)}{m.group(2)}::", ""]
        i += 1
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent):
          out.append(lines[i])
          i += 1
        out.append("")  # a literal block ends with a blank line
      else:
        out += [" " * indent + "::", ""]
        borders = 0
        while i < len(lines) and borders < 3:
          borders += bool(_TABLE_BORDER.match(lines[i]))
          out.append("  " + lines[i])
          i += 1
        out.append("")
      continue
    out.append(_escape_bars(line))
    i += 1
  return out


def _on_docstring(app, what, name, obj, options, lines: list[str]) -> None:
  lines[:] = rst_docstring(lines)


def _on_builder_inited(app) -> None:
  generate(Path(app.srcdir))


def setup(app):
  app.connect("builder-inited", _on_builder_inited)
  # Before napoleon (priority 500), which then parses Args/Returns/Raises as usual.
  app.connect("autodoc-process-docstring", _on_docstring, priority=400)
  return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
