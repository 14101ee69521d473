"""The multi-model AI server's admin routes, answered from the scheduler's real state, and `POST /admin/reload`.

GET  /admin/memory_status      memory now: the GPU fields from the scheduler's GPU report (gpu_available false and
                               zeros where no GPU is managed) and the RAM budget the scheduler loads models under
GET  /admin/model_status       every catalog model: type, path, path_exists, quant_bits, engine, state
POST /admin/emergency_cleanup  unload every idle local model, delete unused temporary files, trim the heap
GET  /admin/temp_status        the server's temporary files (service/temp_files.py)
POST /admin/cleanup_temp       delete those not in use
POST /admin/reload             read the config file and the pulled-models file again; serve what they say now
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from vlmserve import malloc
from vlmserve.api.state import AppState, JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.backends.pool import public_url
from vlmserve.config import data_dir_path
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability
from vlmserve.scheduler.memory import estimate_bytes, machine_memory_bytes
from vlmserve.service import temp_files

router = APIRouter(prefix="/admin", tags=["admin"], route_class=JsonRoute)
GB = 1024**3
WARN_FRACTION = 0.9  # memory_warning once the models hold this much of the budget
_QUANT = re.compile(r"(?:^|[-_.])(?:I?Q(\d)(?:_[A-Z0-9]+)*|(BF16|F16|F32))(?=[-_.]|$)", re.IGNORECASE)
Gigabytes = Annotated[float, Field(ge=0, le=1e9)]
Count = Annotated[int, Field(ge=0, le=2**53)]
Timestamp = Annotated[int, Field(ge=0, le=2**53, description="seconds since the epoch")]
Megabytes = Annotated[float, Field(ge=0, le=1e12)]


class MemoryStatus(BaseModel):
    timestamp: Timestamp
    gpu_available: bool
    gpu_total_gb: Gigabytes
    gpu_allocated_gb: Gigabytes
    gpu_free_gb: Gigabytes
    memory_warning: bool = Field(
        description=f"loaded models hold {WARN_FRACTION:.0%} or more of the RAM budget or of a GPU's budget"
    )
    multimodal_safe: bool = Field(description="the default vision model is loaded, or fits the free RAM budget as is")
    device: Literal["cpu", "cuda"] = Field(description="cuda when the scheduler manages a GPU")
    ram_total_gb: Gigabytes
    ram_available_gb: Gigabytes
    budget_gb: Gigabytes
    budget_used_gb: Gigabytes
    budget_free_gb: Gigabytes
    loaded_models: list[str]


class ModelConfig(BaseModel):
    type: Literal["text", "vision", "audio", "multimodal", "embedding"]
    path: str | None = Field(description="the model's file or folder; a remote engine's URL")
    path_exists: bool | None = Field(description="its files are on disk (null for remote engines)")
    quant_bits: int | None = Field(ge=1, le=64, description="from the GGUF file name or `quantization`")
    engine: str
    capabilities: list[str]
    state: str
    aliases: list[str]


class ModelStatus(BaseModel):
    timestamp: Timestamp
    available_models: list[str]
    model_configs: dict[str, ModelConfig]


class TempCategory(BaseModel):
    files: Count
    bytes: Count
    in_use: Count


class TempStatus(BaseModel):
    timestamp: Timestamp
    total_files: Count
    total_bytes: Count
    total_mb: Megabytes
    in_use: Count
    categories: dict[str, TempCategory]


class TempCleanup(BaseModel):
    status: Literal["success"]
    timestamp: Timestamp
    removed_files: Count
    freed_bytes: Count
    freed_mb: Megabytes
    kept_in_use: Count
    categories: dict[str, TempCategory]


class EmergencyCleanup(TempCleanup):
    unloaded: list[str]
    heap_trimmed: bool
    memory: MemoryStatus


class ReloadAnswer(BaseModel):
    status: Literal["success"]
    added: list[str]
    removed: list[str]
    changed: list[str]
    restart_needed: list[str] = Field(description="changed models the scheduler keeps under their old definition")
    models: Count


def _available_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return machine_memory_bytes()


def _loaded(state: AppState) -> set[str]:
    return set(state.scheduler.snapshot().loaded_local())


def _need(state: AppState, spec: ModelSpec, loaded: set[str]) -> int:
    """What serving `spec` would add to the budget now (a pipeline: its parts that are not loaded)."""
    parts = [p for p in (spec.ocr_model, spec.chat_model) if p]
    if parts:
        return sum(_need(state, state.catalog.get(p), loaded) for p in parts)
    return 0 if spec.name in loaded else estimate_bytes(spec)


def memory_status(state: AppState) -> dict[str, Any]:
    snapshot = state.scheduler.snapshot()
    budget, used = snapshot.budget_bytes, snapshot.used_bytes
    loaded = set(snapshot.loaded_local())
    vision = state.catalog.default_vision_model
    safe = vision is not None and _need(state, state.catalog.get(vision), loaded) <= budget - used
    gpu = state.scheduler.gpu_status()  # gpu_available, gpu_total_gb, gpu_allocated_gb, gpu_free_gb
    gpu_full = any(g["models_bytes"] >= WARN_FRACTION * g["budget_bytes"] > 0 for g in state.scheduler.gpu_report())
    return {
        "timestamp": int(time.time()),
        "gpu_available": bool(gpu["gpu_available"]), "gpu_total_gb": float(gpu["gpu_total_gb"]),
        "gpu_allocated_gb": float(gpu["gpu_allocated_gb"]), "gpu_free_gb": float(gpu["gpu_free_gb"]),
        "memory_warning": used >= WARN_FRACTION * budget or gpu_full,
        "multimodal_safe": safe,
        "device": "cuda" if gpu["gpu_available"] else "cpu",
        "ram_total_gb": round(machine_memory_bytes() / GB, 2),
        "ram_available_gb": round(_available_bytes() / GB, 2),
        "budget_gb": round(budget / GB, 2),
        "budget_used_gb": round(used / GB, 2),
        "budget_free_gb": round(max(0, budget - used) / GB, 2),
        "loaded_models": sorted(loaded),
    }  # fmt: skip


def _kind(spec: ModelSpec) -> str:
    if spec.can(Capability.EMBEDDING):
        return "embedding"
    seeing, hearing = spec.can(Capability.VISION), spec.can(Capability.AUDIO)
    return "multimodal" if seeing and hearing else "vision" if seeing else "audio" if hearing else "text"


def quant_bits(spec: ModelSpec) -> int | None:
    if spec.quantization != "none":
        return int(spec.quantization.removesuffix("bit"))
    match = _QUANT.search(Path(spec.path).name) if spec.path and spec.path.lower().endswith(".gguf") else None
    if match is None:
        return None
    return int(match.group(1)) if match.group(1) else {"bf16": 16, "f16": 16, "f32": 32}[match.group(2).lower()]


def _config(spec: ModelSpec, state_name: str) -> dict[str, Any]:
    local = bool(spec.path)
    path = spec.path if local else public_url(spec.url) if spec.url else None
    exists = all(os.path.exists(p) for p in (spec.path, spec.mmproj) if p) if local else None
    return {"type": _kind(spec), "path": path, "path_exists": exists, "quant_bits": quant_bits(spec),
            "engine": spec.engine, "capabilities": [c.value for c in spec.capabilities], "state": state_name,
            "aliases": spec.aliases}  # fmt: skip


@router.get("/memory_status", response_model=MemoryStatus)
async def get_memory_status(request: Request) -> Response:
    return JSONBytes(memory_status(state_of(request)))


@router.get("/model_status", response_model=ModelStatus)
async def model_status(request: Request) -> Response:
    state = state_of(request)
    states = {name: m.state for name, m in state.scheduler.snapshot().models.items()}
    specs = state.catalog.all()
    configs = {s.name: _config(s, states.get(s.name, "unloaded" if s.is_local else "remote")) for s in specs}
    return JSONBytes({"timestamp": int(time.time()), "available_models": [s.name for s in specs],
                      "model_configs": configs})  # fmt: skip


def _temp(state: AppState) -> list[temp_files.TempFile]:
    return temp_files.scan(data_dir_path(state.settings), state.models.pulling, state.models.blobs.uploading)


def _status(files: list[temp_files.TempFile]) -> dict[str, Any]:
    size = sum(f.size for f in files)
    return {"timestamp": int(time.time()), "total_files": len(files), "total_bytes": size,
            "total_mb": round(size / 2**20, 2), "in_use": sum(f.in_use for f in files),
            "categories": temp_files.summary(files)}  # fmt: skip


async def _cleanup(state: AppState) -> dict[str, Any]:
    files = await asyncio.to_thread(_temp, state)
    removed = await asyncio.to_thread(temp_files.remove, files)
    freed = sum(f.size for f in removed)
    return {"status": "success", "timestamp": int(time.time()), "removed_files": len(removed), "freed_bytes": freed,
            "freed_mb": round(freed / 2**20, 2), "kept_in_use": sum(f.in_use for f in files),
            "categories": temp_files.summary(removed)}  # fmt: skip


@router.get("/temp_status", response_model=TempStatus)
async def temp_status(request: Request) -> Response:
    return JSONBytes(_status(await asyncio.to_thread(_temp, state_of(request))))


@router.post("/cleanup_temp", response_model=TempCleanup)
async def cleanup_temp(request: Request) -> Response:
    return JSONBytes(await _cleanup(state_of(request)))


@router.post("/emergency_cleanup", response_model=EmergencyCleanup)
async def emergency_cleanup(request: Request) -> Response:
    """Free what can be freed now: idle local models are unloaded (busy ones once they finish), unused
    temporary files deleted, the server's heap trimmed."""
    state = state_of(request)
    names = sorted(_loaded(state))
    results = await asyncio.gather(*(state.scheduler.unload(n, "admin") for n in names))
    cleaned = await _cleanup(state)
    trimmed = await asyncio.to_thread(malloc.trim)
    unloaded = [n for n, ok in zip(names, results, strict=True) if ok]
    return JSONBytes({**cleaned, "unloaded": unloaded, "heap_trimmed": trimmed, "memory": memory_status(state)})


@router.post("/reload", response_model=ReloadAnswer)
async def reload(request: Request) -> Response:
    """Serve the catalog the config file and the pulled-models file declare now (other settings need a restart)."""
    report = await state_of(request).models.reload()
    return JSONBytes({"status": "success", "added": report.added, "removed": report.removed,
                      "changed": report.changed, "restart_needed": report.restart_needed,
                      "models": report.models})  # fmt: skip
