"""What every surface's wire schemas share: how JSON bodies are parsed, and the bounds of wire numbers.

JSON bodies are parsed with orjson (`JsonRoute`, the route class of every router): unlike the standard
library it refuses lone UTF-16 surrogates (`"\\ud800"`, which `json.loads` accepts and which only fail later,
when a string is encoded for an engine or a database), invalid UTF-8, NaN/Infinity and numbers that overflow a
double. A refused body is a `json_invalid` validation error, answered as a 400 in the surface's own format.

The numeric bounds (vlmserve/wire/bounds.py, re-exported here) are the limits listed in docs/api.md
("Limits on input"): every number a client sends is bounded above, so no value reaches an engine that would
overflow its native integer or float types.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from vlmserve.errors import BadRequest
from vlmserve.wire.bounds import (
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    MAX_CONTEXT,
    MAX_DIMENSIONS,
    MAX_GPU_LAYERS,
    MAX_THREADS,
    MAX_TOKEN_ID,
    MAX_TOKENS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    Bool,
    Dimensions,
    KeepAlive,
    Seed,
    TokenId,
    Tokens,
    TopK,
    engine_seed,
)

# re-exported: the API surfaces import the bounds from here
__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_CONTEXT",
    "MAX_DIMENSIONS",
    "MAX_GPU_LAYERS",
    "MAX_THREADS",
    "MAX_TOKENS",
    "MAX_TOKEN_ID",
    "MAX_TOP_K",
    "MAX_TOP_LOGPROBS",
    "Bool",
    "Dimensions",
    "JsonRoute",
    "KeepAlive",
    "OrjsonRequest",
    "Seed",
    "TokenId",
    "Tokens",
    "TopK",
    "check_text",
    "engine_seed",
]


class RelayStream(StreamingResponse):
    """A streamed answer without Starlette's per-response disconnect listener (an anyio task group and a second
    task per stream, under uvicorn's ASGI 2.3): CancelOnDisconnect (api/disconnect.py) already watches every
    POST for its client leaving and cancels the handler, which ends the stream and closes the engine's."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:  # the transport failed under a send: the client is gone
            raise ClientDisconnect() from None
        if self.background is not None:
            await self.background()


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())  # orjson.JSONDecodeError is a json.JSONDecodeError
        return self._json


class JsonRoute(APIRoute):
    """A route whose JSON body is parsed by orjson (FastAPI calls `request.json()` of the request it gets)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_orjson(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return with_orjson


def check_text(value: str, field: str) -> str:
    """A text field that did not come through the JSON parser (a form field): valid Unicode or a 400."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        name = field.encode("utf-8", "backslashreplace").decode()  # the name itself may be the bad text
        raise BadRequest(f"invalid Unicode (lone surrogate) in field '{name}'", param=name) from None
    return value
