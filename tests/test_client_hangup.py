"""A client that hangs up mid-request: the access record and the request metrics say 499 (nginx's "client closed
request"), never 500, on the real server with the embedded SmolLM2."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from server_process import ServerProcess, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {"log_format": "json", "data_dir": str(tmp_path_factory.mktemp("hangup-data"))}
    with running_server(config) as proc:
        yield proc


def _access_record(server: ServerProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        for line in server.log().splitlines():
            if request_id in line and line.lstrip().startswith("{"):
                record: dict[str, Any] = orjson.loads(line)
                if record.get("logger") == "vlmserve.access" and record.get("request_id") == request_id:
                    return record
        assert time.monotonic() < deadline, f"no access record for {request_id}:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def _requests_by_status(metrics: str) -> dict[str, float]:
    """vlmserve_requests_total samples of the OpenAI surface and smollm2, summed by status."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        match = re.fullmatch(r"vlmserve_requests_total\{(.*)\} (\S+)", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("model") == "smollm2":
            out[labels["status"]] = out.get(labels["status"], 0.0) + float(match.group(2))
    return out


def test_abandoned_stream_is_logged_and_counted_as_499(server: ServerProcess) -> None:
    body = {"model": "smollm2", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": "hangup-1"}) as r:
            assert r.status_code == 200
            first = next(r.iter_bytes())
            assert first.startswith(b"data: ")
        # leaving the block closes the connection after one chunk
        record = _access_record(server, "hangup-1")
        assert record["status"] == 499, record
        assert record["path"] == "/v1/chat/completions" and record["model"] == "smollm2"
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
    by_status = _requests_by_status(metrics.text)
    assert by_status.get("499", 0) >= 1, by_status
    assert not [s for s in by_status if s.startswith("5")], by_status


def test_finished_stream_is_still_200(server: ServerProcess) -> None:
    body = {"model": "smollm2", "stream": True, "max_tokens": 3,
            "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": "hangup-2"}) as r:
            text = b"".join(r.iter_bytes())
        assert r.status_code == 200 and b"[DONE]" in text
    assert _access_record(server, "hangup-2")["status"] == 200


def test_cancelled_plain_request_is_logged_as_499(server: ServerProcess) -> None:
    """A non-streamed request whose client closes the connection right after sending it: the handler is
    cancelled before any answer (no status was ever sent); the record says 499, not 500."""
    payload = orjson.dumps({"model": "smollm2", "max_tokens": 200,
                            "messages": [{"role": "user", "content": "Write a long story about a cat."}]})  # fmt: skip
    url = httpx.URL(server.url)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nX-Request-ID: hangup-3\r\n\r\n").encode()  # fmt: skip
    with socket.create_connection((url.host, url.port or 80), timeout=10) as sock:
        sock.sendall(head + payload)
    record = _access_record(server, "hangup-3")
    assert record["status"] == 499, record
    by_status = _requests_by_status(httpx.get(server.url + "/metrics", timeout=30).text)
    assert not [s for s in by_status if s.startswith("5")], by_status
