"""Ollama's error shape: {"error": "message"} with the matching status (and its own texts for some cases)."""

from __future__ import annotations

from starlette.responses import Response

from vlmserve.api.state import JSONBytes
from vlmserve.errors import ModelNotFound, Overloaded, VlmServeError, retry_after_of


def error_message(exc: VlmServeError) -> str:
    if isinstance(exc, ModelNotFound) and exc.message.startswith("model '"):
        name = exc.message.split("'")[1]
        return f'model "{name}" not found, try pulling it first'
    if isinstance(exc, Overloaded):
        return f"server busy, please try again.  maximum pending requests exceeded ({exc.message})"
    return exc.message


def error_response(exc: VlmServeError) -> Response:
    headers = {}
    retry = retry_after_of(exc)
    if retry is not None:
        headers["Retry-After"] = str(int(max(1, retry)))
    # Ollama answers an overloaded queue with 503, not 429
    status = 503 if isinstance(exc, Overloaded) else exc.status
    return JSONBytes({"error": error_message(exc)}, status_code=status, headers=headers)
