"""Every SQL statement lives in jobs/queries.py (the schema in jobs/migrations.py): no string literal anywhere
else in the package starts with a SQL keyword. An f-string counts by its leading text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import vlmserve

PACKAGE = Path(vlmserve.__file__).parent
ALLOWED = {PACKAGE / "jobs" / "queries.py", PACKAGE / "jobs" / "migrations.py"}
KEYWORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "WITH", "ALTER", "DROP", "PRAGMA", "BEGIN")
# A keyword in capitals, then a word (`DELETE FROM`, `SELECT *`, `CREATE TABLE`), not an HTTP verb and a path.
SQL_START = re.compile(rf"^\s*(?:{'|'.join(KEYWORDS)})\s+[A-Za-z_*(]")


def _leading_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def sql_literals(path: Path) -> list[str]:
    """`path:line: text` of each string literal in the file that starts like a SQL statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        text = _leading_text(node)
        if text is not None and SQL_START.match(text):
            found.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}: {text[:60]!r}")
    return found


def test_no_sql_outside_the_query_and_migration_modules() -> None:
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if path not in ALLOWED for hit in sql_literals(path)]
    assert offenders == [], "SQL outside jobs/queries.py:\n" + "\n".join(offenders)


def test_the_scan_sees_the_statements_where_they_belong() -> None:
    """The scan finds SQL: every kind of statement in queries.py, the f-string variants included."""
    hits = sql_literals(PACKAGE / "jobs" / "queries.py")
    for keyword in ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "WITH", "PRAGMA", "BEGIN"):
        assert any(f": '{keyword} " in hit for hit in hits), keyword
    assert any("{" not in hit and "UPDATE vlm_batches SET status = ?, " in hit for hit in hits)  # f-string's head
    assert sql_literals(PACKAGE / "jobs" / "migrations.py")


def test_an_http_verb_and_a_path_is_not_sql() -> None:
    assert not SQL_START.match("DELETE /v1/files/{id}") and not SQL_START.match("UPDATE")
    assert SQL_START.match("DELETE FROM vlm_files") and SQL_START.match("  SELECT * FROM t")
