"""The ASGI layers around the routes, outermost first: CORS (when configured), the gateway (ids, keys, limits,
metrics, access log), the request gate (body size, JSON content type), the body deadline, cancel on disconnect.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmserve.api.disconnect import CancelOnDisconnect
from vlmserve.api.gateway import Gateway
from vlmserve.api.surfaces import error_response, surface_of
from vlmserve.config import Settings
from vlmserve.errors import PayloadTooLarge

# response headers a browser client may read (request id, rate-limit state)
CORS_EXPOSED_HEADERS = ["x-request-id", "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens"]  # fmt: skip

# Ollama blob uploads (GGUF files for /api/create) stream to disk: bounded by the free space, not this limit
BLOB_MAX_BYTES = 2**40


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """Each `add_middleware` wraps the ones before it: the last added runs first."""
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyTimeout, timeout=settings.request_body_timeout)
    app.add_middleware(
        RequestGate, max_bytes=settings.max_request_bytes, upload_max_bytes=settings.batch_max_file_bytes + 2**20
    )
    app.add_middleware(Gateway)  # ids, keys, limits, metrics, access log
    if settings.cors_origins:  # outermost: preflights carry no API key, and refusals need CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )


class BodyTooLarge(HTTPException):
    """Raised by the gate's `receive` once the bytes received pass the limit: an HTTPException, because FastAPI
    turns any other error of its body read into a 400; the HTTPException handler maps it to the surface's 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class RequestGate:
    """Pure-ASGI front door: refuses oversized bodies with 413 (on Content-Length before reading them, and on
    the bytes actually received, for chunked bodies), and treats JSON API bodies sent without a JSON content
    type (curl -d, as in Ollama's docs) as JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_max_bytes = upload_max_bytes or max_bytes  # POST /v1/files (batch input files)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        path: str = scope["path"]
        limit = self.upload_max_bytes if path == "/v1/files" else self.max_bytes
        if path.startswith("/api/blobs/"):
            limit = BLOB_MAX_BYTES
        content_type = b""
        for key, value in headers:
            if key == b"content-length" and value.isdigit() and int(value) > limit:
                exc = PayloadTooLarge(f"request body is {int(value)} bytes, limit is {limit}")
                await error_response(path, exc)(scope, receive, send)
                return
            if key == b"content-type":
                content_type = value
        if (
            scope["method"] == "POST"
            and surface_of(path).json_bodies
            and (not content_type or content_type.startswith(b"application/x-www-form-urlencoded"))
        ):
            rest = [(k, v) for k, v in headers if k != b"content-type"]
            scope = {**scope, "headers": [*rest, (b"content-type", b"application/json")]}
        received = 0
        refused = False

        async def counted_receive() -> Message:
            # counted as it arrives: a chunked body past the limit is refused without reading (or buffering) more
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLarge(limit)
            return message

        async def closing_send(message: Message) -> None:
            if refused and message["type"] == "http.response.start":  # the rest of the body is never read
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted_receive, closing_send)


class BodyTimeout:
    """Fails a request whose body has not fully arrived `timeout` seconds after its headers: the handler's read
    raises HTTPException(408) (mapped to the surface's error format) and the response closes the connection."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        body_done = timed_out = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise HTTPException(408, f"request body not received within {self.timeout:g} s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: Message) -> None:
            if timed_out and message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, timed_receive, closing_send)
