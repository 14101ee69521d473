"""Structured logs, server-level: with `log_format: json` every line the server writes is one JSON object, each
request has one access record (method, path, status, duration, model, key id, request id), and neither API key
secrets nor image payloads nor prompts ever reach the log."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fake_upstreams import FakeUpstream
from PIL import Image
from server_process import ServerProcess, running_server

SECRET = "vs-test-logging-secret-4f1c9a"
WRONG = "vs-test-wrong-secret-77d2e0"
PROMPT = "describe-this-private-prompt-8c31"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with FakeUpstream() as upstream:
        model = {"name": "m1", "engine": "openai", "url": upstream.url, "remote_model": "fake",
                 "capabilities": ["completion", "vision"]}  # fmt: skip
        config = {
            "embedded_models": False,
            "log_format": "json",
            "models": [model],
            "data_dir": str(tmp_path_factory.mktemp("logging-data")),
            "api_keys": [{"key": SECRET, "id": "log-key", "models": ["m1"]}],
        }
        with running_server(config) as proc:
            yield proc


def _png_data_uri() -> tuple[str, str]:
    """A noisy 64x64 PNG (its base64 is long and unlike any log text) as a data URI, and its base64."""
    image = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{encoded}", encoded


def _records(server: ServerProcess, until_request_id: str) -> list[dict[str, Any]]:
    """Every log line parsed as JSON (a line that is not JSON fails the test), once the access record of
    `until_request_id` has been written."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in server.log().splitlines() if line.strip()]
        records = [orjson.loads(line) for line in lines]
        if any(r.get("request_id") == until_request_id and r["logger"] == "vlmserve.access" for r in records):
            return records
        assert time.monotonic() < deadline, f"no access record for {until_request_id}:\n{server.log()[-3000:]}"
        time.sleep(0.05)


def test_json_logs_hold_access_records_and_no_secrets(server: ServerProcess) -> None:
    uri, encoded = _png_data_uri()
    content = [{"type": "text", "text": PROMPT}, {"type": "image_url", "image_url": {"url": uri}}]
    body = {"model": "m1", "messages": [{"role": "user", "content": content}], "max_tokens": 3}
    auth = {"Authorization": f"Bearer {SECRET}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post("/v1/chat/completions", json=body, headers={**auth, "X-Request-ID": "log-image-1"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        ollama = {"model": "m1", "stream": False, "messages": [{"role": "user", "content": PROMPT,
                                                                "images": [encoded]}]}  # fmt: skip
        assert http.post("/api/chat", json=ollama, headers={**auth, "X-Request-ID": "log-ollama-1"}).status_code == 200
        refused = http.post("/v1/chat/completions", json=body,
                            headers={"Authorization": f"Bearer {WRONG}", "X-Request-ID": "log-refused-1"})  # fmt: skip
        assert refused.status_code == 401
        unknown = http.post("/v1/chat/completions", json={**body, "model": "nope"},
                            headers={**auth, "X-Request-ID": "log-unknown-1"})  # fmt: skip
        assert unknown.status_code == 404

    records = _records(server, "log-unknown-1")
    for record in records:
        assert {"ts", "level", "logger", "message", "request_id"} <= record.keys(), record
    access = {r["request_id"]: r for r in records if r["logger"] == "vlmserve.access" and "status" in r}
    image = access["log-image-1"]
    assert image["method"] == "POST" and image["path"] == "/v1/chat/completions" and image["status"] == 200
    assert image["model"] == "m1" and image["key_id"] == "log-key" and image["level"] == "info"
    assert isinstance(image["duration_ms"], float | int) and image["duration_ms"] >= 0
    assert access["log-ollama-1"]["path"] == "/api/chat" and access["log-ollama-1"]["model"] == "m1"
    assert access["log-refused-1"]["status"] == 401 and "key_id" not in access["log-refused-1"]
    assert access["log-unknown-1"]["key_id"] == "log-key"
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn's own lines go through JSON too"

    text = server.log()
    for forbidden in (SECRET, WRONG, PROMPT, encoded[:48], encoded[-48:], "data:image"):
        assert forbidden not in text, forbidden


def test_text_format_keeps_request_id_lines(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The default text format: one human line per request with its id (what the serve command always did)."""
    config = {"embedded_models": False, "data_dir": str(tmp_path_factory.mktemp("logging-text"))}
    with running_server(config) as proc:
        assert httpx.get(proc.url + "/v1/models", headers={"X-Request-ID": "text-rid-9"}).status_code == 200
        deadline = time.monotonic() + 10
        while "[text-rid-9]" not in proc.log():
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.05)
        line = next(line for line in proc.log().splitlines() if "[text-rid-9]" in line)
        assert " INFO vlmserve.access [text-rid-9]: GET /v1/models -> 200 in " in line
        assert not line.lstrip().startswith("{")


def test_access_log_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"embedded_models": False, "access_log": False, "data_dir": str(tmp_path_factory.mktemp("no-access"))}
    with running_server(config) as proc:
        assert httpx.get(proc.url + "/v1/models", headers={"X-Request-ID": "quiet-rid-1"}).status_code == 200
        missing = httpx.get(proc.url + "/v1/models/nope", headers={"X-Request-ID": "quiet-rid-2"})
        assert missing.status_code == 404 and missing.headers["x-request-id"] == "quiet-rid-2"
        # the reload's own log line comes after any access record of the requests before it: wait for it
        assert httpx.post(proc.url + "/admin/reload").status_code == 200
        deadline = time.monotonic() + 10
        while "catalog reloaded" not in proc.log():
            assert time.monotonic() < deadline, proc.log()[-2000:]
            time.sleep(0.05)
        assert "quiet-rid-1" not in proc.log()
        assert "GET /v1/models" not in proc.log()
