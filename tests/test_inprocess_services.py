"""ChatService, fallback, the gateway and the surface adapters, in process (the app's real lifespan through
httpx's ASGI transport; remote models on fake upstreams over TCP). The subprocess tests check the same through a
real socket; these run in milliseconds and show which layer broke."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fake_upstreams import Behaviour, FakeUpstream, expected_text, fake_embedding
from inprocess_app import in_process_client

CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream(Behaviour(tokens=5)) as healthy, FakeUpstream(Behaviour(error_status=500)) as broken:
        yield healthy, broken


def _config(upstreams: tuple[FakeUpstream, FakeUpstream], **extra: Any) -> dict[str, Any]:
    healthy, broken = upstreams
    models = [
        {"name": "fast", "engine": "openai", "url": healthy.url, "remote_model": "fake-remote"},
        {"name": "flaky", "engine": "openai", "url": broken.url, "remote_model": "fake", "fallbacks": ["fast"]},
        {"name": "lonely", "engine": "openai", "url": broken.url, "remote_model": "fake"},
    ]
    return {"models": models, "default_model": "fast", **extra}


async def test_both_surfaces_reach_one_chat_service(upstreams: tuple[FakeUpstream, FakeUpstream],
                                                    tmp_path: Path) -> None:  # fmt: skip
    healthy, _ = upstreams
    async with in_process_client(_config(upstreams), tmp_path) as client:
        openai = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3})
        assert openai.status_code == 200, openai.text
        assert openai.json()["choices"][0]["message"]["content"] == expected_text(3)
        assert openai.json()["model"] == "fast"  # the catalog name, not the upstream's
        sent = healthy.last_body("/v1/chat/completions")
        assert sent["model"] == "fake-remote"
        assert sent["max_tokens"] == 3
        assert sent["messages"] == [{"role": "user", "content": "hi"}]

        ollama = await client.post("/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": 4}})
        assert ollama.status_code == 200, ollama.text
        assert ollama.json()["message"] == {"role": "assistant", "content": expected_text(4)}
        assert ollama.json()["done"] is True
        assert ollama.json()["eval_count"] == 4
        assert healthy.last_body("/v1/chat/completions")["max_tokens"] == 4  # num_predict became max_tokens


async def test_streams_on_both_surfaces(upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path) -> None:
    async with in_process_client(_config(upstreams), tmp_path) as client:
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
            assert stream.status_code == 200
            events = [line[6:] async for line in stream.aiter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        deltas = [orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if "choices" in e]
        assert "".join(deltas) == expected_text(5)

        async with client.stream("POST", "/api/chat", json=CHAT) as stream:
            lines = [orjson.loads(line) async for line in stream.aiter_lines() if line]
        assert "".join(line["message"]["content"] for line in lines) == expected_text(5)
        assert [line["done"] for line in lines].count(True) == 1
        assert lines[-1]["done"] is True


async def test_fallback_answers_and_names_the_model_asked(upstreams: tuple[FakeUpstream, FakeUpstream],
                                                          tmp_path: Path) -> None:  # fmt: skip
    async with in_process_client(_config(upstreams), tmp_path) as client:
        answer = await client.post("/v1/chat/completions", json={**CHAT, "model": "flaky"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == expected_text(5)
        assert answer.headers["x-vlmserve-fallback-from"] == "flaky"
        alone = await client.post("/v1/chat/completions", json={**CHAT, "model": "lonely"})
        assert alone.status_code == 502, alone.text  # no fallback: the engine's failure, in OpenAI's shape
        assert alone.json()["error"]["type"] == "engine_error"
        assert "x-vlmserve-fallback-from" not in alone.headers
        ollama = await client.post("/api/chat", json={**CHAT, "model": "lonely", "stream": False})
        assert ollama.status_code == 502
        assert isinstance(ollama.json()["error"], str)  # Ollama's shape: a string


async def test_gateway_keys_ids_and_sizes(upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path) -> None:
    config = _config(upstreams, api_keys=["vs-inproc-key"], max_request_bytes=4096)
    async with in_process_client(config, tmp_path) as client:
        missing = await client.post("/v1/chat/completions", json=CHAT)
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        assert isinstance((await client.post("/api/chat", json=CHAT)).json()["error"], str)

        auth = {"Authorization": "Bearer vs-inproc-key", "X-Request-ID": "inproc-rid-1"}
        served = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert served.status_code == 200, served.text
        assert served.headers["x-request-id"] == "inproc-rid-1"

        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 8192}]}
        refused = await client.post("/v1/chat/completions", json=big, headers=auth)
        assert refused.status_code == 413
        assert refused.json()["error"]["type"] == "invalid_request_error"
        again = await client.post("/v1/chat/completions", json=CHAT, headers=auth)  # no lasting damage
        assert again.status_code == 200

        unknown = await client.get("/v1/nothing-here", headers=auth)
        assert unknown.status_code == 404
        assert "error" in unknown.json()


async def test_the_other_adapters_reach_the_same_services(upstreams: tuple[FakeUpstream, FakeUpstream],
                                                          tmp_path: Path) -> None:  # fmt: skip
    """Anthropic's /v1/messages, the two completion routes and both embedding routes, beside the chat ones."""
    healthy, _ = upstreams
    config = _config(upstreams)
    config["models"].append({"name": "vectors", "engine": "openai", "url": healthy.url, "remote_model": "fake-embed",
                             "capabilities": ["embedding"]})  # fmt: skip
    async with in_process_client(config, tmp_path) as client:
        anthropic = await client.post("/v1/messages", json={**CHAT, "max_tokens": 2})
        assert anthropic.status_code == 200, anthropic.text
        assert anthropic.json()["content"] == [{"type": "text", "text": expected_text(2)}]
        assert anthropic.json()["stop_reason"] == "max_tokens"
        assert healthy.last_body("/v1/chat/completions")["max_tokens"] == 2

        legacy = await client.post("/v1/completions", json={"model": "fast", "prompt": "hi", "max_tokens": 3})
        assert legacy.status_code == 200, legacy.text
        assert legacy.json()["choices"][0]["text"] == expected_text(3)
        generated = await client.post("/api/generate", json={"model": "fast", "prompt": "hi", "stream": False,
                                                             "options": {"num_predict": 3}})  # fmt: skip
        assert generated.status_code == 200, generated.text
        assert generated.json()["response"] == expected_text(3)

        openai = await client.post("/v1/embeddings", json={"model": "vectors", "input": ["a cat", "a dog"]})
        assert openai.status_code == 200, openai.text
        vectors = [item["embedding"] for item in openai.json()["data"]]
        assert vectors == [fake_embedding("a cat"), fake_embedding("a dog")]
        ollama = await client.post("/api/embed", json={"model": "vectors", "input": "a cat"})
        assert ollama.status_code == 200, ollama.text
        assert ollama.json()["embeddings"] == [fake_embedding("a cat")]
        assert healthy.last_body("/v1/embeddings")["model"] == "fake-embed"
