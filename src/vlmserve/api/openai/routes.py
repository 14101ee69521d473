"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.openai import adapter
from vlmserve.api.openai.errors import error_body
from vlmserve.api.state import JSONBytes, client_of, fallback_headers, state_of
from vlmserve.api.wire import JsonRoute, RelayStream
from vlmserve.context import check_model_visible, model_visible
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability, ChatChunk
from vlmserve.errors import VlmServeError
from vlmserve.service.chat import ChatStream
from vlmserve.wire import openai_models as p
from vlmserve.wire.openai_answers import ChunkEncoder

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JsonRoute)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _sse_stream(stream: ChatStream, encoder: ChunkEncoder, include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream.chunks:
            for event in encoder.encode(chunk):
                yield _sse(event)
            if chunk.finish_reason is not None and include_usage and chunk.usage is not None:
                yield _sse(encoder.usage(chunk.usage))
    except VlmServeError as exc:  # status is already sent: the error travels in-band
        yield _sse(error_body(exc))
    yield b"data: [DONE]\n\n"


@router.post("/chat/completions")
async def chat_completions(body: p.ChatCompletionRequest, request: Request) -> Response:
    state = state_of(request)
    domain = adapter.chat_to_domain(body)
    domain.client = client_of(request, body.user)
    stream = await state.chat.chat(domain)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    headers = fallback_headers(stream.fallback_from)
    if not body.stream:
        return JSONBytes(adapter.chat_response(rid, stream.model, await state.chat.collect(stream)), headers=headers)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return RelayStream(
        _sse_stream(stream, ChunkEncoder(rid, stream.model), include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


async def _echoed(prompt: str, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    yield ChatChunk(text=prompt)
    async for chunk in chunks:
        yield chunk


@router.post("/completions")
async def completions(body: p.CompletionRequest, request: Request) -> Response:
    state = state_of(request)
    domain = adapter.completion_to_domain(body)
    domain.client = client_of(request, body.user)
    stream = await state.chat.complete(domain)
    rid = f"cmpl-{uuid.uuid4().hex}"
    headers = fallback_headers(stream.fallback_from)
    if body.echo:  # the prompt comes back first, as OpenAI's echo does
        stream.chunks = _echoed(domain.prompt, stream.chunks)
    if not body.stream:
        result = await state.chat.collect(stream)
        return JSONBytes(adapter.completion_response(rid, stream.model, result), headers=headers)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return RelayStream(
        _sse_stream(stream, ChunkEncoder(rid, stream.model, chat=False), include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


@router.post("/embeddings")
async def embeddings(body: p.EmbeddingRequest, request: Request) -> Response:
    domain = adapter.embed_to_domain(body)
    domain.client = client_of(request, body.user)
    state = state_of(request)
    model, result, _load_ns = await state.embed.embed(domain)
    asked = state.catalog.resolve(body.model, Capability.EMBEDDING).name
    headers = fallback_headers(asked if model != asked else "")
    return JSONBytes(adapter.embeddings_response(model, result, body.encoding_format), headers=headers)


def _model_card(spec: ModelSpec, created: int) -> dict[str, Any]:
    return {
        "id": spec.name,
        "object": "model",
        "created": created,
        "owned_by": "vlmserve",
        "capabilities": [c.value for c in spec.capabilities],
        "engine": spec.engine,
        "aliases": spec.aliases,
    }


@router.get("/models")
async def list_models(request: Request) -> Response:
    state = state_of(request)
    created = int(state.started_at)
    cards = [_model_card(s, created) for s in state.catalog.all() if model_visible(s.name)]  # the key's models
    return JSONBytes({"object": "list", "data": cards})


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    state = state_of(request)
    spec = state.catalog.get(model_id)
    check_model_visible(spec.name)
    return JSONBytes(_model_card(spec, int(state.started_at)))
