"""What the status page shows, read from the scheduler, the metrics' recent-requests list and the batch store.

Plain functions returning JSON-ready dicts, so the route stays a few lines. Nothing here holds prompts or
images: the recent list only has route, model, outcome and counts (see api/metrics.RecentRequest).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from vlmserve import __version__
from vlmserve.api.openai.batches_routes import batch_object
from vlmserve.api.state import AppState
from vlmserve.backends.engines import traits_of
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.memory import machine_memory_bytes
from vlmserve.scheduler.snapshot import ModelSnapshot

RECENT_BATCHES = 10


def _state_of(spec: ModelSpec, runtime: ModelSnapshot | None) -> str:
    if not spec.is_local:
        return "pipeline" if traits_of(spec).pipeline else "remote"
    return runtime.state if runtime is not None else "unloaded"


def model_rows(state: AppState) -> list[dict[str, Any]]:
    """Every catalog model with its scheduler state; loaded ones first. Models never used have no runtime yet."""
    runtimes = state.scheduler.snapshot().models
    rows = []
    for spec in state.catalog.all():
        runtime = runtimes.get(spec.name)
        holds = runtime is not None and spec.is_local and runtime.holds_memory
        expires = runtime.expires_in if runtime is not None else None  # seconds from now, on its own clock
        rows.append({
            "name": spec.name, "engine": spec.engine, "state": _state_of(spec, runtime),
            "capabilities": [c.value for c in spec.capabilities],
            "memory_bytes": runtime.need if holds and runtime is not None else 0,
            "vram_bytes": runtime.vram_bytes if holds and runtime is not None else 0,
            "measured": runtime is not None and runtime.measured is not None,
            "in_flight": runtime.in_flight if runtime is not None else 0, "parallel": spec.parallel,
            "queued": runtime.queued if runtime is not None else 0,
            "expires_in_seconds": None if expires is None else max(0.0, round(expires, 1)),
            "pinned": spec.pin,
        })  # fmt: skip
    rows.sort(key=lambda row: (row["state"] != "loaded", row["name"]))
    return rows


def memory_summary(state: AppState) -> dict[str, Any]:
    snapshot = state.scheduler.snapshot()
    return {
        "budget_bytes": snapshot.budget_bytes,
        "used_bytes": snapshot.used_bytes,
        "machine_bytes": machine_memory_bytes(),
        "gpus": state.scheduler.gpu_report(),  # one bar each: what our models hold of its budget
    }


async def batch_rows(state: AppState, limit: int = RECENT_BATCHES) -> list[dict[str, Any]]:
    """The newest batches with their line counts (the same object GET /v1/batches/{id} returns, trimmed)."""
    if state.jobs is None:
        return []
    store = state.jobs.store
    rows, _more = await store.batches.list_batches(None, limit)
    out = []
    for row in rows:
        batch = batch_object(row, await store.batches.batch_counts(row["id"]))
        out.append({key: batch.get(key) for key in ("id", "status", "endpoint", "created_at", "request_counts")})
    return out


async def snapshot(state: AppState) -> dict[str, Any]:
    """The whole status payload (GET /admin/status)."""
    models = model_rows(state)
    return {
        "version": __version__,
        "now": time.time(),
        "uptime_seconds": round(time.time() - state.started_at, 1),
        "memory": memory_summary(state),
        "models": models,
        "queues": {row["name"]: row["queued"] for row in models if row["queued"]},
        "recent_requests": [asdict(entry) for entry in reversed(state.metrics.recent)],  # newest first
        "batches": await batch_rows(state),
    }
