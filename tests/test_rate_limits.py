"""Per-key rate limits, server-level: requests/min, tokens/min and concurrency give 429 with Retry-After and
OpenAI's x-ratelimit-* headers on both surfaces; with Redis two replicas share one limit."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_upstreams import Behaviour, FakeUpstream
from server_process import ServerProcess, free_port, running_server

RPM_KEY = "vs-test-rpm"
TPM_KEY = "vs-test-tpm"
CONC_KEY = "vs-test-concurrency"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(Behaviour(tokens=5)) as fast, FakeUpstream(Behaviour(tokens=10, token_delay=0.1)) as slow:
        yield fast, slow


def _models(upstreams: tuple[FakeUpstream, FakeUpstream]) -> list[dict[str, Any]]:
    fast, slow = upstreams
    return [{"name": "fast", "engine": "openai", "url": fast.url, "remote_model": "fake"},
            {"name": "slow", "engine": "openai", "url": slow.url, "remote_model": "fake"}]  # fmt: skip


@pytest.fixture(scope="module")
def server(upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[ServerProcess]:
    config = {
        "embedded_models": False,
        "models": _models(upstreams),
        "rate_limit_rpm": 1000,
        "api_keys": [{"key": RPM_KEY, "rpm": 3}, {"key": TPM_KEY, "tpm": 5}, {"key": CONC_KEY, "concurrency": 1}],
    }
    with running_server(config) as proc:
        yield proc


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _chat(model: str = "fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def _clear_of_window_edge() -> None:
    """Limits count in clock-aligned minutes: don't start a counting test in a minute's last seconds."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


def test_requests_per_minute(server: ServerProcess) -> None:
    _clear_of_window_edge()
    with httpx.Client(base_url=server.url, timeout=30, headers=_auth(RPM_KEY)) as http:
        remaining = []
        for _ in range(3):
            ok = http.post("/v1/chat/completions", json=_chat())
            assert ok.status_code == 200, ok.text
            assert ok.headers["x-ratelimit-limit-requests"] == "3"
            assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
            remaining.append(ok.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["2", "1", "0"]
        refused = http.post("/v1/chat/completions", json=_chat())
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limit_requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        ollama = http.post("/api/chat", json={**_chat(), "stream": False})
        assert ollama.status_code == 429 and "rate limit" in ollama.json()["error"]
        assert "retry-after" in ollama.headers
    # another key has its own budget (the default, 1000/min)
    other = httpx.post(server.url + "/v1/chat/completions", json=_chat(), headers=_auth(TPM_KEY), timeout=30)
    assert other.status_code == 200 and other.headers["x-ratelimit-limit-requests"] == "1000"


def test_tokens_per_minute(server: ServerProcess) -> None:
    _clear_of_window_edge()
    with httpx.Client(base_url=server.url, timeout=30, headers=_auth(TPM_KEY)) as http:
        first = http.post("/v1/chat/completions", json=_chat())  # 1 prompt + 5 completion tokens >= 5
        assert first.status_code in (200, 429)
        refused = http.post("/v1/chat/completions", json=_chat())
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_tokens"
        assert "retry-after" in refused.headers


async def test_concurrency(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=_auth(CONC_KEY)) as http:
        slow = asyncio.create_task(http.post("/v1/chat/completions", json=_chat("slow")))
        await asyncio.sleep(0.3)
        refused = await http.post("/v1/chat/completions", json=_chat("fast"))
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_concurrency"
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


def test_redis_limit_holds_across_two_replicas(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    url = _redis_url()
    key_id = f"shared-{uuid.uuid4().hex[:8]}"  # fresh counters for every run
    config = {"embedded_models": False, "models": _models(upstreams), "redis_url": url,
              "api_keys": [{"key": "vs-test-shared", "id": key_id, "rpm": 4},
                           {"key": "vs-test-shared-conc", "id": f"{key_id}-conc", "concurrency": 1}]}  # fmt: skip
    with running_server(config) as one, running_server(config) as two:
        _clear_of_window_edge()
        statuses = []
        for i in range(8):
            server = (one, two)[i % 2]
            answer = httpx.post(server.url + "/v1/chat/completions", json=_chat(), headers=_auth("vs-test-shared"),
                                timeout=30)  # fmt: skip
            statuses.append(answer.status_code)
        assert statuses == [200] * 4 + [429] * 4, statuses
        asyncio.run(_one_in_flight_across(one, two))


async def _one_in_flight_across(one: ServerProcess, two: ServerProcess) -> None:
    auth = _auth("vs-test-shared-conc")
    async with httpx.AsyncClient(timeout=30, headers=auth) as http:
        slow = asyncio.create_task(http.post(one.url + "/v1/chat/completions", json=_chat("slow")))
        await asyncio.sleep(0.3)
        refused = await http.post(two.url + "/v1/chat/completions", json=_chat())
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_concurrency"
        assert (await slow).status_code == 200
        assert (await http.post(two.url + "/v1/chat/completions", json=_chat())).status_code == 200


def test_unreachable_redis_refuses_instead_of_dropping_limits(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    """No keys: the default limits apply to everyone; with their store down, answers are 503, never unlimited."""
    config = {"embedded_models": False, "models": _models(upstreams), "rate_limit_rpm": 5,
              "redis_url": f"redis://127.0.0.1:{free_port()}/0"}  # fmt: skip
    with running_server(config) as server:
        refused = httpx.post(server.url + "/v1/chat/completions", json=_chat(), timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "rate limit store unreachable" in refused.json()["error"]["message"]
        assert httpx.get(server.url + "/health", timeout=30).status_code == 200


def test_default_limits_without_keys(upstreams: tuple[FakeUpstream, FakeUpstream]) -> None:
    with running_server({"embedded_models": False, "models": _models(upstreams), "rate_limit_rpm": 2}) as server:
        _clear_of_window_edge()
        statuses = [httpx.get(server.url + "/v1/models", timeout=30).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
