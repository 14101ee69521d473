"""The ASGI application: services built once in the lifespan, the routers, the error handlers (api/handlers.py)
and the middleware stack (api/middleware.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig

from vlmserve import __version__
from vlmserve.api import admin, admin_compat, admin_keys, generate, jobs_routes, ops, simple
from vlmserve.api.anthropic.routes import router as anthropic_router
from vlmserve.api.batch_runtime import start_jobs, stop_jobs
from vlmserve.api.gateway import open_security
from vlmserve.api.handlers import install_error_handlers
from vlmserve.api.middleware import add_middleware
from vlmserve.api.ollama.manage_routes import router as ollama_manage_router
from vlmserve.api.ollama.routes import router as ollama_router
from vlmserve.api.openai.audio_routes import router as audio_router
from vlmserve.api.openai.batches_routes import router as batches_router
from vlmserve.api.openai.files_routes import router as files_router
from vlmserve.api.openai.routes import router as openai_router
from vlmserve.api.responses.routes import router as responses_router
from vlmserve.api.state import AppState
from vlmserve.backends.registry import build_backend
from vlmserve.config import Settings
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
from vlmserve.ui.routes import router as ui_router

log = logging.getLogger("vlmserve")

ROUTERS: tuple[APIRouter, ...] = (
    openai_router,
    responses_router,
    anthropic_router,
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
    ui_router,
)


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


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings, state: AppState | None = None, reload_settings: Callable[[], Settings] | None = None
) -> FastAPI:
    """`reload_settings` reads the settings again as they were read at start (for POST /admin/reload)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        vlm = state or build_state(settings, reload_settings)
        app.state.vlm = vlm
        async with _running(vlm):
            yield

    # FastAPI's own OpenTelemetry hooks look the global providers up on every request (~12 % of a non-streamed
    # request's CPU, measured by bench/gateway_overhead.py); vlmserve's metrics are Prometheus (GET /metrics)
    app = FastAPI(title="vlmserve", version=__version__, lifespan=lifespan, telemetry=NO_TELEMETRY)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    add_middleware(app, settings)
    return app


@contextlib.asynccontextmanager
async def _running(vlm: AppState) -> AsyncIterator[None]:
    """Scheduler, jobs and security started (in that order), stopped in the reverse order."""
    vlm.scheduler.start()
    await start_jobs(vlm)
    try:
        vlm.security = await open_security(vlm)
    except BaseException:
        await stop_jobs(vlm)
        await vlm.scheduler.close()
        raise
    vlm.metrics.attach(vlm.scheduler, (vlm.chat.fallbacks, vlm.embed.fallbacks))
    specs = vlm.catalog.all()
    log.info("vlmserve %s serving %d models: %s", __version__, len(specs), ", ".join(s.name for s in specs))
    checks = asyncio.create_task(preflight.warn_at_start(specs))  # beside start-up, not before it
    # what start-up built (routes, schemas, the catalog) lives as long as the server: out of the collector's
    # sight, so the collections that streaming's short-lived objects trigger stop re-walking it
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        checks.cancel()
        if vlm.security is not None:
            await vlm.security.close()
        await stop_jobs(vlm)
        await vlm.scheduler.close()
