"""Load, server-level: 500 concurrent clients against one remote model (a fake engine process that takes ~50 ms
per request, `parallel: 4`, `max_queue: 16`), on both surfaces, streaming and not. The server must refuse what
it cannot queue with 429/503 + Retry-After, answer everything it admits completely, never fail with another
5xx, and keep its memory bounded. Figures print with `-s`:

    .venv/bin/python -m pytest tests/test_load.py -s -q
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from fake_upstreams import upstream_process
from server_process import ServerProcess, running_server

pytestmark = pytest.mark.slow
CLIENTS = 500
REQUESTS_PER_CLIENT = 2
# 500 open connections cost uvicorn + asyncio some KB each and the queue holds 16 small requests: tens of MB at
# most. 200 MB above the warmed-up baseline leaves room for allocator noise while still catching a leak of
# request bodies or per-connection state (1000 requests x 200 KB would break it).
RSS_HEADROOM_MB = 200


@dataclass
class Outcome:
    surface: str
    stream: bool
    status: int
    retry_after: bool
    complete: bool
    seconds: float
    error: str = ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with upstream_process("--initial-delay", "0.05", "--tokens", "5") as upstream_url:
        model = {"name": "m", "engine": "openai", "url": upstream_url, "remote_model": "fake", "parallel": 4}
        config = {"embedded_models": False, "models": [model], "max_queue": 16,
                  "data_dir": str(tmp_path_factory.mktemp("load-data")), "log_level": "warning"}  # fmt: skip
        with running_server(config) as proc:
            yield proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _complete(surface: str, stream: bool, raw: bytes) -> bool:
    """A whole answer: text, a finish reason / done flag, and (streams) the closing event."""
    if surface == "openai" and not stream:
        choice = orjson.loads(raw)["choices"][0]
        return bool(choice["message"]["content"]) and choice["finish_reason"] in ("stop", "length")
    if surface == "openai":
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        text = "".join((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                       for e in events[:-1])  # fmt: skip
        return events[-1:] == ["[DONE]"] and bool(text)
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    text = "".join(line.get("message", {}).get("content", "") for line in lines)
    return (len(lines) == 1) != stream and lines[-1]["done"] is True and bool(text)


async def _one(session: aiohttp.ClientSession, base: str, index: int) -> Outcome:
    surface = "openai" if index % 2 == 0 else "ollama"
    stream = index % 4 >= 2
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"hello {index}"}],
                            "stream": stream}  # fmt: skip
    path = "/v1/chat/completions" if surface == "openai" else "/api/chat"
    began = time.perf_counter()
    try:
        async with session.post(base + path, json=body) as response:
            raw = await response.read()
            complete = response.status == 200 and _complete(surface, stream, raw)
            return Outcome(surface, stream, response.status, "Retry-After" in response.headers, complete,
                           time.perf_counter() - began)  # fmt: skip
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(surface, stream, 0, False, False, time.perf_counter() - began, repr(exc))


async def _storm(base: str) -> list[Outcome]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client(number: int) -> list[Outcome]:
            return [await _one(session, base, number * REQUESTS_PER_CLIENT + i) for i in range(REQUESTS_PER_CLIENT)]

        results = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return [outcome for per_client in results for outcome in per_client]


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_mb(pid))
        await asyncio.sleep(0.05)


async def _run(server: ServerProcess) -> tuple[list[Outcome], float, float]:
    stop, peak = asyncio.Event(), [0.0]
    sampler = asyncio.create_task(_sample_rss(server.proc.pid, peak, stop))
    began = time.perf_counter()
    outcomes = await _storm(server.url)
    wall = time.perf_counter() - began
    stop.set()
    await sampler
    return outcomes, peak[0], wall


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def test_500_concurrent_clients(server: ServerProcess) -> None:
    async def warm_up() -> None:  # the baseline counts a served request's imports and pools, not a cold process
        async with aiohttp.ClientSession() as session:
            for index in range(8):
                outcome = await _one(session, server.url, index)
                assert outcome.status == 200 and outcome.complete, outcome

    asyncio.run(warm_up())
    before = rss_mb(server.proc.pid)
    outcomes, peak, wall = asyncio.run(_run(server))
    after = rss_mb(server.proc.pid)

    by_status = Counter(o.status for o in outcomes)
    ok = [o.seconds for o in outcomes if o.status == 200]
    print(f"\nload: {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests in {wall:.1f} s; status counts "
          f"{dict(sorted(by_status.items()))}; by surface "
          f"{dict(Counter((o.surface, o.stream, o.status) for o in outcomes))}")  # fmt: skip
    print(
        f"latency all p50 {statistics.median(o.seconds for o in outcomes) * 1000:.0f} ms "
        f"p99 {_percentile([o.seconds for o in outcomes], 0.99) * 1000:.0f} ms; "
        f"200s p50 {_percentile(ok, 0.5) * 1000:.0f} ms p99 {_percentile(ok, 0.99) * 1000:.0f} ms"
    )
    refused = [o for o in outcomes if o.status in (429, 503)]
    print(
        f"refusals with Retry-After: {sum(o.retry_after for o in refused)}/{len(refused)}; "
        f"RSS before {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB"
    )

    errors = [o.error for o in outcomes if o.status == 0]
    assert not errors, f"{len(errors)} client errors, e.g. {errors[:3]}"
    assert not [o for o in outcomes if o.status >= 500 and o.status != 503], by_status
    assert set(by_status) <= {200, 429, 503}, by_status
    assert all(o.retry_after for o in refused)
    assert all(o.complete for o in outcomes if o.status == 200)
    assert by_status[200] >= 4 + 16  # at least what fits in the engine slots and the queue at once
    assert {o.surface for o in outcomes if o.status == 200} == {"openai", "ollama"}
    assert peak < before + RSS_HEADROOM_MB and after < before + RSS_HEADROOM_MB
