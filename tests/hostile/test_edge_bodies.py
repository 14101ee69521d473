"""Request bodies sent chunked (no Content-Length): the size limits hold on the bytes actually received.

Each body comes from a generator and the client stops as soon as the server answers, so a server that takes
the whole body shows up as `sent` reaching the total (and its memory growing) instead of the test's."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from conftest import MEMORY_CAP_MB, rss_bytes
from edge_client import repeated, send_chunked
from server_process import ServerProcess, running_server

LIMIT = 16 * 2**20  # max_request_bytes of this module's server
FILE_LIMIT = 2 * 2**20  # batch_max_file_bytes
SLACK = 16 * 2**20  # socket buffers on both sides: bytes in flight when the server stops reading
MiB = 2**20


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    config = {"max_request_bytes": LIMIT, "batch_max_file_bytes": FILE_LIMIT}
    with running_server(config, memory_cap_mb=MEMORY_CAP_MB) as proc:
        yield proc


def _chat_body(total: int) -> Iterator[bytes]:
    first = b'{"model": "smollm2", "messages": [{"role": "user", "content": "'
    return repeated(first, b"a" * MiB, total)


@pytest.mark.parametrize(
    ("path", "surface"), [("/v1/chat/completions", "openai"), ("/api/chat", "ollama"), ("/analyze", "simple")]
)
def test_chunked_json_body_over_the_limit_is_refused_early(server: ServerProcess, path: str, surface: str) -> None:
    base = rss_bytes(server.proc.pid)
    peak = [base]

    def sample(sent: int) -> None:
        if sent % (16 * MiB) == 0:
            peak[0] = max(peak[0], rss_bytes(server.proc.pid))

    answer = send_chunked(server.url, path, _chat_body(1024 * MiB), on_chunk=sample)
    peak[0] = max(peak[0], rss_bytes(server.proc.pid))
    assert answer.status == 413, answer
    assert answer.sent < LIMIT + SLACK, f"the server read {answer.sent} bytes of a {LIMIT}-byte limit"
    assert peak[0] - base < 128 * MiB, f"server RSS grew by {(peak[0] - base) / MiB:.0f} MiB"
    body = answer.json()
    assert isinstance(body, dict)
    if surface == "openai":
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "payload_too_large"
        assert str(LIMIT) in body["error"]["message"]
    else:
        assert isinstance(body["error"], str) and str(LIMIT) in body["error"]
    # a body that fits, sent in small chunks, is still read in full: the model is unknown (404, not 413), and
    # /analyze, which wants an image, names the field it lacks
    small = b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'
    read = send_chunked(server.url, path, iter([small[:10], small[10:40], small[40:]]))
    if surface == "simple":
        assert (read.status, orjson.loads(read.body)) == (400, {"error": "image_base64: Field required"})
    else:
        assert read.status == 404, read.body


def _multipart(total: int) -> Iterator[bytes]:
    boundary = b"edgeboundary"
    first = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
             b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
             b"Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
    line = b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    return repeated(first, line * (MiB // len(line)), total)


def test_chunked_upload_over_the_file_limit_is_refused_early(server: ServerProcess) -> None:
    answer = send_chunked(
        server.url, "/v1/files", _multipart(512 * MiB), content_type="multipart/form-data; boundary=edgeboundary"
    )
    assert answer.status == 413, answer
    # bytes taken (and spooled to a temporary file) stay near the limit, not the 512 MiB sent at it
    assert answer.sent < FILE_LIMIT + SLACK, f"the server read {answer.sent} bytes"
    body = answer.json()
    assert isinstance(body, dict) and body["error"]["code"] == "payload_too_large"
