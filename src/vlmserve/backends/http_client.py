"""The HTTP client every engine backend uses (aiohttp: about 3x less per-request overhead than httpx here,
measured by bench/gateway_overhead.py), with transport failures mapped to the error tree once.

Responses are always read to their end so the connection goes back to the keep-alive pool; a cancelled
request (client disconnect) closes its connection, which makes llama.cpp / vLLM / Ollama stop generating.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from vlmserve.errors import (
    BadRequest,
    EngineError,
    EngineTimeout,
    ModelNotFound,
    Overloaded,
    Unavailable,
    VlmServeError,
)

JSON_HEADERS = {"Content-Type": "application/json"}
# llama.cpp's server closes some connections right after a streamed answer while it advertises keep-alive; a
# request sent on such a pooled connection before its close was read meets ServerDisconnectedError before any
# answer (5 of 16 back-to-back requests on a runner): it is sent again, on another connection, this many times
STALE_CONNECTION_RETRIES = 2
# a stream line (one SSE event or NDJSON object) longer than this is refused, not buffered without end
MAX_STREAM_LINE = 8 * 2**20
# an engine that answers 4xx for these ran out of memory: the request may be fine, the engine was short
_ALLOCATION_FAILURES = ("bad_alloc", "out of memory", "failed to allocate", "cannot allocate memory", "memoryerror")


def stream_event(line: bytes, engine: str, sender: str = "engine") -> dict[str, Any]:
    """One streamed event (an SSE payload or an NDJSON line) as an object; an engine's in-band error raised."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EngineError(f"{engine}: {sender} sent malformed stream data") from exc
    if not isinstance(event, dict):
        raise EngineError(f"{engine}: {sender} sent malformed stream data")
    if "error" in event:
        raise EngineError(f"{engine}: {event['error']}")
    return event


def engine_error_from_response(status: int, body: bytes, engine: str, retry_after: str | None = None) -> VlmServeError:
    """Map an engine's HTTP error to our tree, keeping its message (and the engine's Retry-After)."""
    message = body.decode("utf-8", "replace")[:500]
    param: str | None = None  # OpenAI-style engines (our runners, vLLM) name the offending parameter
    try:
        parsed = orjson.loads(body)
        err = parsed.get("error", parsed)
        message = str(err.get("message", err) if isinstance(err, dict) else err)
        if isinstance(err, dict) and isinstance(err.get("param"), str):
            param = err["param"]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = f"{engine}: {message}"
    retry = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
    if status == 404:
        return ModelNotFound(text)
    if status == 429:
        return Overloaded(text, retry_after=retry)
    if status == 503:
        return Unavailable(text, retry_after=retry)
    if 400 <= status < 500 and any(phrase in message.lower() for phrase in _ALLOCATION_FAILURES):
        return Unavailable(f"{engine}: the engine ran out of memory for this request", retry_after=retry)
    if 400 <= status < 500:
        return BadRequest(text, param=param, code="engine_rejected")
    return EngineError(f"{text} (HTTP {status})")


class EngineHTTP:
    """One keep-alive connection pool to one engine; created lazily inside the running event loop."""

    def __init__(
        self, engine: str, *, connect_timeout: float, read_timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        self.engine = engine
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._headers = headers or {}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, url: str, limit_seconds: float = 2.0) -> bool:
        """True when GET url answers 200; never raises."""
        try:
            async with self._client().get(url, timeout=aiohttp.ClientTimeout(total=limit_seconds)) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _post(self, url: str, data: bytes) -> aiohttp.ClientResponse:
        """POST `data` and wait for the answer's head, past pooled connections the engine had already closed."""
        for _ in range(STALE_CONNECTION_RETRIES):
            try:
                return await self._client().post(url, data=data, headers=JSON_HEADERS)
            except aiohttp.ServerDisconnectedError:
                continue
        return await self._client().post(url, data=data, headers=JSON_HEADERS)

    async def post_json(self, url: str, body: dict[str, Any]) -> Any:
        try:
            async with await self._post(url, orjson.dumps(body)) as response:
                payload = await response.read()
                if response.status != 200:
                    raise engine_error_from_response(
                        response.status, payload, self.engine, response.headers.get("Retry-After")
                    )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise EngineTimeout(f"{self.engine}: engine timed out") from exc
        except aiohttp.ClientError as exc:
            raise EngineError(f"{self.engine}: engine unreachable ({exc.__class__.__name__})") from exc
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"{self.engine}: engine sent malformed JSON") from exc

    async def stream_blocks(self, url: str, body: dict[str, Any]) -> AsyncIterator[list[bytes]]:
        """The non-empty lines of a streamed (SSE or NDJSON) response, read to the end: per network read, the
        lines it completed. A busy gateway reads several events at once; handing them on together lets the
        relay write them to its client in one send instead of one per token."""
        try:
            async with await self._post(url, orjson.dumps(body)) as response:
                if response.status != 200:
                    raise engine_error_from_response(
                        response.status, await response.read(), self.engine, response.headers.get("Retry-After")
                    )
                tail = b""
                async for data in response.content.iter_any():
                    *lines, tail = (tail + data if tail else data).split(b"\n")
                    if len(tail) > MAX_STREAM_LINE:
                        raise EngineError(f"{self.engine}: engine sent an oversized stream line")
                    block = [stripped for line in lines if (stripped := line.strip())]
                    if block:
                        yield block
                if tail.strip():
                    yield [tail.strip()]
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise EngineTimeout(f"{self.engine}: engine timed out") from exc
        except aiohttp.ClientError as exc:
            raise EngineError(f"{self.engine}: engine connection failed ({exc.__class__.__name__})") from exc
