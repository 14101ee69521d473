"""Ollama-compatible routes: /api/chat, /api/generate, /api/embed(dings), /api/tags, /api/ps, /api/show."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.ollama import adapter, agentic
from vlmserve.api.ollama import protocol as p
from vlmserve.api.ollama.errors import error_message
from vlmserve.api.state import AppState, JSONBytes, client_of, fallback_headers, state_of
from vlmserve.api.wire import JsonRoute, RelayStream
from vlmserve.backends.engines import traits_of
from vlmserve.backends.pool import public_url
from vlmserve.context import check_model_visible, model_visible
from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability, ChatRequest, ToolCall, ToolCallAssembler, Usage
from vlmserve.errors import VlmServeError
from vlmserve.service.chat import ChatStream

router = APIRouter(prefix="/api", tags=["ollama"], route_class=JsonRoute)
NDJSON = "application/x-ndjson"


def _body(model: str, key: str, text: str, thinking: str = "", calls: list[ToolCall] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": adapter.now_iso()}
    if key == "message":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = agentic.calls_out(calls)
        out["message"] = message
    else:
        out["response"] = text
        if thinking:
            out["thinking"] = thinking
    return out


def _done_reason(finish: str) -> str:
    return "stop" if finish == "tool_calls" else finish  # Ollama says "stop" after tool calls


async def _ndjson(stream: ChatStream, model: str, key: str) -> AsyncIterator[bytes]:
    calls = ToolCallAssembler()
    try:
        async for chunk in stream.chunks:
            calls.add(chunk.tool_calls)
            if chunk.text or chunk.reasoning or chunk.logprobs:
                line = {**_body(model, key, chunk.text, chunk.reasoning), "done": False}
                if chunk.logprobs:
                    line["logprobs"] = agentic.logprobs_out(chunk.logprobs)
                yield orjson.dumps(line) + b"\n"
            if chunk.finish_reason is not None:
                if calls.indexes:  # as current Ollama: the whole calls in one line, arguments as objects
                    yield orjson.dumps({**_body(model, key, "", calls=calls.calls()), "done": False}) + b"\n"
                final = {
                    **_body(model, key, ""),
                    "done": True,
                    "done_reason": _done_reason(chunk.finish_reason),
                    **adapter.final_stats(stream.timings, chunk.usage or Usage()),
                }
                yield orjson.dumps(final) + b"\n"
    except VlmServeError as exc:  # status already sent: Ollama reports it as an error line
        yield orjson.dumps({"error": error_message(exc)}) + b"\n"


async def _answer(state: AppState, stream: ChatStream, request_model: str, key: str, streaming: bool) -> Response:
    request_model = stream.model if stream.fallback_from else request_model  # name the model that answered
    headers = fallback_headers(stream.fallback_from)
    if streaming:
        return RelayStream(_ndjson(stream, request_model, key), media_type=NDJSON, headers=headers)
    result = await state.chat.collect(stream)
    body = {
        **_body(request_model, key, result.text, result.reasoning, result.tool_calls),
        "done": True,
        "done_reason": _done_reason(result.finish_reason),
        **adapter.final_stats(result.timings, result.usage),
    }
    if result.logprobs is not None:
        body["logprobs"] = agentic.logprobs_out(result.logprobs)
    return JSONBytes(body, headers=headers)


@router.post("/chat")
async def chat(body: p.ChatRequest, request: Request) -> Response:
    state = state_of(request)
    if not body.messages:  # Ollama: an empty chat loads (or, with keep_alive 0, unloads) the model
        return await _load_or_unload(state, body.model, body.keep_alive, "message")
    domain = adapter.chat_to_domain(body)
    domain.client = client_of(request)
    stream = await state.chat.chat(domain)
    return await _answer(state, stream, body.model, "message", body.stream)


@router.post("/generate")
async def generate(body: p.GenerateRequest, request: Request) -> Response:
    state = state_of(request)
    if not body.prompt and not body.images:
        return await _load_or_unload(state, body.model, body.keep_alive, "response")
    domain = adapter.generate_to_domain(body)
    domain.client = client_of(request)
    if isinstance(domain, ChatRequest):
        stream = await state.chat.chat(domain)
    else:
        stream = await state.chat.complete(domain)
    return await _answer(state, stream, body.model, "response", body.stream)


async def _load_or_unload(state: AppState, model: str, keep_alive: str | float | None, key: str) -> Response:
    spec = state.catalog.get(model)
    seconds = keep_alive_seconds(keep_alive)
    began = time.perf_counter_ns()
    if seconds == 0:
        await state.scheduler.unload(spec.name, "keep_alive")
        reason = "unload"
    else:
        if not traits_of(spec).pipeline:  # a pipeline loads its parts at its first request
            await state.scheduler.load(spec, seconds)
        reason = "load"
    took = time.perf_counter_ns() - began
    return JSONBytes(
        {
            **_body(model, key, ""),
            "done": True,
            "done_reason": reason,
            "total_duration": took,
            "load_duration": took if reason == "load" else 0,
        }
    )


@router.post("/embed")
async def embed(body: p.EmbedRequest, request: Request) -> Response:
    began = time.perf_counter_ns()
    domain = adapter.embed_to_domain(body)
    domain.client = client_of(request)
    state = state_of(request)
    model, result, load_ns = await state.embed.embed(domain)
    headers = _embed_fallback_headers(state, body.model, model)
    return JSONBytes(
        {
            "model": model if headers else body.model,  # the name asked for, unless a fallback answered
            "embeddings": result.vectors,
            "total_duration": time.perf_counter_ns() - began,
            "load_duration": load_ns,
            "prompt_eval_count": result.prompt_tokens,
        },
        headers=headers,
    )


@router.post("/embeddings")
async def legacy_embeddings(body: p.LegacyEmbeddingsRequest, request: Request) -> Response:
    domain = adapter.embed_to_domain(
        p.EmbedRequest(model=body.model, input=body.prompt or " ", keep_alive=body.keep_alive)
    )
    state = state_of(request)
    model, result, _load = await state.embed.embed(domain)
    return JSONBytes({"embedding": result.vectors[0]}, headers=_embed_fallback_headers(state, body.model, model))


def _embed_fallback_headers(state: AppState, asked: str, answered: str) -> dict[str, str]:
    resolved = state.catalog.resolve(asked, Capability.EMBEDDING).name
    return fallback_headers(resolved if resolved != answered else "")


def _file_size(spec: ModelSpec) -> int:
    total = 0
    for path in (spec.path, spec.mmproj):
        if path and os.path.isfile(path):
            total += os.path.getsize(path)
        elif path and os.path.isdir(path):
            total += sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return total


@router.get("/tags")
async def tags(request: Request) -> Response:
    state = state_of(request)
    visible = [s for s in state.catalog.all() if model_visible(s.name)]  # the API key's models only
    models = [adapter.model_entry(s, _file_size(s), state.started_at) for s in visible]
    return JSONBytes({"models": models})


@router.get("/ps")
async def ps(request: Request) -> Response:
    state = state_of(request)
    running = []
    for runtime in state.scheduler.snapshot().models.values():
        if runtime.state != "loaded" or not runtime.spec.is_local or not model_visible(runtime.name):
            continue  # remote engines manage their own memory: they are not "running" here
        vram = runtime.vram_bytes  # 0: it runs on the CPU (no GPU, or none had room)
        entry = adapter.model_entry(runtime.spec, runtime.need + vram, state.started_at)
        entry.pop("modified_at")
        running.append(
            {
                **entry,
                "expires_at": adapter.expires_iso(runtime.expires_in),
                "size_vram": vram,
                "context_length": runtime.spec.context_size,
            }
        )
    return JSONBytes({"models": running})


@router.post("/show")
async def show(body: p.ShowRequest, request: Request) -> Response:
    state = state_of(request)
    spec = state.catalog.get(body.model or body.name)
    check_model_visible(spec.name)
    defaults = spec.defaults.model_dump(exclude_none=True, exclude_defaults=True)
    parameters = "\n".join(f"{k} {v}" for k, v in defaults.items())
    return JSONBytes(
        {
            "modelfile": f"# vlmserve catalog entry\nFROM {spec.path or public_url(spec.url or '') or spec.engine}\n",
            "parameters": parameters,
            "template": spec.chat_template or "",
            "details": adapter.details(spec),
            "model_info": {
                "general.architecture": spec.family or spec.engine,
                "vlmserve.engine": spec.engine,
                "vlmserve.description": spec.description,
                "general.context_length": spec.context_size,
            },
            "capabilities": [c.value for c in spec.capabilities],
            "modified_at": adapter.model_entry(spec, 0, state.started_at)["modified_at"],
        }
    )


@router.get("/version")
async def version() -> Response:
    from vlmserve import __version__

    return JSONBytes({"version": adapter.OLLAMA_API_VERSION, "vlmserve": __version__})
