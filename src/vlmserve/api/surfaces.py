"""Which API surface a path belongs to: its label in metrics and the access log, its error format, and whether
its POST bodies are JSON even without a JSON content type. One table of path prefixes, first match wins.

A new surface is one `Surface` and one row in `PREFIXES` (a longer prefix before a shorter one it starts with,
e.g. a `/v1/...` surface of its own before `/v1/`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.responses import Response

from vlmserve.api import generate
from vlmserve.api.anthropic import errors as anthropic_errors
from vlmserve.api.ollama import errors as ollama_errors
from vlmserve.api.openai import errors as openai_errors
from vlmserve.api.state import JSONBytes
from vlmserve.errors import VlmServeError, retry_after_of

ErrorMapper = Callable[[VlmServeError], Response]


def plain_error_response(exc: VlmServeError) -> Response:
    """`{"error": message}`: the UI, ops and admin routes."""
    retry = retry_after_of(exc)  # every 429/503 says when to come back, on this surface too
    headers = {"Retry-After": str(int(max(1, retry)))} if retry is not None else None
    return JSONBytes({"error": exc.message}, status_code=exc.status, headers=headers)


@dataclass(frozen=True, slots=True)
class Surface:
    name: str  # the `surface` label of metrics and access-log records
    errors: ErrorMapper  # a VlmServeError as this surface's error response
    json_bodies: bool = False  # POST bodies without a JSON content type (curl -d) are read as JSON


OPENAI = Surface("openai", openai_errors.error_response, json_bodies=True)
OLLAMA = Surface("ollama", ollama_errors.error_response, json_bodies=True)
ANTHROPIC = Surface("anthropic", anthropic_errors.error_response, json_bodies=True)
MULTI_MODEL = Surface("simple", generate.error_response)  # the multi-model server's {"error", "details"}
MULTI_MODEL_ADMIN = Surface("admin", generate.error_response)
ADMIN = Surface("admin", plain_error_response)
SIMPLE = Surface("simple", plain_error_response)  # every other path

PREFIXES: tuple[tuple[str, Surface], ...] = (
    ("/v1/messages", ANTHROPIC),
    ("/v1/", OPENAI),
    ("/api/", OLLAMA),
    ("/generate/", MULTI_MODEL),
    ("/admin/memory_status", MULTI_MODEL_ADMIN),
    ("/admin/model_status", MULTI_MODEL_ADMIN),
    ("/admin/emergency_cleanup", MULTI_MODEL_ADMIN),
    ("/admin/temp_status", MULTI_MODEL_ADMIN),
    ("/admin/cleanup_temp", MULTI_MODEL_ADMIN),
    ("/admin", ADMIN),
)


def surface_of(path: str) -> Surface:
    for prefix, surface in PREFIXES:
        if path.startswith(prefix):
            return surface
    return SIMPLE


def error_response(path: str, exc: VlmServeError) -> Response:
    """The error as the surface of `path` writes errors."""
    return surface_of(path).errors(exc)
