"""The store on SQLite and (when VLMSERVE_TEST_POSTGRES_DSN is reachable) PostgreSQL: migrations, files,
claims with leases, exactly-once results, cancel and finalization, jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from batch_helpers import POSTGRES_DSN, chat_line, fresh_schema, jsonl

from vlmserve.jobs.db import PostgresDriver, migrate, open_driver
from vlmserve.jobs.model import BatchStatus, ItemState, LineOutcome
from vlmserve.jobs.store import Store
from vlmserve.jobs.validate import parse_batch_input
from vlmserve.jobs.worker import BatchWorker, WorkerConfig

URL = "/v1/chat/completions"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        driver = await open_driver(None, tmp_path)
        files_dir: Path | None = tmp_path / "files"
    else:
        if not POSTGRES_DSN:
            pytest.skip("PostgreSQL tests need VLMSERVE_TEST_POSTGRES_DSN")
        schema = fresh_schema()
        try:
            driver = await open_driver(POSTGRES_DSN, tmp_path, schema)
        except OSError as exc:
            pytest.skip(f"PostgreSQL at VLMSERVE_TEST_POSTGRES_DSN is not reachable: {exc}")
        files_dir = None
    store = Store(driver, files_dir)
    try:
        yield store
    finally:
        if request.param == "postgres":
            await driver.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await store.close()


async def _batch(store: Store, n: int, owner: str = "v") -> str:
    file = await store.files.create_file("batch", "in.jsonl", jsonl([chat_line(f"id{i}") for i in range(n)]))
    batch = await store.batches.create_batch(URL, file["id"], "24h", 3600, None)
    assert await store.batches.claim_batch(batch["id"], owner, 30, BatchStatus.VALIDATING)
    lines, errors = parse_batch_input(await store.files.file_content(file["id"]), URL, 1000, lambda e, m: None)
    assert not errors and await store.batches.start_batch(batch["id"], owner, lines)
    return str(batch["id"])


async def test_migrations_are_idempotent(store: Store) -> None:
    assert await migrate(store.db) == []


async def test_files_roundtrip_and_pagination(store: Store) -> None:
    data = b"x" * (5 * 1024 * 1024)  # more than one chunk in PostgreSQL mode
    big = await store.files.create_file("user_data", "big.bin", data)
    assert await store.files.file_content(big["id"]) == data
    ids = [(await store.files.create_file("user_data", f"{i}", b"1"))["id"] for i in range(3)]
    rows, more = await store.files.list_files("user_data", 2, "asc", None)
    assert [r["id"] for r in rows] == [big["id"], ids[0]] and more
    assert await store.files.delete_file(big["id"]) and await store.files.get_file(big["id"]) is None
    gone = await store.files.create_file("user_data", "old", b"1", expires_at=time.time() - 1)
    assert await store.files.get_file(gone["id"]) is None and await store.files.purge_expired_files() == 1


async def test_concurrent_claims_never_share_a_line(store: Store) -> None:
    batch_id = await _batch(store, 60)
    claims = await asyncio.gather(*(store.batches.claim_items(batch_id, f"w{i}", 7, 30) for i in range(12)))
    assert all(len(rows) <= 7 for rows in claims)
    lines = [row["line_no"] for rows in claims for row in rows]
    assert sorted(lines) == list(range(1, 61))


async def test_results_are_stored_once_and_leases_expire(store: Store) -> None:
    batch_id = await _batch(store, 3)
    first = await store.batches.claim_items(batch_id, "dead", 3, 0.01)
    deadline = time.monotonic() + 5
    while not (second := await store.batches.claim_items(batch_id, "alive", 3, 30)):
        assert time.monotonic() < deadline, "a lease of 0.01 s never ran out"  # "dead" never renews
        await asyncio.sleep(0.01)
    assert {r["line_no"] for r in second} == {r["line_no"] for r in first}
    assert all(r["attempts"] == 2 for r in second)
    ok = LineOutcome(200, {"ok": True}, 1, 2)
    assert await store.batches.finish_item(batch_id, 1, "alive", "r1", ok)
    assert not await store.batches.finish_item(batch_id, 2, "dead", "r2", ok)  # lost its claim: result dropped
    assert not await store.batches.finish_item(batch_id, 1, "alive", "r1", ok)  # stored already
    await store.leases.release("alive")
    assert {r["line_no"] for r in await store.batches.claim_items(batch_id, "x", 5, 30)} == {2, 3}
    counts = await store.batches.batch_counts(batch_id)
    assert counts[ItemState.SUCCEEDED] == (1, 1, 2) and counts[ItemState.RUNNING][0] == 2


async def test_cancel_stops_claims_and_worker_finalizes(store: Store) -> None:
    batch_id = await _batch(store, 4)
    [row] = await store.batches.claim_items(batch_id, "w", 1, 30)
    assert await store.batches.finish_item(batch_id, row["line_no"], "w", "r", LineOutcome(200, {"n": 1}))
    assert await store.batches.request_cancel(batch_id) and not await store.batches.request_cancel(batch_id)
    assert await store.batches.claim_items(batch_id, "w", 5, 30) == []

    async def never(endpoint: str, body: dict[str, Any]) -> LineOutcome:
        raise AssertionError("nothing runs after cancel")

    async def no_jobs(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    worker = BatchWorker(store, never, no_jobs, lambda e, m: None, WorkerConfig(poll=0.05))
    await worker.tick()
    batch = await store.batches.get_batch(batch_id)
    assert batch is not None and batch["status"] == BatchStatus.CANCELLED
    out = await store.files.file_content(batch["output_file_id"])
    errors = [orjson.loads(x) for x in (await store.files.file_content(batch["error_file_id"])).splitlines()]
    assert len(out.splitlines()) == 1 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len(errors) == 3


async def test_jobs_claim_and_finish(store: Store) -> None:
    job = await store.jobs.create_job("analyze", {"prompt": "p"})
    [claimed] = await store.jobs.claim_jobs("w", 5, 30)
    assert claimed["id"] == job["id"] and await store.jobs.claim_jobs("other", 5, 30) == []
    assert await store.jobs.finish_job(job["id"], "w", {"response": "r"}, None)
    done = await store.jobs.get_job(job["id"])
    assert done is not None and done["status"] == "complete" and orjson.loads(done["result"]) == {"response": "r"}


async def test_postgres_rejects_odd_schema_names() -> None:
    with pytest.raises(ValueError):
        await PostgresDriver.open("postgresql://unused", 'x"; DROP TABLE y; --')
