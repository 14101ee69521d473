"""Embeddings inputs: `truncate: false` past the model's context is Ollama's 400, and inputs too large to embed are
refused (413) before any engine work instead of crashing the runner with native stack frames in the message."""

from __future__ import annotations

import httpx
import pytest
from server_process import ServerProcess

LONG = "word " * 1000  # ~1000 tokens: past all-MiniLM's 256


def test_truncate_false_past_the_context_is_a_400(capped_server: ServerProcess) -> None:
    url = capped_server.url + "/api/embed"
    refused = httpx.post(url, json={"model": "all-minilm", "input": ["short", LONG], "truncate": False}, timeout=120)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {"error": "the input length exceeds the context length"}
    # what fits is embedded, and truncating (the default) still takes the long input
    fits = httpx.post(url, json={"model": "all-minilm", "input": "short text", "truncate": False}, timeout=120)
    assert fits.status_code == 200 and len(fits.json()["embeddings"]) == 1, fits.text
    truncated = httpx.post(url, json={"model": "all-minilm", "input": LONG}, timeout=120)
    assert truncated.status_code == 200, truncated.text
    assert truncated.json()["prompt_eval_count"] <= 256


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_a_huge_input_is_413_before_the_engine(capped_server: ServerProcess, path: str) -> None:
    body = {"model": "all-minilm", "input": "word " * (10 * 2**20)}  # 50 MiB of text in one input
    response = httpx.post(capped_server.url + path, json=body, timeout=120)
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert "bytes" in message and "input" in message and "|" not in message, message  # no stack frames


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_many_inputs_past_the_total_are_413(capped_server: ServerProcess, path: str) -> None:
    body = {"model": "all-minilm", "input": ["word " * (50 * 1024)] * 20}  # 20 inputs of 250 KiB: 5 MB
    response = httpx.post(capped_server.url + path, json=body, timeout=120)
    assert response.status_code == 413, response.text[:300]
    # the runner is still there and answers
    ok = httpx.post(capped_server.url + path, json={"model": "all-minilm", "input": "hello"}, timeout=120)
    assert ok.status_code == 200, ok.text[:300]
