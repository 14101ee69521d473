"""Helpers for the batch tests: JSONL input files, polling, the PostgreSQL DSN of this run."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import orjson
from openai import OpenAI
from openai.types import Batch

TERMINAL = {"completed", "failed", "expired", "cancelled"}
POSTGRES_DSN = os.environ.get("VLMSERVE_TEST_POSTGRES_DSN")


def chat_line(custom_id: str, model: str = "slow", url: str = "/v1/chat/completions", **extra: Any) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": f"hello {custom_id}"}], "max_tokens": 3}
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra})


def jsonl(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def wait_batch(client: OpenAI, batch_id: str, timeout: float = 60.0, until: set[str] = TERMINAL) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s: {batch.request_counts}")
        time.sleep(0.1)


def output_lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line.strip()]


def fresh_schema() -> str:
    return f"vlm_test_{uuid.uuid4().hex[:12]}"


def drop_schema(dsn: str, schema: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
