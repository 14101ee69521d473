"""Anthropic's error shape: `{"type": "error", "error": {"type", "message"}, "request_id"}` with the matching
status, for every error on `/v1/messages` paths (the gateway's 401/403/429, the 413 of an oversized body, a
route's 400/404, an engine's 502 ...). Anthropic's `type` is chosen by status; 503 is `overloaded_error`."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from vlmserve.api.state import JSONBytes
from vlmserve.context import request_id
from vlmserve.errors import VlmServeError, retry_after_of

PATH = "/v1/messages"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def is_anthropic_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def error_type(status: int) -> str:
    return _TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_body(exc: VlmServeError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(exc.status), "message": exc.message},
            "request_id": request_id()}  # fmt: skip


def error_response(exc: VlmServeError) -> Response:
    headers = {}
    if (retry := retry_after_of(exc)) is not None:
        headers["Retry-After"] = str(int(max(1, retry)))
    return JSONBytes(error_body(exc), status_code=exc.status, headers=headers)
