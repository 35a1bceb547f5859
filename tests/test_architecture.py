"""The house rules of docs/architecture.md, read off the source: who imports whom, no circles.

The imports are read from the syntax tree, so the test sees every module, including
ones no other test imports. Imports under ``if TYPE_CHECKING:`` are type annotations,
not dependencies, and are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Each room and the project rooms it may import (docs/architecture.md, "Rooms").
ALLOWED: dict[str, set[str]] = {
    "ddcolor": set(),
    "catalog": set(),
    "storage": set(),
    "scheduler": {"catalog", "storage", "workers"},
    "workers": {"ddcolor", "catalog", "storage"},
    "exports": {"catalog", "storage"},
    "migrations": {"catalog"},
    "panchro": {"ddcolor", "catalog", "storage", "scheduler", "workers", "exports", "migrations"},
}

#: The only modules of ``workers`` that ``scheduler`` may import: names, no machinery.
SCHEDULER_MAY_IMPORT_FROM_WORKERS = {"workers.names", "workers.broker"}


def _modules() -> Iterator[tuple[str, Path]]:
    for room in ALLOWED:
        for path in sorted((REPO / room).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, module: str, *, top_level_only: bool) -> set[str]:
    """Return the project modules ``path`` imports (absolute names)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif not top_level_only or isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit([n for n in inner if isinstance(n, ast.stmt)])
                        for handler in inner:
                            if isinstance(handler, ast.ExceptHandler):
                                visit(handler.body)

    visit(tree.body)
    return {name for name in found if name.split(".")[0] in ALLOWED}


MODULES = dict(_modules())
CIRCLE_TOP_ONLY = False


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_the_rooms_its_room_may_import(module: str) -> None:
    room = module.split(".")[0]
    for name in _imports(MODULES[module], module, top_level_only=False):
        other = name.split(".")[0]
        if other == room:
            continue
        assert other in ALLOWED[room], f"{module} imports {name}: {room}/ may not import {other}/"
        if (room, other) == ("scheduler", "workers"):
            allowed = name == "workers" or any(
                name == known or name.startswith(known + ".")
                for known in SCHEDULER_MAY_IMPORT_FROM_WORKERS
            )
            assert allowed, f"{module} imports {name}: scheduler/ knows workers by name only"


def test_ddcolor_modeling_imports_nothing_outside_itself() -> None:
    for module, path in MODULES.items():
        if module.startswith("ddcolor.modeling"):
            outside = {
                name
                for name in _imports(path, module, top_level_only=False)
                if not name.startswith("ddcolor.modeling")
            }
            assert not outside, f"{module} imports {sorted(outside)}"


def test_no_module_is_part_of_an_import_circle() -> None:
    # Module-level imports only: those are the ones that run, in order, at import time.
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for name in _imports(path, module, top_level_only=CIRCLE_TOP_ONLY):
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    circles = _strongly_connected(graph)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in circles)


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm; returns the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_is_over_500_lines() -> None:
    long = {
        module: count
        for module, path in MODULES.items()
        if (count := len(path.read_text().splitlines())) > 500
    }
    assert not long, f"modules over STYLE.md's 500 lines: {long}"
