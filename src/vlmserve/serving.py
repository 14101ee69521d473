"""How the server meets the network: uvicorn's options, and the limits on slow or oversized requests.

uvicorn has no time limit on a request's headers, and none on its body once the headers are in: a client that
opens connections and then trickles bytes ("slow loris") would hold each one forever. So:
- `EdgeLimits` (mixed into uvicorn's HTTP protocol by `edge_protocol`): the request line + headers must arrive within
  `request_header_timeout` seconds (408 and close) and within `max_header_bytes` (431 and close), on every
  request of a keep-alive connection;
- `BodyTimeout` (ASGI, in api/middleware.py) gives the body `request_body_timeout` seconds from the end of the
  headers: past that the handler's read fails with 408 in the surface's error format and the connection is closed.
Idle keep-alive connections close after `timeout_keep_alive`. `limit_concurrency` (off by default): past that
many open connections or requests in flight a request gets 503 + `Retry-After: 1` in its surface's error format
(`concurrency_gate`; uvicorn's own refusal is a plain-text 503 without Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sized
from typing import Any, ClassVar, cast

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from vlmserve.api.surfaces import error_response
from vlmserve.config import Settings
from vlmserve.errors import Unavailable

log = logging.getLogger("vlmserve.serving")


def _refusal(status: int, reason: str, message: str) -> bytes:
    """A whole response written straight to the socket (no request cycle exists yet), in OpenAI's error shape."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class EdgeLimits(asyncio.Protocol):
    """A deadline and a size cap on each request's head, mixed in before one of uvicorn's HTTP protocols.

    A request's head is "in" once uvicorn has made its request cycle (both implementations set `self.cycle` when
    the headers are parsed); until then the bytes received count against `max_header_bytes`. The two limits are
    class attributes, bound per server by `edge_protocol`."""

    header_timeout: ClassVar[float] = 10.0
    max_header_bytes: ClassVar[int] = 16384
    # uvicorn's private attributes this relies on (set by its __init__; tests/unit/test_serving_edge.py holds them)
    app: ASGIApp
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any  # each implementation's own RequestResponseCycle (None before the first head): `response_complete`
    connections: set[Any]
    tasks: set[asyncio.Task[None]]
    limit_concurrency: int | None

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_tail = b""  # the last bytes seen, for a blank line split between two reads
    _head_cycle: object = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.limit_concurrency is not None:  # decided by our gate instead, whose 503 has Retry-After
            self.app = concurrency_gate(self.app, self.limit_concurrency, self.connections, self.tasks)
            self.limit_concurrency = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head()

    def _start_head(self) -> None:
        self._head_cycle = self.cycle
        self._head_bytes, self._head_tail = 0, b""
        late = f"request headers not received within {self.header_timeout:g} s"
        self._head_timer = self.loop.call_later(self.header_timeout, self._refuse, 408, "Request Timeout", late)

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._stop_head()
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, reason, message))
            self.transport.close()

    def _stop_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_large(self, data: bytes) -> bool:
        """Counts this read's bytes up to the blank line that ends the head (the rest is body)."""
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        size = self._head_bytes + (len(data) if end < 0 else end + 4 - len(self._head_tail))
        self._head_bytes, self._head_tail = size, window[-3:]
        return size > self.max_header_bytes

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._start_head()  # the next request of a keep-alive connection
        if self._head_timer is not None and self._head_too_large(data):
            too_large = f"request headers exceed {self.max_header_bytes} bytes"
            self._refuse(431, "Request Header Fields Too Large", too_large)
            return
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._stop_head()  # headers parsed: the body has its own deadline (BodyTimeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)


class EdgeH11Protocol(EdgeLimits, H11Protocol):
    """uvicorn's h11 protocol with `EdgeLimits`."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: h11, as uvicorn's http="auto" would pick
    AUTO_EDGE_PROTOCOL: type[EdgeLimits] = EdgeH11Protocol
else:

    class EdgeHttpToolsProtocol(EdgeLimits, HttpToolsProtocol):
        """uvicorn's httptools protocol (its http="auto" choice when httptools is installed) with `EdgeLimits`."""

    AUTO_EDGE_PROTOCOL = EdgeHttpToolsProtocol


def edge_protocol(settings: Settings, base: type[EdgeLimits] | None = None) -> type[EdgeLimits]:
    """The protocol class for uvicorn's `http` option: `base` (the one uvicorn's http="auto" would pick) with this
    server's two head limits bound as class attributes (uvicorn makes the instances itself)."""
    parent = base or AUTO_EDGE_PROTOCOL
    limits = {"header_timeout": settings.request_header_timeout, "max_header_bytes": settings.max_header_bytes}
    return cast("type[EdgeLimits]", type(parent.__name__, (parent,), limits))


def concurrency_gate(app: ASGIApp, limit: int, connections: Sized, tasks: Sized) -> ASGIApp:
    """uvicorn's `limit_concurrency` test on the server's open connections and request tasks, with a 503 that
    carries `Retry-After: 1` and the surface's error body. uvicorn tests before it starts a request's task; here
    that task already runs, so it is not counted among those in flight."""

    async def gated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (len(connections) < limit and len(tasks) - 1 < limit):
            await app(scope, receive, send)
            return
        log.warning("limit_concurrency (%d) reached: 503 to %s %s", limit, scope["method"], scope["path"])
        refusal = Unavailable(f"the server is at its concurrency limit ({limit}); retry shortly",
                              retry_after=1.0, code="concurrency_limit")  # fmt: skip
        response = error_response(scope["path"], refusal)
        response.headers["connection"] = "close"  # as uvicorn's own refusal: the client reconnects later
        await response(scope, receive, send)

    return gated


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.run(create_app(settings), **uvicorn_options(settings))`."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # the gateway writes the access log (with request id, model and key id)
        "http": edge_protocol(settings),
        "timeout_keep_alive": settings.timeout_keep_alive,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "limit_concurrency": settings.limit_concurrency,
    }
    if settings.log_format == "json":
        options["log_config"] = None  # keep logs.configure_logging's JSON handler for uvicorn's loggers too
    return options
