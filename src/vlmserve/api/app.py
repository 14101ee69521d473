"""The ASGI application: services built once in the lifespan, one error mapper per surface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmserve import __version__
from vlmserve.api import admin, admin_compat, admin_keys, generate, jobs_routes, metrics, ops, simple
from vlmserve.api.batch_runtime import start_jobs, stop_jobs
from vlmserve.api.disconnect import CancelOnDisconnect
from vlmserve.api.gateway import Gateway, open_security
from vlmserve.api.ollama import errors as ollama_errors
from vlmserve.api.ollama.manage_routes import router as ollama_manage_router
from vlmserve.api.ollama.routes import router as ollama_router
from vlmserve.api.openai import errors as openai_errors
from vlmserve.api.openai.audio_routes import router as audio_router
from vlmserve.api.openai.batches_routes import router as batches_router
from vlmserve.api.openai.files_routes import router as files_router
from vlmserve.api.openai.routes import router as openai_router
from vlmserve.api.responses.routes import router as responses_router
from vlmserve.api.state import AppState, JSONBytes
from vlmserve.backends.registry import build_backend
from vlmserve.config import Settings
from vlmserve.context import note_error
from vlmserve.errors import BadRequest, NotFound, PayloadTooLarge, VlmServeError, retry_after_of
from vlmserve.media.pipeline import MediaPipeline
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.devices import make_probe
from vlmserve.scheduler.memory import MB, default_budget_bytes
from vlmserve.scheduler.state import SchedulerConfig
from vlmserve.service import preflight
from vlmserve.service.catalog import Catalog
from vlmserve.service.chat import ChatService
from vlmserve.service.embed import EmbedLimits, EmbedService
from vlmserve.service.models import ModelManager
from vlmserve.serving import BodyTimeout
from vlmserve.ui.routes import router as ui_router

# response headers a browser client may read (request id, rate-limit state)
CORS_EXPOSED_HEADERS = ["x-request-id", "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens"]  # fmt: skip

log = logging.getLogger("vlmserve")


# Ollama blob uploads (GGUF files for /api/create) stream to disk: bounded by the free space, not this limit
BLOB_MAX_BYTES = 2**40


def build_state(settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> AppState:
    catalog = Catalog.from_settings(settings)
    scheduler = Scheduler(
        lambda spec: build_backend(spec, start_timeout=settings.runner_start_timeout, threads=settings.threads),
        SchedulerConfig(
            budget_bytes=default_budget_bytes(settings.memory_budget_mb),
            keep_alive=settings.keep_alive,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
            max_swap_wait=settings.max_swap_wait,
            ordering=settings.scheduler_ordering,
            gpu_budget_mb=settings.gpu_memory_budget_mb,
            gpu_fraction=settings.gpu_memory_fraction,
        ),
        probe=make_probe(
            settings.gpu_probe, [(g.name, g.total_mb * MB, g.used_mb * MB) for g in settings.scripted_gpus]
        ),
    )
    media = MediaPipeline.from_settings(settings)
    limits = EmbedLimits(settings.embed_max_inputs, settings.embed_max_input_bytes, settings.embed_max_total_bytes)
    return AppState(
        settings=settings,
        catalog=catalog,
        scheduler=scheduler,
        chat=ChatService(catalog, scheduler, media),
        embed=EmbedService(catalog, scheduler, limits),
        models=ModelManager(settings, catalog, scheduler, reload_settings),
    )


def error_response(path: str, exc: VlmServeError) -> Response:
    if path.startswith("/v1/"):
        return openai_errors.error_response(exc)
    if path.startswith("/api/"):
        return ollama_errors.error_response(exc)
    if path.startswith(generate.PATHS):  # the multi-model server's routes: {"error", "details"}
        return generate.error_response(exc)
    retry = retry_after_of(exc)  # every 429/503 says when to come back, on this surface too
    headers = {"Retry-After": str(int(max(1, retry)))} if retry is not None else None
    return JSONBytes({"error": exc.message}, status_code=exc.status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
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


class BodyTooLarge(HTTPException):
    """Raised by the gate's `receive` once the bytes received pass the limit: an HTTPException, because FastAPI
    turns any other error of its body read into a 400; `on_http` maps it to the surface's 413."""

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
            and path.startswith(("/api/", "/v1/"))
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


def create_app(
    settings: Settings, state: AppState | None = None, reload_settings: Callable[[], Settings] | None = None
) -> FastAPI:
    """`reload_settings` reads the settings again as they were read at start (for POST /admin/reload)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vlm = state or build_state(settings, reload_settings)
        app.state.vlm = vlm
        vlm.scheduler.start()
        await start_jobs(vlm)
        try:
            vlm.security = await open_security(vlm)
        except BaseException:
            await stop_jobs(vlm)
            await vlm.scheduler.close()
            raise
        vlm.metrics.attach(vlm)
        log.info(
            "vlmserve %s serving %d models: %s",
            __version__,
            len(vlm.catalog.all()),
            ", ".join(s.name for s in vlm.catalog.all()),
        )
        checks = asyncio.create_task(preflight.warn_at_start(vlm.catalog.all()))  # beside start-up, not before it
        try:
            yield
        finally:
            checks.cancel()
            if vlm.security is not None:
                await vlm.security.close()
            await stop_jobs(vlm)
            await vlm.scheduler.close()

    app = FastAPI(title="vlmserve", version=__version__, lifespan=lifespan)

    @app.exception_handler(VlmServeError)
    async def on_vlm_error(request: Request, exc: VlmServeError) -> Response:
        if exc.status >= 500:
            note_error(exc.type)
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = _validation_message(exc)
        return error_response(request.url.path, BadRequest(message, param=param))

    @app.exception_handler(HTTPException)
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

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request.url.path, VlmServeError(f"internal error: {exc.__class__.__name__}"))

    for router in (
        openai_router,
        responses_router,
        audio_router,
        files_router,
        batches_router,
        ollama_router,
        ollama_manage_router,
        simple.router,
        generate.router,
        jobs_routes.router,
        ops.router,
        admin_keys.router,
        admin_compat.router,
        admin.router,
        metrics.router,
        ui_router,
    ):
        app.include_router(router)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodyTimeout, timeout=settings.request_body_timeout)
    app.add_middleware(
        RequestGate, max_bytes=settings.max_request_bytes, upload_max_bytes=settings.batch_max_file_bytes + 2**20
    )
    app.add_middleware(Gateway, error_response=error_response)  # ids, keys, limits, metrics, access log
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
    return app
