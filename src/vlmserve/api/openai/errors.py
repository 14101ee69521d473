"""OpenAI's error shape: {"error": {"message", "type", "param", "code"}} with the matching status."""

from __future__ import annotations

from starlette.responses import Response

from vlmserve.api.state import JSONBytes
from vlmserve.errors import VlmServeError, retry_after_of


def error_body(exc: VlmServeError) -> dict[str, object]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def error_response(exc: VlmServeError) -> Response:
    headers = {}
    if (retry := retry_after_of(exc)) is not None:
        headers["Retry-After"] = str(int(max(1, retry)))
    return JSONBytes(error_body(exc), status_code=exc.status, headers=headers)
