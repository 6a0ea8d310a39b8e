#!/usr/bin/env python3
"""The package's import graph: circles, and imports that go up the floors.

Design.  Issue 19's layout has each layer import only from the layers below
it.  This script reads every module of ``inspector`` with :mod:`ast` (module
level and function-local imports alike, since a local import is still a
dependency), resolves relative imports to module names, and reports

* the strongly connected components of more than one module (import circles),
* every import of the command layer (``inspector.commands``, ``inspector.cli``,
  ``inspector.drgn_plugin``) from a module below it,
* every import that goes up a floor (:data:`FLOORS`), and every module that
  has no floor,
* counts: modules, edges, function-local imports.

tests/test_layering.py asserts the same through :func:`problems`.

    scripts/imports.py            # the report
    scripts/imports.py --check    # exit 1 if there is a circle or a layer violation
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "inspector"
# The floors, lowest first: a module imports only from its own floor or the
# ones below.  A name ending in "." is a package and everything in it.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("facts", ("inspector", "inspector.errors", "inspector.model", "inspector.versions", "inspector.lazy",
               "inspector.text", "inspector.events", "inspector.jsonout")),
    ("reading", ("inspector.target", "inspector.link", "inspector.reader", "inspector.kernel", "inspector.walk",
                 "inspector.verify")),
    ("decode", ("inspector.decode", "inspector.decode.", "inspector.vprintf")),
    ("clients", ("inspector.clients", "inspector.clients.")),
    ("session", ("inspector.discover", "inspector.session", "inspector.report")),
    ("library", ("inspector.helpers", "inspector.helpers.", "inspector.history", "inspector.history.",
                 "inspector.sim", "inspector.sim.", "inspector.trace", "inspector.trace.", "inspector.fleet",
                 "inspector.fleet.", "inspector.demo")),
    ("commands", ("inspector.commands", "inspector.commands.")),
    ("entry", ("inspector.cli", "inspector.drgn_plugin", "inspector.__main__")),
)
# Imports that go up on purpose, each with its reason.
EXEMPT = {
    ("inspector", "inspector.session"): "the package's PEP 562 __getattr__: PageExt, imported on first use",
}
COMMANDS = ("inspector.commands", "inspector.cli", "inspector.drgn_plugin", "inspector.__main__")


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def graph(pkg: Path = PKG) -> tuple[dict[str, set[str]], int]:
    """module -> the modules it imports (of the package ``pkg``), and the
    number of function-local imports."""
    modules = {module_name(p, pkg.parent): p for p in pkg.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    local = 0
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[:len(up) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            edges[name].update(t for t in targets if t in modules and t != name)
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(fn))
    for name in modules:
        edges.setdefault(name, set())
    return edges, local


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def floor(name: str) -> int | None:
    """The index in :data:`FLOORS` of a module, None if it has none."""
    for i, (_, names) in enumerate(FLOORS):
        if any(name == n or (n.endswith(".") and name.startswith(n)) for n in names):
            return i
    return None


def _command_layer(name: str) -> bool:
    return any(name == c or name.startswith(c + ".") for c in COMMANDS)


def violations(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of the command layer from a module below it."""
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if _command_layer(b) and not _command_layer(a))


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a module on a higher floor (those in :data:`EXEMPT` left out)."""
    out = []
    for a, targets in edges.items():
        fa = floor(a)
        for b in targets:
            fb = floor(b)
            if fa is not None and fb is not None and fb > fa and (a, b) not in EXEMPT:
                out.append((a, b))
    return sorted(out)


def problems(edges: dict[str, set[str]]) -> list[str]:
    """Every layering problem, one line each (none: the layout holds)."""
    out = ["import circle: " + " <-> ".join(c) for c in circles(edges)]
    out += [f"below the command layer: {a} imports {b}" for a, b in violations(edges)]
    out += [f"upward: {a} ({FLOORS[floor(a)][0]}) imports {b} ({FLOORS[floor(b)][0]})" for a, b in upward(edges)]
    out += [f"no floor: {m} (add it to FLOORS in scripts/imports.py)" for m in sorted(edges) if floor(m) is None]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on a circle or a layer violation")
    args = ap.parse_args(argv)
    edges, local = graph()
    found, bad, up = circles(edges), violations(edges), upward(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} import edges, {local} function-local imports")
    print(f"{len(found)} import circle(s)")
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"{len(bad)} import(s) of the command layer from below it")
    for a, b in bad:
        print(f"  {a} -> {b}")
    print(f"{len(up)} import(s) up a floor")
    for a, b in up:
        print(f"  {a} -> {b}")
    lost = [m for m in sorted(edges) if floor(m) is None]
    if lost:
        print(f"{len(lost)} module(s) without a floor: {', '.join(lost)}")
    return 1 if args.check and problems(edges) else 0


if __name__ == "__main__":
    sys.exit(main())
