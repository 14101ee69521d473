"""Ollama's model management: /api/pull, /api/delete, /api/copy, /api/create and the blob uploads create uses.

- pull: `hf.co/{owner}/{repo}[:{quant or file}]` from the Hugging Face Hub (HF_ENDPOINT honoured), named as
  given; Ollama's progress lines (NDJSON) or, with `"stream": false`, one `{"status": "success"}`. A model
  already in the catalog (under any name it has) answers success at once, without the Hub.
- delete: a model added over the API (pulled, created, copied); its files go when no other model uses them.
- copy: a second, independent catalog entry with the same definition.
- create: from a catalog model, a GGUF path on the server, or `files` (blob digests or paths): one GGUF model
  file and at most one projector; `template`, `parameters`.
The catalog changes live (service/models.py). The routes need the `admin` scope once API keys exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from vlmserve.api.ollama import manage_protocol as mp
from vlmserve.api.ollama.errors import error_message
from vlmserve.api.ollama.protocol import Options
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.errors import BadRequest, VlmServeError

router = APIRouter(prefix="/api", tags=["ollama"], route_class=JsonRoute)
NDJSON = "application/x-ndjson"
SUCCESS = {"status": "success"}
# Modelfile PARAMETERs -> catalog entry fields; sampling ones go to `defaults`
SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed",
            "repeat_penalty": "repeat_penalty", "stop": "stop", "num_predict": "max_tokens"}  # fmt: skip
ENGINE = {"num_ctx": "context_size", "num_thread": "threads", "num_gpu": "gpu_layers"}
REFUSED = {
    "system": "a per-model system prompt",
    "messages": "per-model messages",
    "adapters": "LoRA adapters",
    "quantize": "quantising on the server",
    "modelfile": "the `modelfile` field (removed in Ollama 0.5: send `from` / `files` / `parameters`)",
}


async def _lines(progress: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for line in progress:
            yield orjson.dumps(line) + b"\n"
    except VlmServeError as exc:  # the status is sent: Ollama reports it as an error line
        yield orjson.dumps({"error": error_message(exc)}) + b"\n"


async def _fixed(lines: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for line in lines:
        yield line


def _named(model: str, name: str) -> str:
    chosen = (model or name).strip()
    if not chosen:
        raise BadRequest("model is required", param="model")
    return chosen


@router.post("/pull", response_model=mp.Progress)
async def pull(body: mp.PullRequest, request: Request) -> Response:
    manager = state_of(request).models
    job = await manager.prepare_pull(_named(body.model, body.name))  # 400 / 404 / 502 before any byte
    progress = manager.pull(job) if job is not None else _fixed([{"status": "pulling manifest"}, SUCCESS])
    if not body.stream:
        async for _line in progress:
            pass
        return JSONBytes(SUCCESS)
    return StreamingResponse(_lines(progress), media_type=NDJSON)


@router.delete("/delete")
async def delete(body: mp.DeleteRequest, request: Request) -> Response:
    await state_of(request).models.delete(_named(body.model, body.name))
    return Response(status_code=200)


@router.post("/copy")
async def copy(body: mp.CopyRequest, request: Request) -> Response:
    await state_of(request).models.copy(body.source, body.destination)
    return Response(status_code=200)


def _overrides(body: mp.CreateRequest) -> dict[str, Any]:
    """The catalog fields a create sets: `template`, and `parameters` (bounded as /api/chat's options are)."""
    for field, what in REFUSED.items():
        if getattr(body, field) is not None:
            raise BadRequest(f"vlmserve does not support {what}", param=field)
    try:
        options = Options.model_validate(body.parameters or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadRequest(f"parameters.{where}: {first.get('msg', 'invalid')}", param="parameters") from None
    values = options.model_dump(exclude_none=True)
    unknown = sorted(k for k in values if k not in SAMPLING and k not in ENGINE)
    if unknown:
        raise BadRequest(f"unsupported parameters: {', '.join(unknown)}", param="parameters")
    defaults = {SAMPLING[k]: v for k, v in values.items() if k in SAMPLING}
    if isinstance(defaults.get("stop"), str):
        defaults["stop"] = [defaults["stop"]]
    if defaults.get("max_tokens", 1) < 1:  # -1 / -2: no limit, as no default is
        defaults.pop("max_tokens")
    fields: dict[str, Any] = {ENGINE[k]: v for k, v in values.items() if k in ENGINE}
    if body.template is not None:
        fields["chat_template"] = body.template
    if defaults:
        fields["defaults"] = defaults
    return fields


@router.post("/create", response_model=mp.Progress)
async def create(body: mp.CreateRequest, request: Request) -> Response:
    overrides = _overrides(body)
    manager = state_of(request).models
    spec = await manager.create(_named(body.model, body.name), body.from_, dict(body.files or {}), overrides)
    if not body.stream:
        return JSONBytes(SUCCESS)
    used = [p for p in (spec.path, spec.mmproj) if p]
    lines = [*({"status": f"using {path}"} for path in used), {"status": "writing manifest"}, SUCCESS]
    return StreamingResponse(_lines(_fixed(lines)), media_type=NDJSON)


@router.head("/blobs/{digest}")
async def blob_exists(digest: str, request: Request) -> Response:
    return Response(status_code=200 if state_of(request).models.blobs.exists(digest) else 404)


_RAW_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary"}}}}}  # fmt: skip


@router.post("/blobs/{digest}", status_code=201, openapi_extra=_RAW_BODY)
async def upload_blob(digest: str, request: Request) -> Response:
    """The file's bytes as the body (any size: not held in memory), checked against its sha256."""
    length = request.headers.get("content-length")
    created = await state_of(request).models.blobs.write(
        digest, request.stream(), int(length) if length and length.isdigit() else None
    )
    return Response(status_code=201 if created else 200)
