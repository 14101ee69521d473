"""The import graph of vlmserve: every module imports, no module reaches itself through its imports, and imports
point down the layers (api -> service -> scheduler/media/jobs -> backends).

The graph is read from the source (ast): module-level imports, imports inside functions and `if TYPE_CHECKING:`
blocks all count, since a function-level import is a cycle deferred rather than removed. `from package import
name` is an edge to `package.name` when that is a module, else to `package`.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import vlmserve

ROOT = Path(vlmserve.__file__).resolve().parent
ENTRY_POINTS = {"vlmserve.__main__", "vlmserve.runners.__main__"}  # run a program when imported

# (importer package, packages it must not import)
LAYER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vlmserve.backends", ("vlmserve.api", "vlmserve.service", "vlmserve.scheduler")),
    ("vlmserve.scheduler", ("vlmserve.api",)),
    ("vlmserve.media", ("vlmserve.api",)),
    ("vlmserve.jobs", ("vlmserve.api",)),
    ("vlmserve.service", ("vlmserve.api",)),
)


def _module_name(path: Path) -> str:
    parts = ["vlmserve", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(name: str) -> str | None:
    """The vlmserve module that `import name` loads last (the longest known prefix of name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target) if _within(target, "vlmserve") else None
            if resolved is not None and resolved != "vlmserve":
                found.add(resolved)
    return found


GRAPH = {module: _imports_of(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_package() -> None:
    """The graph is not vacuous: it holds the layers and edges known to exist."""
    assert {"vlmserve.api.app", "vlmserve.service.chat", "vlmserve.scheduler.core", "vlmserve.backends.base"} <= set(
        GRAPH
    )
    assert "vlmserve.scheduler.core" in GRAPH["vlmserve.service.chat"]
    assert "vlmserve.api.state" in GRAPH["vlmserve.api.app"]


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]


def test_no_import_cycles() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles among vlmserve modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_point_down_the_layers() -> None:
    broken = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        for importer, forbidden in LAYER_RULES
        if _within(module, importer)
        for target in sorted(targets)
        if any(_within(target, banned) for banned in forbidden)
    ]
    assert not broken, "imports against the layers:\n" + "\n".join(broken)
