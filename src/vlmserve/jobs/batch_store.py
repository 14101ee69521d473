"""Batches and their lines (`vlm_batches`, `vlm_batch_items`): creation, the batch-level lease of validation and
finalization, lines claimed under a lease and each result written exactly once, counts, cancel and close."""

from __future__ import annotations

import time
from typing import Any

import orjson

from vlmserve.jobs import queries as q
from vlmserve.jobs.db import Driver, Row
from vlmserve.jobs.files_store import FileStore
from vlmserve.jobs.model import BatchStatus, ItemState, LineOutcome, ParsedLine, new_id

_OPEN = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)


class LostLease(Exception):
    """Another process took over this batch step (our lease ran out)."""


class BatchStore:
    def __init__(self, driver: Driver, files: FileStore) -> None:
        self.db = driver
        self.files = files

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
            q.BATCH_INSERT,
            batch_id, endpoint, input_file_id, window, BatchStatus.VALIDATING.value,
            orjson.dumps(metadata).decode() if metadata is not None else None, now, now + window_seconds,
            orjson.dumps(sorted(models)).decode() if models is not None else None,
        )  # fmt: skip
        row = await self.get_batch(batch_id)
        assert row is not None
        return row

    async def get_batch(self, batch_id: str) -> Row | None:
        rows = await self.db.fetch(q.BATCH_GET, batch_id)
        return rows[0] if rows else None

    async def list_batches(self, after: str | None, limit: int) -> tuple[list[Row], bool]:
        if after:
            rows = await self.db.fetch(q.BATCHES_PAGE_AFTER, after, limit + 1)
        else:
            rows = await self.db.fetch(q.BATCHES_PAGE, limit + 1)
        return rows[:limit], len(rows) > limit

    async def batch_counts(self, batch_id: str) -> dict[str, tuple[int, int, int]]:
        """state -> (lines, prompt tokens, completion tokens)."""
        rows = await self.db.fetch(q.ITEM_COUNTS, batch_id)
        return {row["state"]: (int(row["n"]), int(row["pt"]), int(row["ct"])) for row in rows}

    async def item_state_counts(self) -> dict[str, int]:
        """state -> lines in that state, over every batch (the `/metrics` gauge)."""
        return {str(row["state"]): int(row["n"]) for row in await self.db.fetch(q.ITEM_STATES)}

    async def request_cancel(self, batch_id: str) -> bool:
        changed = await self.db.execute(
            q.BATCH_CANCEL, BatchStatus.CANCELLING.value, time.time(), batch_id, *(s.value for s in _OPEN)
        )
        return bool(changed)

    async def batches_in(self, *statuses: BatchStatus) -> list[Row]:
        return await self.db.fetch(q.BATCHES_IN[len(statuses)], *(s.value for s in statuses))

    async def claim_batch(self, batch_id: str, owner: str, lease: float, *statuses: BatchStatus) -> bool:
        """Take a batch-level lease (validation, finalization): one process at a time does that step."""
        now = time.time()
        changed = await self.db.execute(
            q.BATCH_CLAIM[len(statuses)],
            owner, now + lease, batch_id, *(s.value for s in statuses), now, owner,
        )  # fmt: skip
        return bool(changed)

    async def start_batch(self, batch_id: str, owner: str, lines: list[ParsedLine]) -> bool:
        """validating -> in_progress with its lines, atomically (a cancel in between wins: nothing is inserted)."""
        async with self.db.tx() as conn:
            changed = await conn.execute(
                q.BATCH_START,
                BatchStatus.IN_PROGRESS.value, time.time(), batch_id, BatchStatus.VALIDATING.value, owner,
            )  # fmt: skip
            if changed:
                await conn.execute(q.ITEMS_DELETE, batch_id)
                await conn.executemany(
                    q.ITEM_INSERT,
                    [(batch_id, ln.line_no, ln.custom_id, ln.model, ln.body, ItemState.PENDING.value) for ln in lines],
                )
        return bool(changed)

    async def fail_batch(self, batch_id: str, owner: str, errors: list[dict[str, Any]]) -> bool:
        changed = await self.db.execute(
            q.BATCH_FAIL,
            BatchStatus.FAILED.value, time.time(), orjson.dumps({"object": "list", "data": errors}).decode(),
            batch_id, BatchStatus.VALIDATING.value, owner,
        )  # fmt: skip
        return bool(changed)

    async def close_batch(self, batch_id: str, owner: str, status: BatchStatus, files: list[tuple[str, bytes]]) -> bool:
        """Store the output / error files and the final status in one transaction."""
        async with self.db.tx() as conn:
            ids: dict[str, str | None] = {"batch_output": None, "batch_error": None}
            for kind, data in files:
                row = await self.files.insert(conn, "batch_output", f"{batch_id}_{kind}.jsonl", data, None, None)
                ids[kind] = row["id"]
            changed = await conn.execute(
                q.BATCH_CLOSE[status],
                status.value, time.time(), ids["batch_output"], ids["batch_error"], batch_id, owner,
            )  # fmt: skip
            if not changed:
                raise LostLease
        return True

    async def set_batch_status(self, batch_id: str, owner: str, status: BatchStatus) -> None:
        await self.db.execute(q.BATCH_SET_STATUS[status], status.value, time.time(), batch_id, owner)

    # ---- batch items
    async def claim_items(self, batch_id: str, owner: str, n: int, lease: float) -> list[Row]:
        """Claim up to n unrun lines (or lines whose owner's lease ran out), grouped by model, while the batch
        is in progress and inside its window. A line is never claimed once its result is stored."""
        now = time.time()
        return await self.db.fetch(
            q.ITEMS_CLAIM,
            batch_id, ItemState.PENDING.value, ItemState.RUNNING.value, now, batch_id,
            BatchStatus.IN_PROGRESS.value, now, n, ItemState.RUNNING.value, owner, now + lease, batch_id,
        )  # fmt: skip

    async def finish_item(self, batch_id: str, line_no: int, owner: str, request_id: str, out: LineOutcome) -> bool:
        """Store a line's result, only if this owner still holds it: a result is written exactly once."""
        return bool(
            await self.db.execute(
                q.ITEM_FINISH,
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
        rows = await self.db.fetch(q.ITEMS_LIVE, batch_id, ItemState.RUNNING.value, time.time())
        return int(rows[0]["n"])

    async def unrun_left(self, batch_id: str) -> int:
        rows = await self.db.fetch(q.ITEMS_IN_STATES, batch_id, ItemState.PENDING.value, ItemState.RUNNING.value)
        return int(rows[0]["n"])

    async def close_out_items(self, batch_id: str, state: ItemState) -> int:
        """Lines that never ran (pending, or running under a lease that ran out) become cancelled / expired."""
        return await self.db.execute(
            q.ITEMS_CLOSE_OUT,
            state.value, time.time(), batch_id, ItemState.PENDING.value, ItemState.RUNNING.value, time.time(),
        )  # fmt: skip

    async def items_page(self, batch_id: str, after_line: int, limit: int) -> list[Row]:
        return await self.db.fetch(q.ITEMS_PAGE, batch_id, after_line, limit)
