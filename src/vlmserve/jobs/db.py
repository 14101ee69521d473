"""Two database drivers behind one small interface: SQLite (stdlib, one connection in one thread) and
PostgreSQL (asyncpg pool). Statements are `Query` objects from queries.py, written once with `?` placeholders
and numbered for PostgreSQL when built; a plain string (tests, one-off tools) is numbered on each call.

`tx()` is a transaction; `fetch` / `execute` outside one run in autocommit. The SQLite driver serializes all
use of its connection with an asyncio lock (a transaction spans awaits), and takes the write lock at BEGIN
(IMMEDIATE) so two processes on one file never deadlock on lock upgrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vlmserve.jobs import queries as q
from vlmserve.jobs.migrations import MIGRATIONS
from vlmserve.jobs.sqltext import Query, numbered, sql

Row = dict[str, Any]
Statement = Query | str
T = TypeVar("T")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Conn(Protocol):
    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]: ...

    async def execute(self, stmt: Statement, *args: Any) -> int: ...

    async def executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None: ...


class Driver(Conn, Protocol):
    dialect: str

    def tx(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...

    async def close(self) -> None: ...


class SqliteDriver:
    dialect = "sqlite"

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vlmserve-sqlite")
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteDriver:
        path.parent.mkdir(parents=True, exist_ok=True)

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
            db.row_factory = sqlite3.Row
            for pragma in q.SQLITE_PRAGMAS:
                db.execute(pragma)
            return db

        return cls(await asyncio.to_thread(connect))

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _fetch(self, stmt: Statement, args: tuple[Any, ...]) -> list[Row]:
        return [dict(row) for row in self._db.execute(_sqlite(stmt), args).fetchall()]

    def _execute(self, stmt: Statement, args: tuple[Any, ...]) -> int:
        return self._db.execute(_sqlite(stmt), args).rowcount

    def _executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(_sqlite(stmt), rows)

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        async with self._lock:
            return await self._call(lambda: self._fetch(stmt, args))

    async def execute(self, stmt: Statement, *args: Any) -> int:
        async with self._lock:
            return await self._call(lambda: self._execute(stmt, args))

    async def executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None:
        async with self.tx() as conn:
            await conn.executemany(stmt, rows)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        async with self._lock:
            await self._call(lambda: self._db.execute(q.SQLITE_BEGIN))
            try:
                yield _SqliteTx(self)
            except BaseException:
                await self._call(lambda: self._db.execute(q.SQLITE_ROLLBACK))
                raise
            await self._call(lambda: self._db.execute(q.SQLITE_COMMIT))

    async def close(self) -> None:
        async with self._lock:
            await self._call(self._db.close)
        self._pool.shutdown(wait=True)


class _SqliteTx:
    def __init__(self, driver: SqliteDriver) -> None:
        self._d = driver

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        return await self._d._call(lambda: self._d._fetch(stmt, args))

    async def execute(self, stmt: Statement, *args: Any) -> int:
        return await self._d._call(lambda: self._d._execute(stmt, args))

    async def executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None:
        await self._d._call(lambda: self._d._executemany(stmt, rows))


def _sqlite(stmt: Statement) -> str:
    return stmt.sqlite if isinstance(stmt, Query) else stmt


def _postgres(stmt: Statement) -> str:
    return stmt.postgres if isinstance(stmt, Query) else numbered(stmt)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _PgConn:
    def __init__(self, conn: Any) -> None:
        self._c = conn

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        return [dict(row) for row in await self._c.fetch(_postgres(stmt), *args)]

    async def execute(self, stmt: Statement, *args: Any) -> int:
        return _rowcount(await self._c.execute(_postgres(stmt), *args))

    async def executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None:
        await self._c.executemany(_postgres(stmt), rows)


class PostgresDriver:
    dialect = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, schema: str | None) -> PostgresDriver:
        import asyncpg

        settings: dict[str, str] = {}
        if schema:
            if not _SCHEMA_NAME.match(schema):
                raise ValueError(f"invalid database schema name: {schema!r}")
            conn = await asyncpg.connect(dsn)
            try:
                with contextlib.suppress(asyncpg.UniqueViolationError):  # two processes creating it at once
                    await conn.execute(q.PG_CREATE_SCHEMA.format(schema=schema))
            finally:
                await conn.close()
            settings["search_path"] = schema
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8, server_settings=settings)
        return cls(pool)

    async def fetch(self, stmt: Statement, *args: Any) -> list[Row]:
        async with self._pool.acquire() as conn:
            return await _PgConn(conn).fetch(stmt, *args)

    async def execute(self, stmt: Statement, *args: Any) -> int:
        async with self._pool.acquire() as conn:
            return await _PgConn(conn).execute(stmt, *args)

    async def executemany(self, stmt: Statement, rows: list[tuple[Any, ...]]) -> None:
        async with self.tx() as conn:
            await conn.executemany(stmt, rows)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgConn(conn)

    async def close(self) -> None:
        await self._pool.close()


async def migrate(driver: Driver) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    blob = "BLOB" if driver.dialect == "sqlite" else "BYTEA"
    applied_now: list[int] = []
    async with driver.tx() as conn:
        if driver.dialect == "postgres":  # one process migrates at a time; the others then see it done
            await conn.execute(q.MIGRATIONS_LOCK)
        await conn.execute(q.MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch(q.MIGRATIONS_DONE)}
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            for statement in statements:
                await conn.execute(sql(statement.replace("{blob}", blob)))
            await conn.execute(q.MIGRATION_APPLIED, version, name, time.time())
            applied_now.append(version)
    return applied_now


async def open_driver(database_url: str | None, data_dir: Path, schema: str | None = None) -> Driver:
    driver: Driver
    if database_url and database_url.startswith(("postgres://", "postgresql://")):
        driver = await PostgresDriver.open(database_url, schema)
    elif database_url and database_url.startswith("sqlite:///"):
        driver = await SqliteDriver.open(Path(database_url.removeprefix("sqlite:///")))
    elif database_url:
        raise ValueError("database_url must start with postgresql:// or sqlite:///")
    else:
        driver = await SqliteDriver.open(data_dir / "vlmserve.db")
    await migrate(driver)
    return driver
