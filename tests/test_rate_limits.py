"""Per-key rate limits: requests/min, tokens/min and concurrency give 429 with Retry-After and OpenAI's
x-ratelimit-* headers on both surfaces; with Redis two replicas share one limit.

Limits count in clock-aligned minutes. The counting tests run the app in-process (its real lifespan, the
gateway middleware, httpx's ASGI transport) with a limiter on a clock the test moves by hand: exact counts, the
window's end and the next window, no waiting for a minute's edge to pass. Concurrency and the refusal when
Redis is down run against a server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstreams import Behaviour, FakeUpstream
from server_process import ServerProcess, free_port, running_server

from vlmserve.api.app import create_app
from vlmserve.config import load_settings
from vlmserve.security.ratelimit import Clock, build_limiter

RPM_KEY = "vs-test-rpm"
TPM_KEY = "vs-test-tpm"
CONC_KEY = "vs-test-concurrency"
MID_WINDOW = 29_000_000 * 60 + 30.0  # half a minute into a window: 30 s left of it


class HandClock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self, now: float = MID_WINDOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(Behaviour(tokens=5)) as fast, FakeUpstream(Behaviour(tokens=10, token_delay=0.1)) as slow:
        yield fast, slow


def _models(upstreams: tuple[FakeUpstream, FakeUpstream]) -> list[dict[str, Any]]:
    fast, slow = upstreams
    return [{"name": "fast", "engine": "openai", "url": fast.url, "remote_model": "fake"},
            {"name": "slow", "engine": "openai", "url": slow.url, "remote_model": "fake"}]  # fmt: skip


@contextlib.asynccontextmanager
async def in_process(config: dict[str, Any], data_dir: Path, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, its limiter on `clock`, and a client that calls it through ASGI."""
    app = create_app(load_settings(None, data_dir=str(data_dir), **config))
    async with app.router.lifespan_context(app):
        security = app.state.vlm.security
        await security.limiter.close()
        security.limiter = build_limiter(app.state.vlm.settings.redis_url, clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://vlmserve.test", timeout=30) as http:
            yield http


@pytest.fixture
def keyed(upstreams: tuple[FakeUpstream, FakeUpstream]) -> dict[str, Any]:
    return {
        "embedded_models": False,
        "models": _models(upstreams),
        "rate_limit_rpm": 1000,
        "api_keys": [{"key": RPM_KEY, "rpm": 3}, {"key": TPM_KEY, "tpm": 5}, {"key": CONC_KEY, "concurrency": 1}],
    }


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _chat(model: str = "fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_requests_per_minute(keyed: dict[str, Any], tmp_path: Path) -> None:
    clock = HandClock()
    async with in_process(keyed, tmp_path, clock) as http:
        remaining = []
        for _ in range(3):
            ok = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(RPM_KEY))
            assert ok.status_code == 200, ok.text
            assert ok.headers["x-ratelimit-limit-requests"] == "3"
            assert ok.headers["x-ratelimit-reset-requests"] == "30s"
            remaining.append(ok.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        clock.now += 29.5  # half a second left of the window
        refused = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(RPM_KEY))
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limit_requests"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        ollama = await http.post("/api/chat", json={**_chat(), "stream": False}, headers=_auth(RPM_KEY))
        assert ollama.status_code == 429
        assert "rate limit" in ollama.json()["error"]
        assert ollama.headers["retry-after"] == "1"
        # another key has its own budget (the default, 1000/min)
        other = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(TPM_KEY))
        assert other.status_code == 200
        assert other.headers["x-ratelimit-limit-requests"] == "1000"
        clock.now += 0.5  # the next minute: a fresh budget
        again = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(RPM_KEY))
        assert again.status_code == 200
        assert again.headers["x-ratelimit-remaining-requests"] == "2"
        assert again.headers["x-ratelimit-reset-requests"] == "60s"


