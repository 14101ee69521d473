"""Issue 11: an engine that runs out of memory on a request (llama.cpp's `std::bad_alloc` as a 400) is the
server being short (503 with Retry-After), not the client's mistake (400 engine_rejected)."""

from __future__ import annotations

import pytest

from vlmserve.backends.http_client import engine_error_from_response
from vlmserve.errors import BadRequest, Unavailable


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "std::bad_alloc", "type": "server_error"}}',
        b'{"error": "CUDA out of memory. Tried to allocate 2.00 GiB"}',
        b"failed to allocate buffer for kv cache",
    ],
)
def test_allocation_failures_are_503(body: bytes) -> None:
    error = engine_error_from_response(400, body, "engine")
    assert isinstance(error, Unavailable) and error.status == 503
    assert "ran out of memory" in str(error)


def test_other_engine_4xx_stay_the_clients() -> None:
    error = engine_error_from_response(400, b'{"error": {"message": "bad stop", "param": "stop"}}', "engine")
    assert isinstance(error, BadRequest) and error.status == 400
