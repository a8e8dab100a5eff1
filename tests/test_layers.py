"""The house's floors: no import circle between modules and no upward import between packages, counting the
imports inside functions too (they hide a dependency, they do not remove it).

Floors, lowest first (a package may import only from lower floors, and from itself):
foundations (_io, _jit, _names, _hparams, seeding, provenance, ticketfile) -> models -> data and subsetsum ->
construction and supermask (side by side: neither imports the other) -> train -> experiments and bench ->
report -> cli, and above everything the package's ``__init__``, the front door that re-exports the public names.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

FLOOR = {
    "slth": 9,  # the package's front door: lazy re-exports of the public names (nothing imports it)
    "_io": 0, "_jit": 0, "_names": 0, "_hparams": 0, "seeding": 0, "provenance": 0, "ticketfile": 0,
    "models": 1,
    "data": 2, "subsetsum": 2,
    "construction": 3, "supermask": 3,
    "train": 4,
    "experiments": 5, "bench": 5,
    "report": 6,
    "cli": 7, "__main__": 8,
}
# foundations (floor 0) share one floor: they may import each other (the circle check still applies)


def _modules(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in sorted((src / "slth").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the slth modules it imports (anywhere in its file), by dotted name."""
    modules = _modules(src)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                names = [f"{stem}.{alias.name}" for alias in node.names]
                # ``from .. import ticketfile`` imports the module ticketfile, not the package above it
                candidates = names if any(n in modules for n in names) else [stem] + names
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets.update(c for c in candidates if c in modules and c != name)
        graph[name] = targets
    return graph


def _floor_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else "slth"
    if package not in FLOOR:
        raise AssertionError(f"{module}: package {package!r} has no floor; add it to FLOOR in {__file__}")
    floor = FLOOR[package]
    return ("foundations" if floor == 0 else package), floor


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        package, floor = _floor_of(module)
        for target in sorted(targets):
            other, other_floor = _floor_of(target)
            if other != package and other_floor >= floor:
                bad.append(f"{module} -> {target} ({package} on floor {floor}, {other} on floor {other_floor})")
    return bad


def packages(src: Path = SRC) -> set[str]:
    return {name for name, path in _modules(src).items() if path.name == "__init__.py"}


def circles(graph: dict[str, set[str]], inits: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan). A package's ``__init__`` (``inits``) is
    left out: it re-exports its modules, and a module importing a name through it is the package's ordinary use."""
    graph = {m: {t for t in targets if t not in inits} for m, targets in graph.items() if m not in inits}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circle():
    assert circles(import_graph(), packages()) == []


def test_no_upward_import():
    assert upward_imports(import_graph()) == []


def test_the_checks_see_what_they_must(tmp_path):
    """The checks find a circle closed inside a function and an upward import (so a clean result means
    something)."""
    pkg = tmp_path / "slth"
    (pkg / "train").mkdir(parents=True)
    (pkg / "supermask").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("from ..supermask import core\n")
    (pkg / "supermask" / "__init__.py").write_text("")
    (pkg / "supermask" / "core.py").write_text("def f():\n    from . import methods\n")
    (pkg / "supermask" / "methods.py").write_text("from .core import f\nfrom ..train import x\n")
    graph = import_graph(tmp_path)
    assert circles(graph, packages(tmp_path)) == [["slth.supermask.core", "slth.supermask.methods"]]
    assert upward_imports(graph) == ["slth.supermask.methods -> slth.train (supermask on floor 3, train on floor 4)"]
