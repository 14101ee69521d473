"""Files (OpenAI Files API and batch output): the rows in `vlm_files`, the contents on disk (`files_dir`, SQLite
mode) or in the database as 4 MiB chunks (PostgreSQL mode, so any replica can serve them)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from vlmserve.jobs import queries as q
from vlmserve.jobs.db import Conn, Driver, Row
from vlmserve.jobs.model import new_id

CHUNK = 4 * 1024 * 1024


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class FileStore:
    def __init__(self, driver: Driver, files_dir: Path | None) -> None:
        self.db = driver
        self.files_dir = files_dir
        if files_dir is not None:
            files_dir.mkdir(parents=True, exist_ok=True)

    async def _put_content(self, conn: Conn, file_id: str, data: bytes) -> None:
        if self.files_dir is not None:
            await asyncio.to_thread(_write_file, self.files_dir / file_id, data)
            return
        rows = [(file_id, i, data[off : off + CHUNK]) for i, off in enumerate(range(0, max(len(data), 1), CHUNK))]
        await conn.executemany(q.FILE_CHUNK_INSERT, rows)

    async def insert(
        self, conn: Conn, purpose: str, filename: str, data: bytes, expires_at: float | None, lines: int | None
    ) -> Row:
        """Store a file inside the caller's transaction `conn` (a batch's output is stored with its status)."""
        row: Row = {
            "id": new_id("file-"),
            "purpose": purpose,
            "filename": filename,
            "bytes": len(data),
            "created_at": time.time(),
            "expires_at": expires_at,
            "line_count": lines,
        }
        await self._put_content(conn, row["id"], data)
        await conn.execute(q.FILE_INSERT, *row.values())
        return row

    async def create_file(
        self, purpose: str, filename: str, data: bytes, expires_at: float | None = None, lines: int | None = None
    ) -> Row:
        async with self.db.tx() as conn:
            return await self.insert(conn, purpose, filename, data, expires_at, lines)

    async def get_file(self, file_id: str) -> Row | None:
        rows = await self.db.fetch(q.FILE_GET, file_id, time.time())
        return rows[0] if rows else None

    async def list_files(
        self, purpose: str | None, limit: int, order: str, after: str | None
    ) -> tuple[list[Row], bool]:
        desc = order == "desc"
        args: list[Any] = [time.time()]
        if purpose:
            args.append(purpose)
        if after:
            args.append(after)
        rows = await self.db.fetch(q.FILES_PAGE[bool(purpose), bool(after), desc], *args, limit + 1)
        return rows[:limit], len(rows) > limit

    async def file_content(self, file_id: str) -> bytes:
        if self.files_dir is not None:
            return await asyncio.to_thread((self.files_dir / file_id).read_bytes)
        rows = await self.db.fetch(q.FILE_CHUNKS, file_id)
        return b"".join(bytes(row["data"]) for row in rows)

    async def delete_file(self, file_id: str) -> bool:
        async with self.db.tx() as conn:
            deleted = await conn.execute(q.FILE_DELETE, file_id)
            await conn.execute(q.FILE_CHUNKS_DELETE, file_id)
        if deleted and self.files_dir is not None:
            (self.files_dir / file_id).unlink(missing_ok=True)
        return bool(deleted)

    async def purge_expired_files(self) -> int:
        rows = await self.db.fetch(q.FILES_EXPIRED, time.time())
        for row in rows:
            await self.delete_file(row["id"])
        return len(rows)
