"""The app's exception handlers: every error a route raises (ours, a validation error, Starlette's HTTPException,
anything unexpected) is answered in the error format of the path's surface (api/surfaces.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from vlmserve.api.surfaces import error_response
from vlmserve.context import note_error
from vlmserve.errors import BadRequest, NotFound, PayloadTooLarge, VlmServeError

log = logging.getLogger("vlmserve")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VlmServeError, on_vlm_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)


async def on_vlm_error(request: Request, exc: VlmServeError) -> Response:
    if exc.status >= 500:
        note_error(exc.type)
    return error_response(request.url.path, exc)


async def on_validation(request: Request, exc: RequestValidationError) -> Response:
    message, param = validation_message(exc)
    return error_response(request.url.path, BadRequest(message, param=param))


async def on_http(request: Request, exc: HTTPException) -> Response:
    error: VlmServeError
    if exc.status_code == 404:
        error = NotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = VlmServeError(str(exc.detail))
        error.status = exc.status_code
        error.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(request.url.path, error)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(request.url.path, VlmServeError(f"internal error: {exc.__class__.__name__}"))


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, param) of a validation error: the first problem, named by its field."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":  # orjson's reason (api/wire.py), minus its position
        reason = str((first.get("ctx") or {}).get("error", ""))
        if "surrogate" in reason or "UTF-8" in reason:
            return "invalid Unicode (lone surrogate or invalid UTF-8) in request body", None
        return f"request body is not valid JSON: {reason}" if reason else "request body is not valid JSON", None
    param = _param(first)
    # a union field (keep_alive: str | float) fails once per member: name the field, and the member's
    # complaint that says most (a bound) rather than "should be a valid string"
    same = [e for e in errors if _param(e) == param]
    chosen = next((e for e in same if not str(e.get("type", "")).endswith("_type")), first)
    message = str(chosen.get("msg", "invalid value"))
    others = len(errors) - len(same)
    extra = f" (and {others} more problems)" if others else ""
    return (f"{param}: {message}{extra}" if param else f"{message}{extra}"), param


def _param(error: Any) -> str | None:
    """The field's dotted path, without "body" and the member tags pydantic adds inside unions ("str",
    "list[str]", "function-after[...]")."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body" and not _is_union_tag(part)]
    return ".".join(loc) or None


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none"))
