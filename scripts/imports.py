#!/usr/bin/env python3
"""The package's import graph: circles, and imports of the command layer from below it.

Design.  Issue 19's layout has each layer import only from the layers below
it.  This script reads every module of ``inspector`` with :mod:`ast` (module
level and function-local imports alike, since a local import is still a
dependency), resolves relative imports to module names, and reports

* the strongly connected components of more than one module (import circles),
* every import of ``inspector.commands`` (the command framework) from the
  library layers (clients, history, sim, helpers, decode),
* counts: modules, edges, function-local imports.

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
LIBRARY = ("inspector.clients", "inspector.history", "inspector.sim", "inspector.helpers", "inspector.decode")
COMMANDS = ("inspector.commands",)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def graph() -> tuple[dict[str, set[str]], int]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
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


def violations(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in edges.items() for b in targets
                  if a.startswith(LIBRARY) and b.startswith(COMMANDS))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 on a circle or a layer violation")
    args = ap.parse_args(argv)
    edges, local = graph()
    found, bad = circles(edges), violations(edges)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} import edges, {local} function-local imports")
    print(f"{len(found)} import circle(s)")
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"{len(bad)} import(s) of the command layer from the library")
    for a, b in bad:
        print(f"  {a} -> {b}")
    return 1 if args.check and (found or bad) else 0


if __name__ == "__main__":
    sys.exit(main())
