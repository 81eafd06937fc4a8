"""The package's imports run one way: each floor imports only from its own floor or below.

Floors (README, "Package layout"): 0 the pure core (batch, reduce, losses, metrics, models,
data sources and the leaf helpers) → 1 config, training and evaluation → 2 the host
(runner, checkpoints, tracking, reports, analysis) → 3 the command lines. Every import
counts, including one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prerank_jax"

# Longest matching prefix wins; every module must match one (checked below).
FLOORS = {
    "prerank_jax": 0,                 # the package's __init__ (re-exports batch)
    "prerank_jax.batch": 0,
    "prerank_jax.reduce": 0,
    "prerank_jax.checks": 0,          # field validation used by every floor
    "prerank_jax.config_files": 0,    # loads configs/*.py; imports nothing of the package
    "prerank_jax.fingerprint": 0,     # the one short hash of identities and dataset names
    "prerank_jax.programs": 0,        # jax.jit with a host-installed store of traced programs
    "prerank_jax.losses": 0,
    "prerank_jax.metrics": 0,
    "prerank_jax.models": 0,
    "prerank_jax.data": 0,
    "prerank_jax.config": 1,
    "prerank_jax.evaluate": 1,
    "prerank_jax.train": 1,
    "prerank_jax.host": 2,
    "prerank_jax.analysis": 2,
    "prerank_jax.cli": 3,
    "prerank_jax.data.__main__": 3,   # python -m prerank_jax.data
}

# (importer, imported) pairs that break the rule and are not mended yet. Empty is the goal;
# an entry that no longer occurs fails the test, so the list only shrinks.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
  parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def module_files() -> dict[str, Path]:
  return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
  """The package modules ``name`` imports (``from a import b`` counts ``a.b`` when it is a
  module, else ``a``)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        base_name = ".".join(base + ([node.module] if node.module else []))
      else:
        base_name = node.module or ""
      targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in modules else base_name
                 for a in node.names]
    else:
      continue
    for target in targets:
      while target and target not in modules:  # `import prerank_jax.x.y` of a function
        target = target.rpartition(".")[0]
      if target.startswith("prerank_jax") and target != name:
        found.add(target)
  return found


def floor_of(name: str) -> int:
  prefixes = [p for p in FLOORS if name == p or name.startswith(p + ".")]
  assert prefixes, f"{name}: no floor in FLOORS; add it to the table"
  return FLOORS[max(prefixes, key=len)]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  files = module_files()
  return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_every_module_has_a_floor(graph):
  for name in graph:
    floor_of(name)


def test_no_module_imports_from_a_floor_above_its_own(graph):
  upward = {(a, b) for a, targets in graph.items() for b in targets
            if floor_of(b) > floor_of(a)}
  new = sorted(upward - KNOWN_UPWARD)
  assert not new, "imports from a floor above:\n" + "\n".join(
      f"  {a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})" for a, b in new)
  assert not KNOWN_UPWARD - upward, f"mended, remove from KNOWN_UPWARD: {KNOWN_UPWARD - upward}"


def test_data_never_imports_train_or_host(graph):
  bad = sorted((a, b) for a, targets in graph.items() if a.startswith("prerank_jax.data")
               for b in targets if b.startswith(("prerank_jax.train", "prerank_jax.host")))
  assert not bad or set(bad) <= KNOWN_UPWARD, bad


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
  """Tarjan's strongly connected components (iterative)."""
  index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

  def visit(root):
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = counter[0]
    counter[0] += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, children = work[-1]
      for child in children:
        if child not in index:
          index[child] = low[child] = counter[0]
          counter[0] += 1
          stack.append(child)
          on_stack.add(child)
          work.append((child, iter(sorted(graph[child]))))
          break
        if child in on_stack:
          low[node] = min(low[node], index[child])
      else:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[node])
        if low[node] == index[node]:
          component = set()
          while True:
            member = stack.pop()
            on_stack.discard(member)
            component.add(member)
            if member == node:
              break
          out.append(component)

  for name in sorted(graph):
    if name not in index:
      visit(name)
  return out


def test_strongly_connected_finds_a_planted_cycle():
  planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert sorted(map(sorted, strongly_connected(planted))) == [["a", "b", "c"], ["d"]]


def test_no_import_cycle(graph):
  cycles = {frozenset(c) for c in strongly_connected(graph) if len(c) > 1}
  new = cycles - KNOWN_CYCLES
  assert not new, "import cycles:\n" + "\n".join(f"  {sorted(c)}" for c in new)
  assert not KNOWN_CYCLES - cycles, f"mended, remove from KNOWN_CYCLES: {KNOWN_CYCLES - cycles}"
