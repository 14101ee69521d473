"""The HTTP edge, server-level: CORS preflights from allowed and refused origins, and the limits on slow or
oversized requests (headers that never end, bodies that never arrive, huge headers, idle keep-alive)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
from fake_upstreams import Behaviour, FakeUpstream
from server_process import ServerProcess, running_server

from vlmserve.config import load_settings
from vlmserve.serving import uvicorn_options

ALLOWED = "https://app.example.com"
KEY = "vs-test-cors-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with FakeUpstream() as upstream:
        config = {
            "embedded_models": False, "data_dir": str(tmp_path_factory.mktemp("edge-data")),
            "models": [{"name": "m1", "engine": "openai", "url": upstream.url, "remote_model": "fake"}],
            "api_keys": [KEY], "cors_origins": f"{ALLOWED}, http://localhost:3000",
            "request_header_timeout": 1.0, "request_body_timeout": 1.5, "max_header_bytes": 4096,
            "timeout_keep_alive": 1.0,
        }  # fmt: skip
        with running_server(config) as proc:
            yield proc


def _preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip


def test_cors_preflight_allowed_origin(server: ServerProcess) -> None:
    answer = httpx.options(server.url + "/v1/chat/completions", headers=_preflight(ALLOWED))
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in answer.headers  # cors_allow_credentials is off


def test_cors_preflight_refused_origin(server: ServerProcess) -> None:
    answer = httpx.options(server.url + "/v1/chat/completions", headers=_preflight("https://evil.example.net"))
    assert answer.status_code == 400
    assert "access-control-allow-origin" not in answer.headers


def test_cors_headers_on_answers_and_refusals(server: ServerProcess) -> None:
    body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=server.url, timeout=30, headers={"Origin": ALLOWED}) as http:
        refused = http.post("/v1/chat/completions", json=body)  # no key: the browser must still read the 401
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED
        ok = http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
        other = http.get("/v1/models", headers={"Origin": "https://evil.example.net", "Authorization": f"Bearer {KEY}"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers


def test_cors_off_by_default(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"embedded_models": False, "data_dir": str(tmp_path_factory.mktemp("edge-nocors"))}
    with running_server(config) as proc:
        answer = httpx.options(proc.url + "/v1/models", headers=_preflight(ALLOWED))
        assert answer.status_code == 405, answer.text  # no CORS middleware: OPTIONS is a method no route has
        assert "access-control-allow-origin" not in answer.headers


def _connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, limit: float = 10.0) -> tuple[bytes, float]:
    """All bytes the server sends until it closes the connection, and how long that took."""
    began = time.monotonic()
    sock.settimeout(limit)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - began


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status_and_body(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body) if body else None


def test_headers_that_never_end_are_dropped(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        raw, waited = _read_until_closed(sock)
    status, headers, body = _status_and_body(raw)
    assert status == 408 and headers["connection"] == "close" and "headers" in body["error"]["message"]
    assert 0.5 < waited < 8


def test_slow_headers_on_a_kept_alive_connection(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # the next request's head stalls
        raw, waited = _read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 408") and waited < 8


def test_oversized_headers_get_431(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"a" * 8000 + b"\r\n\r\n")
        raw, _ = _read_until_closed(sock)
    assert _status_and_body(raw)[0] == 431
    fits = httpx.get(server.url + "/health", headers={"X-Filler": "a" * 2000})
    assert fits.status_code == 200


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_body_that_never_arrives_gets_408(server: ServerProcess, path: str) -> None:
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n").encode()  # fmt: skip
    with _connect(server) as sock:
        sock.sendall(head + b'{"model": "m1", "messa')
        raw, waited = _read_until_closed(sock)
    status, headers, body = _status_and_body(raw)
    assert status == 408 and headers["connection"] == "close", raw[:300]
    message = body["error"]["message"] if path.startswith("/v1/") else body["error"]
    assert "body not received within 1.5 s" in message
    assert 1.0 < waited < 8
    assert httpx.get(server.url + "/health").status_code == 200  # the server goes on serving


def test_idle_keep_alive_connections_close(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        rest, waited = _read_until_closed(sock)
    assert rest == b"" and waited < 5


def test_uvicorn_options_from_settings() -> None:
    settings = load_settings(None, port=8123, timeout_keep_alive=7, max_header_bytes=8192, limit_concurrency=50,
                             log_format="json")  # fmt: skip
    options = uvicorn_options(settings)
    assert options["port"] == 8123 and options["access_log"] is False and options["log_config"] is None
    assert options["timeout_keep_alive"] == 7 and options["h11_max_incomplete_event_size"] == 8192
    assert options["limit_concurrency"] == 50 and isinstance(options["http"], type)
    assert "log_config" not in uvicorn_options(load_settings(None))  # text: uvicorn's own formatting, as before


def test_past_limit_concurrency_every_surface_gets_503_with_retry_after(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """limit_concurrency 2: one slow request holds a connection + a task, so the next connection is the 2nd."""
    with FakeUpstream(Behaviour(initial_delay=3.0)) as upstream:
        config = {
            "embedded_models": False, "data_dir": str(tmp_path_factory.mktemp("edge-limit")), "limit_concurrency": 2,
            "models": [{"name": "m1", "engine": "openai", "url": upstream.url, "remote_model": "fake"}],
        }  # fmt: skip
        with running_server(config) as proc, ThreadPoolExecutor(1) as pool:
            body = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            slow = pool.submit(httpx.post, proc.url + "/v1/chat/completions", json=body, timeout=30)
            deadline = time.monotonic() + 10
            while not any(r.path == "/v1/chat/completions" for r in upstream.requests):
                assert time.monotonic() < deadline and not slow.done(), "the slow request never reached upstream"
                time.sleep(0.02)
            openai_style = httpx.post(proc.url + "/v1/chat/completions", json=body, timeout=10)
            ollama_style = httpx.get(proc.url + "/api/tags", timeout=10)
            plain = httpx.get(proc.url + "/health", timeout=10)
            for refused in (openai_style, ollama_style, plain):
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
                assert refused.headers["connection"] == "close"
            error = openai_style.json()["error"]
            assert error["type"] == "service_unavailable" and error["code"] == "concurrency_limit"
            assert "concurrency limit (2)" in ollama_style.json()["error"]
            assert ollama_style.json() == plain.json()  # {"error": "..."}: Ollama's shape and the plain routes'
            assert slow.result().status_code == 200  # the request in flight was not disturbed
            deadline = time.monotonic() + 10  # refused connections close on the server's side soon after
            while (after := httpx.post(proc.url + "/v1/chat/completions", json=body, timeout=30)).status_code == 503:
                assert time.monotonic() < deadline, after.text
                time.sleep(0.1)
            assert after.status_code == 200, after.text