async def test_tokens_per_minute(keyed: dict[str, Any], tmp_path: Path) -> None:
    clock = HandClock()
    async with in_process(keyed, tmp_path, clock) as http:
        first = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(TPM_KEY))
        assert first.status_code == 200  # tokens are counted after the answer: 1 prompt + 5 completion >= 5
        assert first.json()["usage"]["total_tokens"] == 6
        refused = await http.post("/v1/chat/completions", json=_chat(), headers=_auth(TPM_KEY))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_tokens"
        assert refused.headers["retry-after"] == "30"
        clock.now += 30
        assert (await http.post("/v1/chat/completions", json=_chat(), headers=_auth(TPM_KEY))).status_code == 200


async def test_default_limits_without_keys(upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path) -> None:
    config = {"embedded_models": False, "models": _models(upstreams), "rate_limit_rpm": 2}
    async with in_process(config, tmp_path, HandClock()) as http:
        statuses = [(await http.get("/v1/models")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


async def _until_upstream_has(upstream: FakeUpstream, count: int) -> None:
    """Poll until `upstream` has received `count` requests: the slow one is then in flight."""
    deadline = time.monotonic() + 30
    while len(upstream.requests) < count:
        assert time.monotonic() < deadline, f"{len(upstream.requests)} upstream requests, waited for {count}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def server(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[ServerProcess]:
    config = {"embedded_models": False, "models": _models(upstreams), "api_keys": [{"key": CONC_KEY, "concurrency": 1}]}
    with running_server(config) as proc:
        yield proc


async def test_concurrency(server: ServerProcess, upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    _, slow_upstream = upstreams
    before = len(slow_upstream.requests)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=_auth(CONC_KEY)) as http:
        slow = asyncio.create_task(http.post("/v1/chat/completions", json=_chat("slow")))
        await _until_upstream_has(slow_upstream, before + 1)
        refused = await http.post("/v1/chat/completions", json=_chat("fast"))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_concurrency"
        assert refused.headers["retry-after"] == "1"
        assert (await slow).status_code == 200
        assert (await http.post("/v1/chat/completions", json=_chat("fast"))).status_code == 200


def _redis_url() -> str:
    url = os.environ.get("VLMSERVE_TEST_REDIS_URL")
    if not url:
        pytest.skip("VLMSERVE_TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {url} is unreachable: {exc}")
    return url


async def test_redis_limit_holds_across_two_replicas(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    """Two app instances (each its own keys, scheduler and batch store) share only Redis, on one hand clock."""
    url = _redis_url()
    key_id = f"shared-{uuid.uuid4().hex[:8]}"  # fresh counters for every run
    config = {"embedded_models": False, "models": _models(upstreams), "redis_url": url,
              "api_keys": [{"key": "vs-test-shared", "id": key_id, "rpm": 4},
                           {"key": "vs-test-shared-conc", "id": f"{key_id}-conc", "concurrency": 1}]}  # fmt: skip
    clock = HandClock()
    async with in_process(config, tmp_path / "one", clock) as one, in_process(config, tmp_path / "two", clock) as two:
        statuses = []
        for i in range(8):
            answer = await (one, two)[i % 2].post("/v1/chat/completions", json=_chat(), headers=_auth("vs-test-shared"))
            statuses.append(answer.status_code)
        assert statuses == [200] * 4 + [429] * 4, statuses
        _, slow_upstream = upstreams
        before = len(slow_upstream.requests)
        conc = _auth("vs-test-shared-conc")
        slow = asyncio.create_task(one.post("/v1/chat/completions", json=_chat("slow"), headers=conc))
        await _until_upstream_has(slow_upstream, before + 1)
        refused = await two.post("/v1/chat/completions", json=_chat(), headers=conc)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_concurrency"
        assert (await slow).status_code == 200
        assert (await two.post("/v1/chat/completions", json=_chat(), headers=conc)).status_code == 200


def test_unreachable_redis_refuses_instead_of_dropping_limits(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    """No keys: the default limits apply to everyone; with their store down, answers are 503, never unlimited."""
    config = {"embedded_models": False, "models": _models(upstreams), "rate_limit_rpm": 5,
              "redis_url": f"redis://127.0.0.1:{free_port()}/0"}  # fmt: skip
    with running_server(config) as server:
        refused = httpx.post(server.url + "/v1/chat/completions", json=_chat(), timeout=30)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "rate limit store unreachable" in refused.json()["error"]["message"]
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200
