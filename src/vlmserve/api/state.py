"""What route handlers reach through `request.app.state.vlm`: the services, built once at start-up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from vlmserve.api.metrics import Metrics
from vlmserve.config import Settings
from vlmserve.context import current
from vlmserve.jobs.runtime import JobsRuntime
from vlmserve.scheduler.core import Scheduler
from vlmserve.security.guard import Security
from vlmserve.service.catalog import Catalog
from vlmserve.service.chat import ChatService
from vlmserve.service.embed import EmbedService
from vlmserve.service.models import ModelManager


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    scheduler: Scheduler
    chat: ChatService
    embed: EmbedService
    models: ModelManager  # pull / create / copy / delete over the API, catalog reloads
    started_at: float = field(default_factory=time.time)
    jobs: JobsRuntime | None = None  # durable batches and async jobs, opened in the app lifespan
    security: Security | None = None  # API keys and rate limits, opened in the app lifespan
    metrics: Metrics = field(default_factory=Metrics)


def client_of(request: Request, fallback: str | None = None) -> str:
    """Who is asking, for fair turns in the queues: the API key's id, else the X-Client-Id header, else the
    body's `user` field."""
    ctx = current.get()
    if ctx is not None and ctx.key_id is not None:
        return ctx.key_id
    return request.headers.get("x-client-id") or fallback or ""


FALLBACK_FROM_HEADER = "x-vlmserve-fallback-from"


def fallback_headers(asked: str) -> dict[str, str]:
    """The response header naming the model asked for when a fallback model answered instead ('' = none did)."""
    return {FALLBACK_FROM_HEADER: asked} if asked else {}


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.vlm
    return state


class JSONBytes(Response):
    """JSON via orjson: several times faster than the stdlib encoder on large embedding payloads."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
