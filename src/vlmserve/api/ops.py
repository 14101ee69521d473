"""Operational endpoints: GET / (Ollama's liveness text), GET /health (readiness: can the default model serve?).

`GET /` answers 200 "Ollama is running" while the process serves HTTP at all: a liveness probe. `GET /health`
is the readiness probe: 200 while the model that `/process` and `/analyze` use (the default vision model, else
the default model) can serve (its files are there, or its remote engine answers), 503 `"status": "unhealthy"`
when it cannot. `"degraded"` (still 200) means that model is fine and another engine is unreachable. The Flask
wrappers' fields come first (`status`, `ollama`: "connected" / "disconnected", `model`), vlmserve's after.
`warnings` names each model whose files are missing or whose engine does not answer, in the words the start-up
log used (service/preflight.py). `GET /metrics` exports the app's Prometheus registry (api/metrics.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.responses import PlainTextResponse, Response

from vlmserve import __version__
from vlmserve.api.state import AppState, JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.backends.pool import public_url
from vlmserve.domain.spec import ModelSpec
from vlmserve.service import preflight

router = APIRouter(tags=["ops"], route_class=JsonRoute)
LIVENESS_TEXT = "Ollama is running"  # what Ollama answers, and what its clients compare


class EngineHealth(BaseModel):
    engine: str
    loaded: bool
    ready: bool = Field(description="can serve a request now (files present / engine reachable)")
    reachable: bool | None = None
    url: str | None = None
    replicas: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    ollama: Literal["connected", "disconnected"] = Field(description="the default model's engine, as the wrapper said")
    model: str | None = Field(description="the model /process and /analyze use")
    ready: bool
    version: str
    uptime_seconds: float = Field(ge=0, le=1e12)
    default_model: str | None
    default_vision_model: str | None
    default_embedding_model: str | None
    engines: dict[str, EngineHealth]
    warnings: list[str] = Field(description="models that cannot serve: missing files, engines that do not answer")


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    # the text exactly as Ollama's (clients compare it); the server names itself in a header
    return PlainTextResponse(LIVENESS_TEXT, headers={"X-Served-By": f"vlmserve/{__version__}"})


def _files_present(spec: ModelSpec) -> bool:
    return all(os.path.exists(p) for p in (spec.path, spec.mmproj) if p)


async def _probe(state: AppState, spec: ModelSpec) -> dict[str, Any]:
    if spec.ocr_model and spec.chat_model:  # a pipeline: it runs on its parts
        return {"engine": spec.engine, "loaded": False, "ready": True}
    if spec.is_local:
        loaded = state.scheduler.snapshot().model(spec).state == "loaded"  # a model never used is unloaded
        # a local engine is "reachable" when loaded and answering; None while it is not loaded
        reachable = (await state.scheduler.engine_health(spec)).reachable if loaded else None
        return {"engine": spec.engine, "loaded": loaded, "reachable": reachable,
                "ready": _files_present(spec) and reachable is not False}  # fmt: skip
    probe = await state.scheduler.engine_health(spec)  # a remote engine is asked even before its first request
    info: dict[str, Any] = {"engine": spec.engine, "loaded": False, "reachable": probe.reachable,
                            "ready": probe.reachable}  # fmt: skip
    info["url"] = public_url(spec.url) if spec.url else None
    if probe.stats is not None:  # read after the probe, which updated them
        info["replicas"] = [asdict(replica) for replica in probe.stats.upstreams]
    return info


def _serves(state: AppState, engines: dict[str, dict[str, Any]], name: str | None) -> bool:
    if name is None or name not in engines:
        return False
    spec = state.catalog.get(name)
    parts = [p for p in (spec.ocr_model, spec.chat_model) if p]
    if parts:
        return all(_serves(state, engines, state.catalog.get(p).name) for p in parts)
    return bool(engines[name]["ready"])


def _warnings(specs: list[ModelSpec], engines: dict[str, dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for spec in specs:
        if spec.is_local:
            found += preflight.missing_files(spec)
        elif engines[spec.name].get("reachable") is False:
            found.append(f"model {spec.name!r}: its engine at {engines[spec.name]['url']} does not answer")
    return found


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request) -> Response:
    """Readiness: 200 while the default model can serve, 503 when it cannot; every engine's state."""
    state = state_of(request)
    specs = state.catalog.all()
    results = await asyncio.gather(*(_probe(state, spec) for spec in specs))
    engines = dict(zip((s.name for s in specs), results, strict=True))
    model = state.catalog.default_vision_model or state.catalog.default_model
    ready = _serves(state, engines, model)
    unreachable = any(info.get("reachable") is False for info in engines.values())
    status = "unhealthy" if not ready else "degraded" if unreachable else "healthy"
    body = {
        "status": status,
        "ollama": "connected" if ready else "disconnected",
        "model": model,
        "ready": ready,
        "version": __version__,
        "uptime_seconds": round(time.time() - state.started_at, 1),
        "default_model": state.catalog.default_model,
        "default_vision_model": state.catalog.default_vision_model,
        "default_embedding_model": state.catalog.default_embedding_model,
        "engines": engines,
        "warnings": _warnings(specs, engines),
    }
    return JSONBytes(body, status_code=200 if ready else 503)


@router.get("/api/health", response_model=Health, responses={503: {"model": Health}})
async def api_health(request: Request) -> Response:
    """`GET /health` under the path the Flask wrapper's README probes Ollama with."""
    return await health(request)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format (api/metrics.py)."""
    state = state_of(request)
    return Response(await state.metrics.render(state.jobs), media_type=CONTENT_TYPE_LATEST)
