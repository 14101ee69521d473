"""serving.EdgeLimits leans on private attributes of uvicorn's HTTP protocols (`app`, `loop`, `transport`,
`cycle` with its `response_complete`, `connections`, `tasks`, `limit_concurrency`): pyproject pins the uvicorn
range where they exist, and this fails loudly, with the missing name, on a uvicorn that drops or renames one.
The server-level behaviour (408, 431, keep-alive, 503) is in tests/test_cors_limits.py."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from vlmserve.config import load_settings
from vlmserve.serving import AUTO_EDGE_PROTOCOL, EdgeH11Protocol, EdgeHttpToolsProtocol, EdgeLimits, edge_protocol

RELIED_ON = ("app", "loop", "transport", "cycle", "connections", "tasks", "limit_concurrency")


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(cls: type[asyncio.Protocol], limit_concurrency: int | None = None) -> Any:
    """An instance made as uvicorn's server makes them (typed Any: the point is what it has at run time)."""
    config = Config(_ok, lifespan="off", limit_concurrency=limit_concurrency)
    return cls(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]


async def _one_request(protocol: Any) -> bytes:
    """A real GET through a socket pair. uvicorn sets `response_complete` right after writing the last body
    bytes, in the same step, so it holds once the client has them."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    await loop.connect_accepted_socket(lambda: protocol, ours)
    theirs.setblocking(False)
    await loop.sock_sendall(theirs, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    async with asyncio.timeout(5):
        while not answer.endswith(b"ok"):
            answer += await loop.sock_recv(theirs, 4096)
    assert protocol.cycle.response_complete is True
    theirs.close()
    protocol.transport.close()
    await asyncio.sleep(0)  # let the transport's close callbacks run
    return answer


@pytest.mark.parametrize("cls", [H11Protocol, HttpToolsProtocol])
async def test_uvicorn_protocols_have_the_attributes_edge_limits_uses(cls: type[asyncio.Protocol]) -> None:
    protocol = _protocol(cls, limit_concurrency=3)
    missing = [name for name in RELIED_ON if not hasattr(protocol, name)]
    assert missing == [], f"uvicorn's {cls.__name__} no longer has {missing}: serving.EdgeLimits needs them"
    assert protocol.limit_concurrency == 3 and protocol.cycle is None
    assert (await _one_request(protocol)).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("cls", [EdgeH11Protocol, EdgeHttpToolsProtocol])
async def test_edge_protocols_serve_and_take_over_limit_concurrency(cls: type[EdgeLimits]) -> None:
    protocol = _protocol(edge_protocol(load_settings(None), cls), limit_concurrency=3)
    assert isinstance(protocol, EdgeLimits) and protocol.limit_concurrency is None  # our gate decides instead
    assert protocol.app is not _ok
    assert (await _one_request(protocol)).startswith(b"HTTP/1.1 200")


def test_edge_protocol_binds_the_two_limits() -> None:
    settings = load_settings(None, request_header_timeout=2.5, max_header_bytes=5000)
    bound = edge_protocol(settings)
    assert issubclass(bound, AUTO_EDGE_PROTOCOL) and AUTO_EDGE_PROTOCOL is EdgeHttpToolsProtocol
    assert (bound.header_timeout, bound.max_header_bytes) == (2.5, 5000)
    assert (EdgeLimits.header_timeout, EdgeLimits.max_header_bytes) != (2.5, 5000)  # the mixin is left as it was
