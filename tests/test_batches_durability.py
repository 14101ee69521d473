"""Batches survive kill -9: a restarted server (SQLite or PostgreSQL) finishes the batch, every custom_id
appears exactly once in the output, and no line whose result was stored runs again. Two server processes
on one PostgreSQL share a batch's lines without running one twice.

PostgreSQL tests run when VLMSERVE_TEST_POSTGRES_DSN names a reachable server (`.ci/run` sets it), each
in a fresh schema that is dropped afterwards; otherwise they skip and say why.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_helpers import POSTGRES_DSN, chat_line, drop_schema, fresh_schema, jsonl, output_lines, wait_batch
from fake_upstreams import Behaviour, FakeUpstream
from openai import OpenAI
from server_process import ServerProcess, running_server

LINES = 300
CONCURRENCY = 8
pytestmark = pytest.mark.slow


def _postgres_reachable(dsn: str) -> str | None:
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    if not POSTGRES_DSN:
        pytest.skip("PostgreSQL tests need VLMSERVE_TEST_POSTGRES_DSN (e.g. postgresql://postgres@127.0.0.1/test)")
    if (problem := _postgres_reachable(POSTGRES_DSN)) is not None:
        pytest.skip(f"PostgreSQL at VLMSERVE_TEST_POSTGRES_DSN is not reachable: {problem}")
    schema = fresh_schema()
    try:
        yield POSTGRES_DSN, schema
    finally:
        drop_schema(POSTGRES_DSN, schema)


@pytest.fixture
def fakes() -> Iterator[list[FakeUpstream]]:
    behaviour = Behaviour(tokens=2, initial_delay=0.05)
    with FakeUpstream(behaviour) as first, FakeUpstream(Behaviour(tokens=2, initial_delay=0.05)) as second:
        yield [first, second]


def _config(fake: FakeUpstream, store: dict[str, Any]) -> dict[str, Any]:
    model = {"name": "slow", "engine": "openai", "url": f"{fake.url}/v1", "remote_model": "fake", "parallel": 8}
    return {
        "embedded_models": False,
        "models": [model],
        "batch_concurrency": CONCURRENCY,
        "batch_lease": 2.0,
        "batch_poll_interval": 0.1,
        **store,
    }


def _submit(server: ServerProcess) -> tuple[OpenAI, str]:
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    file = client.files.create(file=("in.jsonl", jsonl([chat_line(f"id-{i}") for i in range(LINES)])), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    return client, batch.id


def _wait_progress(client: OpenAI, batch_id: str, at_least: int) -> int:
    deadline = time.monotonic() + 60
    while True:
        counts = client.batches.retrieve(batch_id).request_counts
        done = counts.completed if counts else 0
        if done >= at_least:
            return done
        assert time.monotonic() < deadline, f"no progress: {counts}"
        time.sleep(0.02)


def _upstream_runs(fakes: list[FakeUpstream]) -> Counter[str]:
    """custom_id -> times the engine was asked for it (the prompt is 'hello <custom_id>')."""
    runs: Counter[str] = Counter()
    for fake in fakes:
        for rec in fake.requests:
            if rec.path == "/v1/chat/completions":
                runs[rec.body["messages"][0]["content"].removeprefix("hello ")] += 1
    return runs


def _check_exactly_once(client: OpenAI, batch_id: str, fakes: list[FakeUpstream], killed: int) -> None:
    batch = wait_batch(client, batch_id, timeout=90)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (LINES, 0)
    out = output_lines(client, batch.output_file_id)
    ids = Counter(line["custom_id"] for line in out)
    assert len(out) == LINES and set(ids) == {f"id-{i}" for i in range(LINES)}
    assert max(ids.values()) == 1
    runs = _upstream_runs(fakes)
    assert set(runs) == set(ids)
    # only lines in flight at a kill (at most `concurrency` per killed process) may have reached the engine twice
    assert sum(n - 1 for n in runs.values()) <= CONCURRENCY * killed


def _crash_and_resume(config: dict[str, Any], fakes: list[FakeUpstream]) -> None:
    with running_server(config) as first:
        client, batch_id = _submit(first)
        done_at_kill = _wait_progress(client, batch_id, LINES // 4)
        first.proc.kill()  # SIGKILL: no shutdown hook runs, its leases are simply left behind
        first.proc.wait()
    assert done_at_kill < LINES
    with running_server(config) as second:
        client = OpenAI(base_url=f"{second.url}/v1", api_key="unused", max_retries=0)
        _check_exactly_once(client, batch_id, fakes, killed=1)


def test_kill_9_and_restart_sqlite(tmp_path: Path, fakes: list[FakeUpstream]) -> None:
    _crash_and_resume(_config(fakes[0], {"data_dir": str(tmp_path / "data")}), fakes)


def test_kill_9_and_restart_postgres(
    tmp_path: Path, fakes: list[FakeUpstream], postgres_schema: tuple[str, str]
) -> None:
    dsn, schema = postgres_schema
    store = {"database_url": dsn, "database_schema": schema, "data_dir": str(tmp_path / "data")}
    _crash_and_resume(_config(fakes[0], store), fakes)


def test_two_processes_share_a_batch_on_postgres(
    tmp_path: Path, fakes: list[FakeUpstream], postgres_schema: tuple[str, str]
) -> None:
    dsn, schema = postgres_schema
    store = {"database_url": dsn, "database_schema": schema}
    config_a = _config(fakes[0], {**store, "data_dir": str(tmp_path / "a")})
    config_b = _config(fakes[1], {**store, "data_dir": str(tmp_path / "b")})  # same model name, its own engine
    with running_server(config_a) as a, running_server(config_b) as b:
        client_a, batch_id = _submit(a)
        _wait_progress(client_a, batch_id, LINES // 3)
        a.proc.kill()  # B goes on, and takes over A's claimed lines once their leases run out
        a.proc.wait()
        client_b = OpenAI(base_url=f"{b.url}/v1", api_key="unused", max_retries=0)
        _check_exactly_once(client_b, batch_id, fakes, killed=1)
    assert all(any(r.path == "/v1/chat/completions" for r in fake.requests) for fake in fakes), "both did work"
