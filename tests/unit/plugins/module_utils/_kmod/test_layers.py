# SPDX-License-Identifier: GPL-3.0-or-later
"""The engine's imports against docs/architecture.md: every file of _kmod/ is in the
documented layer table, imports only point to its own layer or those below, and no
files import each other in a loop. Every private module_utils file says it is private.

Imports under ``if t.TYPE_CHECKING:`` are left out: they never run, and annotations
may name types of a layer above.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[5]
ENGINE = REPO / "plugins" / "module_utils" / "_kmod"
ARCHITECTURE = REPO / "docs" / "architecture.md"
_ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|")


def documented_layers(text: str) -> dict[str, int]:
    """file stem -> layer rank (0 = bottom) from the engine table: each row is
    ``| layer | `file.py`, ... | holds |``; rows of one layer name share a rank, layers
    ranked in the order the table first names them."""
    section = text.split("## Engine", 1)[1].split("\n## ", 1)[0]
    ranks: dict[str, int] = {}
    layers: dict[str, int] = {}
    for line in section.splitlines():
        m = _ROW.match(line)
        if not m or m.group(1) in ("layer", "---") or set(m.group(1)) <= {"-", " ", ":"}:
            continue
        rank = layers.setdefault(m.group(1), len(layers))
        for name in re.findall(r"`([a-z0-9_]+)\.py`", m.group(2)):
            ranks[name] = rank
    return ranks


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def engine_imports(source: str) -> set[str]:
    """The _kmod files a file imports when it runs (relative imports, at any depth)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for sub in node.orelse:
                visit(sub)
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def graph() -> dict[str, set[str]]:
    return {f.stem: engine_imports(f.read_text(encoding="utf-8"))
            for f in sorted(ENGINE.glob("*.py")) if f.stem != "__init__"}


def find_loop(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (loop := walk(nxt)):
                return loop
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (loop := walk(node)):
            return loop
    return None


def test_every_engine_file_is_documented_and_imports_point_down():
    ranks = documented_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    edges = graph()
    assert sorted(set(edges) - set(ranks)) == [], "engine files missing from docs/architecture.md"
    assert sorted(set(ranks) - set(edges)) == [], "docs/architecture.md names files that do not exist"
    upward = [f"{src} ({ranks[src]}) imports {dst} ({ranks[dst]})"
              for src, dsts in edges.items() for dst in sorted(dsts) if ranks[dst] > ranks[src]]
    assert upward == []


def test_no_import_loop():
    assert find_loop(graph()) is None


PRIVATE_NOTE = "# Note that this module util is **PRIVATE** to the collection."


def test_private_files_open_with_the_private_note():
    """As community.crypto's module_utils do; the empty __init__.py stays empty (sanity)."""
    files = sorted(ENGINE.parent.glob("*.py")) + sorted(ENGINE.glob("*.py"))
    head = {f: f.read_text(encoding="utf-8").split('"""', 1)[0] for f in files if f.name != "__init__.py"}
    assert [str(f.relative_to(REPO)) for f, text in head.items() if PRIVATE_NOTE not in text] == []
    assert (ENGINE / "__init__.py").read_text(encoding="utf-8") == ""


@pytest.mark.parametrize("source, edges", [
    ("from .a import x\nfrom . import b, c\n", {"a", "b", "c"}),
    ("import typing as t\nif t.TYPE_CHECKING:\n    from .up import X\nelse:\n    from .down import Y\n",
     {"down"}),
    ("def f():\n    from .lazy import z\n", {"lazy"}),
])
def test_the_checks_see_what_they_must(source, edges):
    """The checks themselves: they must be able to fail."""
    assert engine_imports(source) == edges
    assert find_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_loop({"a": {"b"}, "b": set()}) is None
    ranks = documented_layers("## Engine\n| layer | file | holds |\n|---|---|---|\n"
                              "| base | `a.py`, `b.py` | x |\n| top | `c.py` | y |\n| base | `d.py` | z |\n## Next\n")
    assert ranks == {"a": 0, "b": 0, "c": 1, "d": 0}
