"""Engine names live in backends/, runners/ and service/catalog.py: api/, service/, ui/ and scheduler/ ask the
engine's traits (backends/engines.py) and a backend's `stats()` instead.

Read from the source (ast). A string literal equal to an engine name is a finding; the names come from the traits
table, so a new engine is covered. "ollama" and "openai" also name API surfaces (OpenAPI tags, the `surface` label,
the wrapper's `ollama` field of /health), so as literals they count where compared; any branch on `.engine`
(compared, a table indexed or `.get()` by it, a `match` on it) counts whatever it is compared with. No module
there names `PoolBackend`.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

import vlmserve
from vlmserve.api.surfaces import PREFIXES
from vlmserve.backends.engines import ENGINES, engine_names, traits_of
from vlmserve.domain.spec import LOCAL_ENGINES, EngineKind, ModelSpec

ROOT = Path(vlmserve.__file__).resolve().parent
SCANNED = ("api", "service", "ui", "scheduler")
EXCEPTED = {ROOT / "service" / "catalog.py"}  # writes the env-flag entries: engine names are its data
SURFACE_NAMES = frozenset(surface.name for _, surface in PREFIXES)
FILES = sorted(p for layer in SCANNED for p in (ROOT / layer).rglob("*.py") if p not in EXCEPTED)


def _is_engine_attr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "engine"


def _compared(tree: ast.AST) -> set[int]:
    """ids of the nodes inside comparisons (either side, and inside the tuples / sets they compare with)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                inside.update(id(sub) for sub in ast.walk(operand))
        elif isinstance(node, ast.match_case):
            inside.update(id(sub) for sub in ast.walk(node.pattern))
    return inside


def _engine_branch(node: ast.AST) -> str | None:
    """What a node does with `.engine` that chooses by engine: None when it only shows it."""
    if isinstance(node, ast.Compare) and any(_is_engine_attr(o) for o in (node.left, *node.comparators)):
        return "compares `.engine`"
    if isinstance(node, ast.Subscript) and _is_engine_attr(node.slice):
        return "a table indexed by `.engine`"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return "a table looked up by `.engine`" if node.args and _is_engine_attr(node.args[0]) else None
    if isinstance(node, ast.Match) and _is_engine_attr(node.subject):
        return "a match on `.engine`"
    return None


def _names_pool(node: ast.AST) -> bool:
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any(alias.name.rpartition(".")[2] == "PoolBackend" for alias in node.names)
    return (isinstance(node, ast.Name) and node.id == "PoolBackend") or (
        isinstance(node, ast.Attribute) and node.attr == "PoolBackend"
    )


def findings(source: str, filename: str = "<scan>") -> list[str]:
    tree = ast.parse(source, filename=filename)
    names = engine_names()
    compared = _compared(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            as_surface = node.value in SURFACE_NAMES and id(node) not in compared  # a tag, a label: not an engine
            found += [] if as_surface else [f"{filename}:{line}: engine name {node.value!r}"]
        branch = _engine_branch(node)
        if branch is not None:
            found.append(f"{filename}:{line}: {branch}")
        if _names_pool(node):
            found.append(f"{filename}:{line}: names PoolBackend (read `backend.stats()`)")
    return found


def test_the_traits_table_has_every_engine() -> None:
    assert set(ENGINES) == set(get_args(EngineKind))
    assert {name for name, t in ENGINES.items() if t.local} == LOCAL_ENGINES
    assert traits_of(ModelSpec(name="p", engine="ocr-chat", ocr_model="o", chat_model="c")).pipeline
    assert traits_of(ModelSpec(name="o", engine="rapidocr")).ocr


def test_the_scan_sees_the_layers() -> None:
    """Not vacuous: the files that used to branch on engine names are scanned, and the names are many."""
    scanned = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"service/chat.py", "api/ollama/routes.py", "ui/status.py", "scheduler/layout.py", "api/admin.py"} <= scanned
    assert "service/catalog.py" not in scanned
    assert len(engine_names()) >= 7


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('if spec.engine == "rapidocr": pass', 2),  # the literal and the comparison
        ('ok = candidate.engine in ("ocr-chat", "llamacpp")', 3),
        ('FMT = {"onnx-embed": "onnx"}', 1),
        ('if kind == "ollama": pass', 1),  # a surface name compared: it is an engine name here
        ('tags = ["ollama"]\nSurface("openai")', 0),  # surface names as surface names
        ("size = OVERHEAD[spec.engine]", 1),
        ("fmt = table.get(spec.engine, 'x')", 1),
        ("match spec.engine:\n    case 'x':\n        pass", 1),
        ("from vlmserve.backends.pool import PoolBackend", 1),
        ("ok = isinstance(b, pool.PoolBackend)", 1),
        ('row = {"engine": spec.engine}', 0),  # shown, not branched on
    ],
)
def test_the_scan_finds_what_it_forbids(source: str, expected: int) -> None:
    assert len(findings(source)) == expected, findings(source)


def test_no_engine_names_above_the_backends() -> None:
    found = [f for path in FILES for f in findings(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert not found, "engine names outside backends/, runners/ and service/catalog.py:\n" + "\n".join(found)
