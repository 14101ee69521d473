"""One Responses API request, start to end: the stored conversation read back (`previous_response_id`), the
chat request run through ChatService, the response object or its event stream, and the response stored
(`store: true`). Background responses are queued as jobs (`kind: "response"`) of the jobs worker, which runs
`run_background`. The routes, the batch lines and the worker all come through here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from vlmserve.api.responses import codec, objects
from vlmserve.api.responses import protocol as p
from vlmserve.api.responses.events import ResponseEvents
from vlmserve.api.state import AppState
from vlmserve.context import check_model_visible, current, note_model
from vlmserve.domain.types import Capability, ChatRequest, SamplingParams, Usage
from vlmserve.errors import BadRequest, NotFound, Unavailable, VlmServeError
from vlmserve.jobs.responses_store import ResponsesStore
from vlmserve.service.chat import ChatStream
from vlmserve.service.features import check_features

JOB_KIND = "response"
_ITEMS: TypeAdapter[list[p.InputItem]] = TypeAdapter(list[p.InputItem])


def key_id() -> str | None:
    ctx = current.get()
    return ctx.key_id if ctx is not None else None


def store_of(state: AppState) -> ResponsesStore:
    if state.jobs is None:
        raise Unavailable("the response store is not open")
    return ResponsesStore(state.jobs.store.db)


async def prepare(state: AppState, body: p._Context, key: str | None) -> ChatRequest:
    """The chat request of `body`, after the conversation of its previous_response_id (404 when that response
    does not exist, was deleted or is another API key's)."""
    history: list[p.InputItem] = []
    if body.previous_response_id:
        found = await store_of(state).conversation(body.previous_response_id, key)
        if found is None:
            raise NotFound(f"previous response with id '{body.previous_response_id}' not found",
                           param="previous_response_id", code="previous_response_not_found")  # fmt: skip
        try:
            history = _ITEMS.validate_python(found)
        except ValidationError:
            raise BadRequest("the stored conversation cannot be read back", param="previous_response_id") from None
    return codec.to_chat(body, history)


@dataclass
class Started:
    """A response whose first chunk is in (so its HTTP status is known): its chunks wait to be consumed."""

    body: p.ResponsesRequest
    base: dict[str, Any]
    stream: ChatStream
    key: str | None
    store: bool

    @property
    def fallback_from(self) -> str:
        return self.stream.fallback_from


async def start(
    state: AppState, body: p.ResponsesRequest, client: str, *, store: bool | None = None, background: bool = False
) -> Started:
    """`store`: whether to keep it (the request's `store` unless told); `background`: batch work, queued behind
    live requests."""
    key = key_id()
    chat = await prepare(state, body, key)
    chat.client, chat.background = client, background
    stream = await state.chat.chat(chat)
    keep = body.store if store is None else store
    base = {**objects.envelope(body, codec.new_id("resp"), stream.model), "store": keep}
    return Started(body, base, stream, key, keep)


async def collect(state: AppState, started: Started) -> dict[str, Any]:
    result = await state.chat.collect(started.stream)
    obj = objects.finished(started.base, result)
    if started.store:
        await store_of(state).save(obj, objects.stored_items(started.body), started.key)
    return obj


def _sse(event: dict[str, Any]) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def events(state: AppState, started: Started) -> AsyncIterator[bytes]:
    encoder = ResponseEvents(started.base)
    for event in encoder.start():
        yield _sse(event)
    finish, usage = "stop", Usage()
    try:
        async for chunk in started.stream.chunks:
            for event in encoder.chunk(chunk):
                yield _sse(event)
            if chunk.finish_reason is not None:
                finish, usage = chunk.finish_reason, chunk.usage or Usage()
        last = encoder.finish(finish, usage)
    except VlmServeError as exc:  # the status is already sent: the failure travels in-band
        last = encoder.fail(exc)
    if started.store and encoder.final is not None:  # stored before the last event: a GET after it finds it
        await store_of(state).save(encoder.final, objects.stored_items(started.body), started.key)
    for event in last:
        yield _sse(event)


async def count_input_tokens(state: AppState, body: p.InputTokensRequest, client: str) -> dict[str, Any]:
    """The prompt's tokens as the model's engine counts them (its tokenizer and chat template, tools and images
    included): the prompt is evaluated and one token generated."""
    chat = await prepare(state, body, key_id())
    chat.sampling, chat.client = SamplingParams(max_tokens=1), client
    result = await state.chat.collect(await state.chat.chat(chat))
    return {"object": "response.input_tokens", "input_tokens": result.usage.prompt_tokens}


# --- background responses


async def submit_background(state: AppState, body: p.ResponsesRequest, client: str) -> dict[str, Any]:
    """Checked now as a live request is (model, allowlist, features), stored as `queued`, run by the worker."""
    if body.stream:
        raise BadRequest("background responses are not streamed: poll GET /v1/responses/{id}", param="stream")
    if not body.store:
        raise BadRequest("a background response needs store: true", param="background")
    if state.jobs is None:
        raise Unavailable("the jobs store is not open")
    key = key_id()
    chat = await prepare(state, body, key)
    images = any(m.has_images for m in chat.messages)
    spec = state.catalog.resolve(chat.model or None, Capability.VISION if images else Capability.COMPLETION)
    check_features(spec, chat)
    check_model_visible(spec.name)  # 403 for a key limited to other models
    note_model(spec.name)
    pinned = body.model_dump(mode="json", by_alias=True, exclude_none=True) | {"model": spec.name}
    base = {**objects.envelope(body, codec.new_id("resp"), spec.name), "status": "queued"}
    await store_of(state).save(base, objects.stored_items(body), key)
    job = {"id": base["id"], "body": pinned, "client": client, "key_id": key}
    await state.jobs.store.jobs.create_job(JOB_KIND, job, key)
    state.jobs.wake()
    return base


async def run_background(state: AppState, job: dict[str, Any]) -> dict[str, Any]:
    """The worker's side: run the queued response and store what it answered (or why it failed)."""
    rid, key = str(job["id"]), job.get("key_id")
    store = store_of(state)
    row = await store.get(rid, key)
    if row is None or row["status"] != "queued":  # deleted or cancelled before it ran
        return {"id": rid, "status": row["status"] if row else "deleted"}
    items = row["input_items"]
    base = {**row["response"], "status": "in_progress"}
    await store.save(base, items, key)
    try:
        body = p.ResponsesRequest.model_validate(job["body"])
        chat = replace(await prepare(state, body, key), client=str(job.get("client") or ""), background=True)
        obj = objects.finished(base, await state.chat.collect(await state.chat.chat(chat)))
    except VlmServeError as exc:
        obj = objects.failed(base, exc)
    now = await store.get(rid, key)
    if now is not None and now["status"] == "in_progress":  # not cancelled (nor deleted) while it ran
        await store.save(obj, items, key)
    return {"id": rid, "status": obj["status"]}


async def cancel(state: AppState, response_id: str) -> dict[str, Any]:
    store = store_of(state)
    key = key_id()
    row = await store.get(response_id, key)
    if row is None:
        raise NotFound(f"no response with id '{response_id}'", param="response_id")
    obj = row["response"]
    if not obj.get("background"):
        raise BadRequest("only background responses can be cancelled", param="response_id")
    if row["status"] in ("queued", "in_progress"):
        obj = {**obj, "status": "cancelled"}
        await store.save(obj, row["input_items"], key)
    return dict(obj)
