"""Admin endpoints: what is loaded and why, the memory budget, and manual load / unload / unload-all."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.state import AppState, JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.memory import MB, machine_memory_bytes
from vlmserve.scheduler.state import Runtime

router = APIRouter(prefix="/admin", tags=["admin"], route_class=JsonRoute)


def _model_info(state: AppState, runtime: Runtime) -> dict[str, Any]:
    now_mono = time.monotonic()  # the scheduler's clock
    expires_in = None if runtime.expires_at is None else round(runtime.expires_at - now_mono, 1)
    counters = state.scheduler.config.counters
    name = runtime.spec.name
    info: dict[str, Any] = {
        "name": name,
        "engine": runtime.spec.engine,
        "state": runtime.state,
        "pinned": runtime.spec.pin,
        "priority": runtime.spec.priority,
        "parallel": runtime.spec.parallel,
        "in_flight": runtime.in_flight,
        "queued": state.scheduler.queued(name),
        "expires_in_seconds": expires_in,
        "memory": {
            "estimated_bytes": runtime.estimate,
            "measured_bytes": runtime.measured,
            "gpu_bytes": {str(d): b for d, b in runtime.gpu_need.items()},
            "gpu_measured": runtime.gpu_measured is not None,
            "placement": _placement(runtime),
        },
        "loads": {reason: n for (kind, model, reason), n in counters.items() if kind == "load" and model == name},
        "unloads": {reason: n for (kind, model, reason), n in counters.items() if kind == "unload" and model == name},
    }
    stats = runtime.backend.stats()  # a pooled remote model: each upstream's health and load
    if stats is not None:
        info["replicas"] = [asdict(replica) for replica in stats.upstreams]
    return info


def _placement(runtime: Runtime) -> dict[str, Any] | None:
    """Where the loaded engine runs: cpu, gpu (devices) or a split, and how many layers are offloaded."""
    placement = runtime.placement
    if placement is None or runtime.state == "unloaded":
        return None
    return {"kind": placement.kind, "devices": list(placement.devices), "gpu_layers": placement.gpu_layers}


@router.get("/models")
async def models(request: Request) -> Response:
    state = state_of(request)
    return JSONBytes({"models": [_model_info(state, r) for r in state.scheduler.runtimes()]})


@router.get("/memory")
async def memory(request: Request) -> Response:
    state = state_of(request)
    budget = state.scheduler.config.budget_bytes
    used = state.scheduler.used_bytes()
    per_model = {r.spec.name: r.need for r in state.scheduler.runtimes() if r.state != "unloaded" and r.need}
    gpus = state.scheduler.gpu_report()
    ram = {
        "device": "cpu",
        "kind": "ram",
        "total_bytes": machine_memory_bytes(),
        "budget_bytes": budget,
        "used_bytes": used,
        "free_bytes": budget - used,
        "models": per_model,
        "budget_mb": budget // MB,
        "used_mb": used // MB,
    }
    devices = [ram] + [{"device": f"cuda:{g['index']}", "kind": "gpu", **g} for g in gpus]
    return JSONBytes({"devices": devices, "gpus": gpus})


def _parts(state: AppState, spec: ModelSpec) -> list[ModelSpec]:
    """The models a pipeline runs on (it has no engine of its own to load), in order; else just the model."""
    names = [p for p in (spec.ocr_model, spec.chat_model) if p]
    return [state.catalog.get(n) for n in names] if names else [spec]


@router.post("/models/{name:path}/load")
async def load(name: str, request: Request) -> Response:
    state = state_of(request)
    spec = state.catalog.get(name)
    parts = _parts(state, spec)
    load_ns = 0
    for part in parts:  # one after the other: each is planned against the budget with the previous one loaded
        load_ns += await state.scheduler.load(part)
    answer: dict[str, Any] = {"model": spec.name, "loaded": True, "load_seconds": round(load_ns / 1e9, 3)}
    if parts != [spec]:
        answer["parts"] = [part.name for part in parts]
    return JSONBytes(answer)


@router.post("/models/{name:path}/unload")
async def unload(name: str, request: Request) -> Response:
    state = state_of(request)
    spec = state.catalog.get(name)
    parts = _parts(state, spec)
    results = await asyncio.gather(*(state.scheduler.unload(part.name, "admin") for part in parts))
    answer: dict[str, Any] = {"model": spec.name, "unloaded": all(results)}
    if parts != [spec]:
        answer["parts"] = [part.name for part in parts]
    return JSONBytes(answer)


@router.post("/unload-all")
async def unload_all(request: Request) -> Response:
    """The seeds' "emergency cleanup": every idle local model is unloaded now, busy ones as soon as they finish."""
    state = state_of(request)
    names = [r.spec.name for r in state.scheduler.runtimes() if r.spec.is_local and r.state == "loaded"]
    results = await asyncio.gather(*(state.scheduler.unload(n, "admin") for n in names))
    return JSONBytes({"unloaded": [n for n, ok in zip(names, results, strict=True) if ok]})
