"""The resilience package imports one way: no cycles, no imports hidden in functions.

Read from the source (``ast``), so imports under ``TYPE_CHECKING`` and inside functions
count too: a cycle broken by a function-level import is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "src" / "safeship" / "resilience"
BREAKER_MODULES = (
    "_breaker.py",
    "_breaker_core.py",
    "_breaker_calls.py",
    "_breaker_support.py",
    "_snapshot.py",
    "_registry.py",
    "_default_registry.py",
    "_metrics.py",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules and name != "safeship.resilience"}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in path:
                stack.append((target, [*path, target]))
    return None


def test_no_module_of_the_package_imports_itself_back() -> None:
    graph = _graph()
    cycles = [cycle for name in graph if (cycle := _cycle_from(name, graph))]
    assert cycles == []


def test_the_breaker_modules_import_only_at_module_level() -> None:
    for filename in BREAKER_MODULES:
        tree = ast.parse((PACKAGE / filename).read_text())
        top_level = {id(node) for node in tree.body}
        nested = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top_level
        ]
        assert nested == [], f"{filename} imports inside a function or block at {nested}"


def test_the_breaker_modules_read_no_private_attribute_of_another_object() -> None:
    for filename in BREAKER_MODULES:
        tree = ast.parse((PACKAGE / filename).read_text())
        reaching = [
            f"{node.lineno}: .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ]
        assert reaching == [], f"{filename} reaches into private attributes: {reaching}"
