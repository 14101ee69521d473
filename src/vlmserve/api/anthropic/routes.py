"""Anthropic Messages API routes: create (JSON or SSE events) and token counting. Errors are Anthropic's shape
(api/anthropic/errors.py, chosen for `/v1/messages` paths by the surface table)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.anthropic import codec, events
from vlmserve.api.anthropic import protocol as p
from vlmserve.api.state import JSONBytes, client_of, fallback_headers, state_of
from vlmserve.api.wire import JsonRoute, RelayStream
from vlmserve.domain.types import SamplingParams

router = APIRouter(prefix="/v1", tags=["anthropic"], route_class=JsonRoute)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/messages")
async def create_message(body: p.MessagesRequest, request: Request) -> Response:
    state = state_of(request)
    chat = codec.to_chat(body)
    chat.client = client_of(request, body.metadata.user_id if body.metadata else None)
    stream = await state.chat.chat(chat)
    encoder = events.MessageEvents(codec.new_id("msg"), stream.model, body.stop_sequences, codec.shows_thinking(body))
    headers = fallback_headers(stream.fallback_from)
    if not body.stream:
        return JSONBytes(await events.collect(encoder, stream), headers=headers)
    return RelayStream(events.sse(encoder, stream), media_type="text/event-stream", headers={**SSE_HEADERS, **headers})


@router.post("/messages/count_tokens")
async def count_tokens(body: p.CountTokensRequest, request: Request) -> Response:
    """The prompt's tokens as the model's engine counts them (its tokenizer and chat template, tools and images
    included): the prompt is evaluated and one token generated."""
    state = state_of(request)
    chat = codec.to_chat(body)
    chat.sampling, chat.client = SamplingParams(max_tokens=1), client_of(request)
    result = await state.chat.collect(await state.chat.chat(chat))
    return JSONBytes({"input_tokens": result.usage.prompt_tokens})
