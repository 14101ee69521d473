"""What every surface's wire schemas share: how JSON bodies are parsed, and the bounds of wire numbers.

JSON bodies are parsed with orjson (`JsonRoute`, the route class of every router): unlike the standard
library it refuses lone UTF-16 surrogates (`"\\ud800"`, which `json.loads` accepts and which only fail later,
when a string is encoded for an engine or a database), invalid UTF-8, NaN/Infinity and numbers that overflow a
double. A refused body is a `json_invalid` validation error, answered as a 400 in the surface's own format.

The numeric bounds are the limits listed in docs/api.md ("Limits on input"): every number a client sends is
bounded above, so no value reaches an engine that would overflow its native integer or float types.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from pydantic import Field
from starlette.responses import Response

from vlmserve.errors import BadRequest

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TOKENS = 2**20  # max_tokens / num_predict: far beyond any context, far below int32
MAX_TOP_K = 1_000_000
MAX_CONTEXT = 1_048_576  # num_ctx at the wire; the scheduler checks it against the model
MAX_THREADS = 1024  # num_thread at the wire; the scheduler clamps it to the machine's cores
MAX_GPU_LAYERS = 100_000
MAX_DIMENSIONS = 65_536
MAX_TOKEN_ID = INT32_MAX  # token ids as embeddings input

# strict: only JSON true/false; lax pydantic would take "yes", "on", 1 ... as true
Bool = Annotated[bool, Field(strict=True)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
TopK = Annotated[int, Field(ge=0, le=MAX_TOP_K)]
Dimensions = Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)]
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
# keep_alive as a number of seconds (negative: forever); its strings are parsed by domain/duration.py
KeepAlive = str | Annotated[float, Field(allow_inf_nan=False, ge=-1e18, le=1e18)] | None


def engine_seed(seed: int | None) -> int | None:
    """The seed engines get: reduced modulo 2**32, as Ollama does (llama.cpp takes a uint32 seed). -1 becomes
    0xFFFFFFFF, llama.cpp's "random seed", as with Ollama; any other value stays a fixed, reproducible seed."""
    return None if seed is None else seed % 2**32


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
