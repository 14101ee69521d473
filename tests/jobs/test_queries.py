"""Every named query of jobs/queries.py, on a migrated SQLite and (when VLMSERVE_TEST_POSTGRES_DSN is reachable)
PostgreSQL database: each text compiles against the real schema and binds exactly the arguments it counts, and a
`?` in a literal, a quoted identifier or a comment reaches the database as written."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from batch_helpers import POSTGRES_DSN, fresh_schema

from vlmserve.jobs import queries
from vlmserve.jobs.db import Driver, open_driver
from vlmserve.jobs.sqltext import Query, sql

POSTGRES_ONLY = {"MIGRATIONS_LOCK"}  # db.migrate runs it on PostgreSQL only


def named_queries() -> dict[str, Query]:
    found: dict[str, Query] = {}
    for name, value in vars(queries).items():
        if isinstance(value, Query):
            found[name] = value
        elif isinstance(value, dict):
            found.update({f"{name}[{key}]": v for key, v in value.items() if isinstance(v, Query)})
    return found


def test_the_module_holds_every_variant() -> None:
    found = named_queries()
    assert len(found) > 60  # the 8 files pages, the IN lists per length, the stamped statuses, ...
    assert all(q.params == q.sqlite.count("?") for q in found.values())  # no literal holds a `?` in these


@pytest.fixture(params=["sqlite", "postgres"])
async def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Driver, str, str | None]]:
    schema = None
    if request.param == "postgres":
        if not POSTGRES_DSN:
            pytest.skip("PostgreSQL tests need VLMSERVE_TEST_POSTGRES_DSN")
        schema = fresh_schema()
        try:
            driver = await open_driver(POSTGRES_DSN, tmp_path, schema)
        except OSError as exc:
            pytest.skip(f"PostgreSQL at VLMSERVE_TEST_POSTGRES_DSN is not reachable: {exc}")
    else:
        driver = await open_driver(None, tmp_path)
    try:
        yield driver, request.param, schema
    finally:
        if schema is not None:
            await driver.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await driver.close()


async def test_every_query_compiles_and_binds_its_arguments(
    migrated: tuple[Driver, str, str | None], tmp_path: Path
) -> None:
    _driver, dialect, schema = migrated
    found = named_queries()
    if dialect == "sqlite":
        db = sqlite3.connect(tmp_path / "vlmserve.db")
        try:
            for name, query in found.items():
                if name in POSTGRES_ONLY:
                    continue
                db.execute("EXPLAIN " + query.sqlite, [None] * query.params)  # wrong arity raises
                with pytest.raises(sqlite3.ProgrammingError):
                    db.execute("EXPLAIN " + query.sqlite, [None] * (query.params + 1))
        finally:
            db.close()
        return
    import asyncpg

    assert POSTGRES_DSN is not None and schema is not None
    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
    try:
        for name, query in found.items():
            prepared = await conn.prepare(query.postgres)
            assert len(prepared.get_parameters()) == query.params, name
    finally:
        await conn.close()


async def test_a_question_mark_in_literals_and_comments_reaches_the_database(
    migrated: tuple[Driver, str, str | None],
) -> None:
    driver, _dialect, _schema = migrated
    query = sql(
        "SELECT \"col?\" AS a, 'it''s ?' AS b /* ? */ FROM (SELECT CAST(? AS TEXT) AS \"col?\") t "
        "WHERE '?' = '?' AND CAST(? AS INTEGER) = 2 -- a last ?"
    )
    assert query.params == 2
    assert await driver.fetch(query, "x", 2) == [{"a": "x", "b": "it's ?"}]
    assert await driver.fetch(query, "x", 3) == []
