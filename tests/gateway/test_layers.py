"""The gateway's import graph: layers point down only, and no module imports itself around a
circle (an AST walk over gateway/, imports inside functions and TYPE_CHECKING blocks included)."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
# Bottom first. A module may import from its own layer and those below it, never above.
LAYERS = [
    (
        "gateway",  # the package itself: its version
        "gateway.errors",
        "gateway.observe.marks",
        "gateway.observe.logs",
        "gateway.observe.recent",
    ),
    ("gateway.config",),
    ("gateway.replicas",),
    ("gateway.limits", "gateway.pool"),
    ("gateway.state",),
    ("gateway.reloader", "gateway.observe", "gateway.health"),
    ("gateway.http",),
    ("gateway.cli", "gateway.__main__"),
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(GATEWAY.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The gateway modules `path` imports (a module, or the package an imported name is in)."""
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            name = ".".join(filter(None, [base, node.module]))
            found |= {
                f"{name}.{a.name}" if f"{name}.{a.name}" in GRAPH_NAMES else name
                for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name == "gateway" or name.startswith("gateway.")}


GRAPH_NAMES = {_module(p) for p in GATEWAY.rglob("*.py")}


def _layer(module: str) -> int:
    best, index = -1, -1
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), number
    assert index >= 0, f"{module}: in no layer of this test"
    return index


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in GATEWAY.rglob("*.py")}


def test_layers_point_down_only() -> None:
    upward = [
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not upward, upward


def test_no_import_circle() -> None:
    graph = {module: targets & GRAPH_NAMES for module, targets in _graph().items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        for target in graph[module]:
            visit(target, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])
