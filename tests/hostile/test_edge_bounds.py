"""Numbers past what engines take (beyond 64 bits, 1e30, int32 wrap-around) and loosely typed booleans: a 400
in the surface's format at the edge, never a 5xx or a value that wraps at the engine."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from server_process import ServerProcess

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3}
COMPLETION = {"model": "smollm2", "prompt": "Hello", "max_tokens": 3}
EMBED = {"model": "all-minilm", "input": "hello"}
OLLAMA_CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "stream": False,
               "options": {"num_predict": 3}}  # fmt: skip
OLLAMA_GENERATE = {"model": "smollm2", "prompt": "Say hi.", "stream": False, "options": {"num_predict": 3}}
BIG = 2**64
ONE_BEYOND_INT64 = 2**63


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    merged = {**base, **changes}
    if "options" in changes and "options" in base:
        merged["options"] = {**base["options"], **changes["options"]}
    return merged


CASES: list[tuple[str, dict[str, Any], str]] = [  # (path, body, the param the 400 names)
    ("/v1/chat/completions", _with(CHAT, max_tokens=10**12), "max_tokens"),  # wrapped negative at the engine
    ("/v1/chat/completions", _with(CHAT, max_tokens=BIG), "max_tokens"),
    ("/v1/chat/completions", _with(CHAT, max_completion_tokens=10**12), "max_completion_tokens"),
    ("/v1/chat/completions", _with(CHAT, seed=BIG), "seed"),
    ("/v1/chat/completions", _with(CHAT, seed=-BIG), "seed"),
    ("/v1/chat/completions", _with(CHAT, top_k=ONE_BEYOND_INT64), "top_k"),
    ("/v1/chat/completions", _with(CHAT, top_k=10**7), "top_k"),
    ("/v1/chat/completions", _with(CHAT, keep_alive=1e300), "keep_alive"),
    ("/v1/chat/completions", _with(CHAT, stream="yes"), "stream"),
    ("/v1/chat/completions", _with(CHAT, stream="true"), "stream"),
    ("/v1/chat/completions", _with(CHAT, stream=1), "stream"),
    ("/v1/chat/completions", _with(CHAT, stream=True, stream_options={"include_usage": "true"}),
     "stream_options.include_usage"),
    ("/v1/completions", _with(COMPLETION, max_tokens=10**12), "max_tokens"),
    ("/v1/completions", _with(COMPLETION, seed=BIG), "seed"),
    ("/v1/completions", _with(COMPLETION, echo="yes"), "echo"),
    ("/v1/embeddings", _with(EMBED, dimensions=BIG), "dimensions"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"seed": BIG}), "options.seed"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"top_k": BIG}), "options.top_k"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"num_predict": BIG}), "options.num_predict"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"num_predict": 10**12}), "options.num_predict"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"num_ctx": 2**40}), "options.num_ctx"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"num_thread": 10**6}), "options.num_thread"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"num_gpu": ONE_BEYOND_INT64}), "options.num_gpu"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"temperature": 1e300}), "options.temperature"),
    ("/api/chat", _with(OLLAMA_CHAT, options={"repeat_penalty": 1e300}), "options.repeat_penalty"),
    ("/api/chat", _with(OLLAMA_CHAT, keep_alive=1e300), "keep_alive"),
    ("/api/chat", _with(OLLAMA_CHAT, stream="yes"), "stream"),
    ("/api/generate", _with(OLLAMA_GENERATE, options={"seed": -BIG}), "options.seed"),
    ("/api/generate", _with(OLLAMA_GENERATE, options={"num_predict": 10**12}), "options.num_predict"),
    ("/api/generate", _with(OLLAMA_GENERATE, raw="true"), "raw"),
    ("/api/embed", _with(EMBED, truncate="false"), "truncate"),
    ("/api/embed", _with(EMBED, dimensions=BIG), "dimensions"),
    ("/api/embeddings", {"model": "all-minilm", "prompt": "hi", "options": {"num_ctx": BIG}}, "options.num_ctx"),
    ("/api/show", {"model": "smollm2", "verbose": "yes"}, "verbose"),
]  # fmt: skip


def _assert_400(response: httpx.Response, path: str, param: str) -> None:
    """A 400 of the wire validation, naming the field (not an engine's refusal of a value that wrapped)."""
    assert response.status_code == 400, (path, response.status_code, response.text[:300])
    body = response.json()
    if path.startswith("/v1/"):
        assert body["error"]["type"] == "invalid_request_error", body
        assert body["error"]["param"] == param, body
    else:
        assert isinstance(body["error"], str) and param in body["error"], body


@pytest.mark.parametrize(("path", "body", "param"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_overflowing_numbers_and_loose_booleans_are_400(
    capped_server: ServerProcess, path: str, body: dict[str, Any], param: str
) -> None:
    _assert_400(httpx.post(capped_server.url + path, json=body, timeout=120), path, param)


def test_max_tokens_form_field_is_bounded(capped_server: ServerProcess) -> None:
    files = {"image": ("a.png", b"not an image")}
    response = httpx.post(capped_server.url + "/process", files=files, data={"max_tokens": str(10**12)}, timeout=60)
    _assert_400(response, "/process", "'max_tokens'")


@pytest.mark.parametrize("window", ["99999999999h", "169h"])
def test_completion_window_is_bounded(capped_server: ServerProcess, window: str) -> None:
    up = httpx.post(capped_server.url + "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"})
    assert up.status_code == 200, up.text
    body = {"input_file_id": up.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": window}
    response = httpx.post(capped_server.url + "/v1/batches", json=body)
    _assert_400(response, "/v1/batches", "completion_window")


def test_every_wire_number_has_an_upper_bound(capped_server: ServerProcess) -> None:
    """The mechanism: every integer or number a request schema (body or query) declares has a maximum."""
    schema = httpx.get(capped_server.url + "/openapi.json").json()
    unbounded: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("integer", "number") and "maximum" not in node and "exclusiveMaximum" not in node:
                unbounded.append(where)
            for key, value in node.items():
                visit(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}[{i}]")

    for name, component in schema["components"]["schemas"].items():
        if name not in ("HTTPValidationError", "ValidationError"):
            visit(component, name)
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            visit(operation.get("parameters", []), f"{method.upper()} {path}")
    assert not unbounded, unbounded


def test_seeds_map_into_the_engines_range(capped_server: ServerProcess) -> None:
    """A 64-bit seed is accepted and reduced modulo 2**32 (as Ollama does): seed s and s + 2**32 answer alike."""
    answers = []
    for seed in (7, 7 + 2**32, 2**63 - 1 - (2**63 - 1) % 2**32 + 7):
        body = _with(CHAT, seed=seed, temperature=1.5, max_tokens=8)
        response = httpx.post(capped_server.url + "/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        answers.append(response.json()["choices"][0]["message"]["content"])
    assert answers[0] == answers[1] == answers[2]
    ollama = _with(OLLAMA_CHAT, options={"seed": -1})  # Ollama's "random seed"
    assert httpx.post(capped_server.url + "/api/chat", json=ollama, timeout=120).status_code == 200
