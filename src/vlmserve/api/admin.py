"""Admin endpoints: what is loaded and why, the memory budget, and manual load / unload / unload-all."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.state import AppState, JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.memory import MB, machine_memory_bytes
from vlmserve.scheduler.snapshot import ModelSnapshot, SchedulerSnapshot

router = APIRouter(prefix="/admin", tags=["admin"], route_class=JsonRoute)


def _model_info(snapshot: SchedulerSnapshot, runtime: ModelSnapshot) -> dict[str, Any]:
    expires_in = None if runtime.expires_in is None else round(runtime.expires_in, 1)
    counters = snapshot.counters
    name = runtime.name
    info: dict[str, Any] = {
        "name": name,
        "engine": runtime.spec.engine,
        "state": runtime.state,
        "pinned": runtime.spec.pin,
        "priority": runtime.spec.priority,
        "parallel": runtime.spec.parallel,
        "in_flight": runtime.in_flight,
        "queued": runtime.queued,
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
    if runtime.stats is not None:  # a pooled remote model: each upstream's health and load
        info["replicas"] = [asdict(replica) for replica in runtime.stats.upstreams]
    return info


def _placement(runtime: ModelSnapshot) -> dict[str, Any] | None:
    """Where the loaded engine runs: cpu, gpu (devices) or a split, and how many layers are offloaded."""
    placement = runtime.placement
    if placement is None or runtime.state == "unloaded":
        return None
    return {"kind": placement.kind, "devices": list(placement.devices), "gpu_layers": placement.gpu_layers}


@router.get("/models")
async def models(request: Request) -> Response:
    snapshot = state_of(request).scheduler.snapshot()
    return JSONBytes({"models": [_model_info(snapshot, r) for r in snapshot.models.values()]})


@router.get("/memory")
async def memory(request: Request) -> Response:
    state = state_of(request)
    snapshot = state.scheduler.snapshot()
    budget, used = snapshot.budget_bytes, snapshot.used_bytes
    per_model = {r.name: r.need for r in snapshot.models.values() if r.state != "unloaded" and r.need}
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
    names = state.scheduler.snapshot().loaded_local()
    results = await asyncio.gather(*(state.scheduler.unload(n, "admin") for n in names))
    return JSONBytes({"unloaded": [n for n, ok in zip(names, results, strict=True) if ok]})
