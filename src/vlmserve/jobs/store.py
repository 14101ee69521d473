"""Every query of the batch layer, on either driver. File contents live on disk (`files_dir`, SQLite mode)
or in the database as 4 MiB chunks (PostgreSQL mode, so any replica can serve them)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import orjson

from vlmserve.jobs.db import Conn, Driver, Row
from vlmserve.jobs.model import BatchStatus, ItemState, LineOutcome, ParsedLine, new_id

CHUNK = 4 * 1024 * 1024


class LostLease(Exception):
    """Another process took over this batch step (our lease ran out)."""


_OPEN = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


def _write_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class Store:
    def __init__(self, driver: Driver, files_dir: Path | None) -> None:
        self.db = driver
        self.files_dir = files_dir
        if files_dir is not None:
            files_dir.mkdir(parents=True, exist_ok=True)
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if driver.dialect == "postgres" else ""

    async def close(self) -> None:
        await self.db.close()

    # ---- files
    async def _put_content(self, conn: Conn, file_id: str, data: bytes) -> None:
        if self.files_dir is not None:
            await asyncio.to_thread(_write_file, self.files_dir / file_id, data)
            return
        rows = [(file_id, i, data[off : off + CHUNK]) for i, off in enumerate(range(0, max(len(data), 1), CHUNK))]
        await conn.executemany("INSERT INTO vlm_file_chunks (file_id, seq, data) VALUES (?, ?, ?)", rows)

    async def _insert_file(
        self, conn: Conn, purpose: str, filename: str, data: bytes, expires_at: float | None, lines: int | None
    ) -> Row:
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
        await conn.execute(
            "INSERT INTO vlm_files (id, purpose, filename, bytes, created_at, expires_at, line_count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            *row.values(),
        )
        return row

    async def create_file(
        self, purpose: str, filename: str, data: bytes, expires_at: float | None = None, lines: int | None = None
    ) -> Row:
        async with self.db.tx() as conn:
            return await self._insert_file(conn, purpose, filename, data, expires_at, lines)

    async def get_file(self, file_id: str) -> Row | None:
        rows = await self.db.fetch(
            "SELECT * FROM vlm_files WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)", file_id, time.time()
        )
        return rows[0] if rows else None

    async def list_files(
        self, purpose: str | None, limit: int, order: str, after: str | None
    ) -> tuple[list[Row], bool]:
        desc = order == "desc"
        sql = "SELECT * FROM vlm_files WHERE (expires_at IS NULL OR expires_at > ?)"
        args: list[Any] = [time.time()]
        if purpose:
            sql += " AND purpose = ?"
            args.append(purpose)
        if after:
            sql += " AND id < ?" if desc else " AND id > ?"
            args.append(after)
        sql += f" ORDER BY id {'DESC' if desc else 'ASC'} LIMIT ?"
        rows = await self.db.fetch(sql, *args, limit + 1)
        return rows[:limit], len(rows) > limit

    async def file_content(self, file_id: str) -> bytes:
        if self.files_dir is not None:
            return await asyncio.to_thread((self.files_dir / file_id).read_bytes)
        rows = await self.db.fetch("SELECT data FROM vlm_file_chunks WHERE file_id = ? ORDER BY seq", file_id)
        return b"".join(bytes(row["data"]) for row in rows)

    async def delete_file(self, file_id: str) -> bool:
        async with self.db.tx() as conn:
            deleted = await conn.execute("DELETE FROM vlm_files WHERE id = ?", file_id)
            await conn.execute("DELETE FROM vlm_file_chunks WHERE file_id = ?", file_id)
        if deleted and self.files_dir is not None:
            (self.files_dir / file_id).unlink(missing_ok=True)
        return bool(deleted)

    async def purge_expired_files(self) -> int:
        rows = await self.db.fetch(
            "SELECT id FROM vlm_files WHERE expires_at IS NOT NULL AND expires_at <= ?", time.time()
        )
        for row in rows:
            await self.delete_file(row["id"])
        return len(rows)

    # ---- batches
    async def create_batch(
        self,
        endpoint: str,
        input_file_id: str,
        window: str,
        window_seconds: float,
        metadata: dict[str, str] | None,
        models: frozenset[str] | None = None,
    ) -> Row:
        """`models`: the creating API key's allowlist (None: every model), checked when the batch validates."""
        now = time.time()
        batch_id = new_id("batch_")
        await self.db.execute(
            "INSERT INTO vlm_batches (id, endpoint, input_file_id, completion_window, status, metadata, created_at, "
            "expires_at, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            batch_id, endpoint, input_file_id, window, BatchStatus.VALIDATING.value,
            orjson.dumps(metadata).decode() if metadata is not None else None, now, now + window_seconds,
            orjson.dumps(sorted(models)).decode() if models is not None else None,
        )  # fmt: skip
        row = await self.get_batch(batch_id)
        assert row is not None
        return row

    async def get_batch(self, batch_id: str) -> Row | None:
        rows = await self.db.fetch("SELECT * FROM vlm_batches WHERE id = ?", batch_id)
        return rows[0] if rows else None

    async def list_batches(self, after: str | None, limit: int) -> tuple[list[Row], bool]:
        if after:
            rows = await self.db.fetch(
                "SELECT * FROM vlm_batches WHERE id < ? ORDER BY id DESC LIMIT ?", after, limit + 1
            )
        else:
            rows = await self.db.fetch("SELECT * FROM vlm_batches ORDER BY id DESC LIMIT ?", limit + 1)
        return rows[:limit], len(rows) > limit

    async def batch_counts(self, batch_id: str) -> dict[str, tuple[int, int, int]]:
        """state -> (lines, prompt tokens, completion tokens)."""
        rows = await self.db.fetch(
            "SELECT state, COUNT(*) AS n, CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS pt, "
            "CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS ct FROM vlm_batch_items "
            "WHERE batch_id = ? GROUP BY state",
            batch_id,
        )
        return {row["state"]: (int(row["n"]), int(row["pt"]), int(row["ct"])) for row in rows}

    async def request_cancel(self, batch_id: str) -> bool:
        changed = await self.db.execute(
            "UPDATE vlm_batches SET status = ?, cancelling_at = ? WHERE id = ? AND status IN (?, ?)",
            BatchStatus.CANCELLING.value, time.time(), batch_id, *(s.value for s in _OPEN),
        )  # fmt: skip
        return bool(changed)

    async def batches_in(self, *statuses: BatchStatus) -> list[Row]:
        marks = ", ".join("?" for _ in statuses)
        return await self.db.fetch(
            f"SELECT * FROM vlm_batches WHERE status IN ({marks}) ORDER BY id", *(s.value for s in statuses)
        )

    async def claim_batch(self, batch_id: str, owner: str, lease: float, *statuses: BatchStatus) -> bool:
        """Take a batch-level lease (validation, finalization): one process at a time does that step."""
        now = time.time()
        marks = ", ".join("?" for _ in statuses)
        changed = await self.db.execute(
            f"UPDATE vlm_batches SET lease_owner = ?, lease_until = ? WHERE id = ? AND status IN ({marks}) "
            "AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
            owner, now + lease, batch_id, *(s.value for s in statuses), now, owner,
        )  # fmt: skip
        return bool(changed)

    async def start_batch(self, batch_id: str, owner: str, lines: list[ParsedLine]) -> bool:
        """validating -> in_progress with its lines, atomically (a cancel in between wins: nothing is inserted)."""
        async with self.db.tx() as conn:
            changed = await conn.execute(
                "UPDATE vlm_batches SET status = ?, in_progress_at = ?, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND status = ? AND lease_owner = ?",
                BatchStatus.IN_PROGRESS.value, time.time(), batch_id, BatchStatus.VALIDATING.value, owner,
            )  # fmt: skip
            if changed:
                await conn.execute("DELETE FROM vlm_batch_items WHERE batch_id = ?", batch_id)
                await conn.executemany(
                    "INSERT INTO vlm_batch_items (batch_id, line_no, custom_id, model, body, state) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch_id, ln.line_no, ln.custom_id, ln.model, ln.body, ItemState.PENDING.value) for ln in lines],
                )
        return bool(changed)

    async def fail_batch(self, batch_id: str, owner: str, errors: list[dict[str, Any]]) -> bool:
        changed = await self.db.execute(
            "UPDATE vlm_batches SET status = ?, failed_at = ?, errors = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND status = ? AND lease_owner = ?",
            BatchStatus.FAILED.value, time.time(), orjson.dumps({"object": "list", "data": errors}).decode(),
            batch_id, BatchStatus.VALIDATING.value, owner,
        )  # fmt: skip
        return bool(changed)

    async def close_batch(self, batch_id: str, owner: str, status: BatchStatus, files: list[tuple[str, bytes]]) -> bool:
        """Store the output / error files and the final status in one transaction."""
        async with self.db.tx() as conn:
            ids: dict[str, str | None] = {"batch_output": None, "batch_error": None}
            for kind, data in files:
                row = await self._insert_file(conn, "batch_output", f"{batch_id}_{kind}.jsonl", data, None, None)
                ids[kind] = row["id"]
            stamp = f"{status.value}_at"
            changed = await conn.execute(
                f"UPDATE vlm_batches SET status = ?, {stamp} = ?, output_file_id = ?, error_file_id = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                status.value, time.time(), ids["batch_output"], ids["batch_error"], batch_id, owner,
            )  # fmt: skip
            if not changed:
                raise LostLease
        return True

    async def set_batch_status(self, batch_id: str, owner: str, status: BatchStatus) -> None:
        await self.db.execute(
            f"UPDATE vlm_batches SET status = ?, {status.value}_at = COALESCE({status.value}_at, ?) "
            "WHERE id = ? AND lease_owner = ?",
            status.value, time.time(), batch_id, owner,
        )  # fmt: skip

    # ---- batch items
    async def claim_items(self, batch_id: str, owner: str, n: int, lease: float) -> list[Row]:
        """Claim up to n unrun lines (or lines whose owner's lease ran out), grouped by model, while the batch
        is in progress and inside its window. A line is never claimed once its result is stored."""
        now = time.time()
        # The pick is a CTE: PostgreSQL runs it exactly once (an `IN (SELECT ... LIMIT n SKIP LOCKED)` subquery
        # may be re-run by the planner and then claim more than n lines).
        return await self.db.fetch(
            "WITH picked AS (SELECT line_no FROM vlm_batch_items WHERE batch_id = ? "
            "AND (state = ? OR (state = ? AND lease_until < ?)) "
            "AND EXISTS (SELECT 1 FROM vlm_batches b WHERE b.id = ? AND b.status = ? AND b.expires_at > ?) "
            f"ORDER BY model, line_no LIMIT ?{self._skip_locked}) "
            "UPDATE vlm_batch_items SET state = ?, owner = ?, lease_until = ?, attempts = attempts + 1 "
            "WHERE batch_id = ? AND line_no IN (SELECT line_no FROM picked) "
            "RETURNING line_no, custom_id, model, body, attempts",
            batch_id, ItemState.PENDING.value, ItemState.RUNNING.value, now, batch_id,
            BatchStatus.IN_PROGRESS.value, now, n, ItemState.RUNNING.value, owner, now + lease, batch_id,
        )  # fmt: skip

    async def finish_item(self, batch_id: str, line_no: int, owner: str, request_id: str, out: LineOutcome) -> bool:
        """Store a line's result, only if this owner still holds it: a result is written exactly once."""
        return bool(
            await self.db.execute(
                "UPDATE vlm_batch_items SET state = ?, status_code = ?, request_id = ?, response = ?, error = ?, "
                "prompt_tokens = ?, completion_tokens = ?, finished_at = ?, owner = NULL, lease_until = NULL "
                "WHERE batch_id = ? AND line_no = ? AND state = ? AND owner = ?",
                (ItemState.SUCCEEDED if out.ok else ItemState.FAILED).value,
                out.status_code,
                request_id,
                orjson.dumps(out.body).decode(),
                orjson.dumps(out.error).decode() if out.error else None,
                out.prompt_tokens,
                out.completion_tokens,
                time.time(),
                batch_id,
                line_no,
                ItemState.RUNNING.value,
                owner,
            )
        )

    async def live_running(self, batch_id: str) -> int:
        rows = await self.db.fetch(
            "SELECT COUNT(*) AS n FROM vlm_batch_items WHERE batch_id = ? AND state = ? AND lease_until >= ?",
            batch_id, ItemState.RUNNING.value, time.time(),
        )  # fmt: skip
        return int(rows[0]["n"])

    async def unrun_left(self, batch_id: str) -> int:
        rows = await self.db.fetch(
            "SELECT COUNT(*) AS n FROM vlm_batch_items WHERE batch_id = ? AND state IN (?, ?)",
            batch_id, ItemState.PENDING.value, ItemState.RUNNING.value,
        )  # fmt: skip
        return int(rows[0]["n"])

    async def close_out_items(self, batch_id: str, state: ItemState) -> int:
        """Lines that never ran (pending, or running under a lease that ran out) become cancelled / expired."""
        return await self.db.execute(
            "UPDATE vlm_batch_items SET state = ?, owner = NULL, lease_until = NULL, finished_at = ? "
            "WHERE batch_id = ? AND (state = ? OR (state = ? AND lease_until < ?))",
            state.value, time.time(), batch_id, ItemState.PENDING.value, ItemState.RUNNING.value, time.time(),
        )  # fmt: skip

    async def items_page(self, batch_id: str, after_line: int, limit: int) -> list[Row]:
        return await self.db.fetch(
            "SELECT line_no, custom_id, state, status_code, request_id, response, error FROM vlm_batch_items "
            "WHERE batch_id = ? AND line_no > ? ORDER BY line_no LIMIT ?",
            batch_id, after_line, limit,
        )  # fmt: skip

    async def renew(self, owner: str, lease: float) -> None:
        until = time.time() + lease
        await self.db.execute(
            "UPDATE vlm_batch_items SET lease_until = ? WHERE owner = ? AND state = ?",
            until, owner, ItemState.RUNNING.value,
        )  # fmt: skip
        await self.db.execute(
            "UPDATE vlm_jobs SET lease_until = ? WHERE owner = ? AND status = 'running'", until, owner
        )
        await self.db.execute("UPDATE vlm_batches SET lease_until = ? WHERE lease_owner = ?", until, owner)

    async def release(self, owner: str) -> None:
        """On a clean stop, give claimed work back at once instead of waiting for leases to run out."""
        await self.db.execute(
            "UPDATE vlm_batch_items SET state = ?, owner = NULL, lease_until = NULL WHERE owner = ? AND state = ?",
            ItemState.PENDING.value, owner, ItemState.RUNNING.value,
        )  # fmt: skip
        await self.db.execute(
            "UPDATE vlm_jobs SET status = 'pending', owner = NULL, lease_until = NULL "
            "WHERE owner = ? AND status = 'running'",
            owner,
        )
        await self.db.execute(
            "UPDATE vlm_batches SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", owner
        )

    # ---- async single jobs
    async def create_job(self, kind: str, body: dict[str, Any], key_id: str | None = None) -> Row:
        """`key_id`: the submitting API key (None: no key); only that key may read the job back."""
        job_id = new_id("job-")
        await self.db.execute(
            "INSERT INTO vlm_jobs (id, kind, status, body, created_at, key_id) VALUES (?, ?, 'pending', ?, ?, ?)",
            job_id, kind, orjson.dumps(body).decode(), time.time(), key_id,
        )  # fmt: skip
        job = await self.get_job(job_id)
        assert job is not None
        return job

    async def get_job(self, job_id: str) -> Row | None:
        rows = await self.db.fetch(
            "SELECT id, kind, status, result, error, attempts, created_at, completed_at, key_id FROM vlm_jobs "
            "WHERE id = ?",
            job_id,
        )
        return rows[0] if rows else None

    async def claim_jobs(self, owner: str, n: int, lease: float) -> list[Row]:
        now = time.time()
        return await self.db.fetch(
            "WITH picked AS (SELECT id FROM vlm_jobs WHERE status = 'pending' "
            f"OR (status = 'running' AND lease_until < ?) ORDER BY created_at LIMIT ?{self._skip_locked}) "
            "UPDATE vlm_jobs SET status = 'running', owner = ?, lease_until = ?, attempts = attempts + 1 "
            "WHERE id IN (SELECT id FROM picked) RETURNING id, kind, body, attempts",
            now, n, owner, now + lease,
        )  # fmt: skip

    async def finish_job(
        self, job_id: str, owner: str, result: dict[str, Any] | None, error: dict[str, Any] | None
    ) -> bool:
        return bool(
            await self.db.execute(
                "UPDATE vlm_jobs SET status = ?, result = ?, error = ?, completed_at = ?, owner = NULL, "
                "lease_until = NULL WHERE id = ? AND owner = ? AND status = 'running'",
                "failed" if error else "complete",
                orjson.dumps(result).decode() if result is not None else None,
                orjson.dumps(error).decode() if error else None,
                time.time(),
                job_id,
                owner,
            )
        )
