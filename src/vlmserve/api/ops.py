"""Operational endpoints: GET / (Ollama's liveness text), GET /health (engines' reachability)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from vlmserve import __version__
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.backends.pool import PoolBackend, public_url

router = APIRouter(tags=["ops"], route_class=JsonRoute)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def root() -> Response:
    return PlainTextResponse("vlmserve is running")


@router.get("/health")
async def health(request: Request) -> Response:
    state = state_of(request)

    async def probe(name: str) -> dict[str, Any]:
        spec = state.catalog.get(name)
        if spec.engine == "ocr-chat":
            return {"engine": spec.engine, "loaded": False}
        runtime = state.scheduler.runtime(spec)
        loaded = spec.is_local and runtime.state == "loaded"
        info: dict[str, Any] = {"engine": spec.engine, "loaded": loaded}
        if spec.is_local:
            # a local engine is "reachable" when loaded and answering; None while it is not loaded
            info["reachable"] = await runtime.backend.health() if loaded else None
        else:
            info["reachable"] = await runtime.backend.health()
            info["url"] = public_url(spec.url) if spec.url else None
            if isinstance(runtime.backend, PoolBackend):  # read after the probe above, which updated them
                info["replicas"] = [asdict(replica) for replica in runtime.backend.replica_states()]
        return info

    names = [spec.name for spec in state.catalog.all()]
    results = await asyncio.gather(*(probe(n) for n in names))
    engines = dict(zip(names, results, strict=True))
    degraded = any(info.get("reachable") is False for info in engines.values())
    return JSONBytes(
        {
            "status": "degraded" if degraded else "ok",
            "version": __version__,
            "uptime_seconds": round(time.time() - state.started_at, 1),
            "default_model": state.catalog.default_model,
            "default_vision_model": state.catalog.default_vision_model,
            "default_embedding_model": state.catalog.default_embedding_model,
            "engines": engines,
        }
    )
