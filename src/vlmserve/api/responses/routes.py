"""OpenAI Responses API routes: create (JSON, SSE events or background), retrieve, delete, cancel, input items,
input token counts. The work is in answer.py; errors are OpenAI's shape (the `/v1/` error mapper)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from vlmserve.api.responses import answer
from vlmserve.api.responses import protocol as p
from vlmserve.api.state import JSONBytes, client_of, fallback_headers, state_of
from vlmserve.api.wire import Bool, JsonRoute, RelayStream
from vlmserve.errors import BadRequest, NotFound

router = APIRouter(prefix="/v1", tags=["openai"], route_class=JsonRoute)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/responses")
async def create_response(body: p.ResponsesRequest, request: Request) -> Response:
    state = state_of(request)
    client = client_of(request, body.user)
    if body.background:
        return JSONBytes(await answer.submit_background(state, body, client))
    started = await answer.start(state, body, client)
    headers = fallback_headers(started.fallback_from)
    if not body.stream:
        return JSONBytes(await answer.collect(state, started), headers=headers)
    return RelayStream(
        answer.events(state, started), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )


@router.post("/responses/input_tokens")
async def count_input_tokens(body: p.InputTokensRequest, request: Request) -> Response:
    state = state_of(request)
    return JSONBytes(await answer.count_input_tokens(state, body, client_of(request)))


async def _stored(request: Request, response_id: str) -> dict[str, Any]:
    row = await answer.store_of(state_of(request)).get(response_id, answer.key_id())
    if row is None:
        raise NotFound(f"no response with id '{response_id}'", param="response_id")
    return row


@router.get("/responses/{response_id}")
async def get_response(response_id: str, request: Request, stream: Bool = False) -> Response:
    if stream:
        raise BadRequest("replaying a response's events is not supported: omit stream", param="stream")
    return JSONBytes((await _stored(request, response_id))["response"])


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> Response:
    if not await answer.store_of(state_of(request)).delete(response_id, answer.key_id()):
        raise NotFound(f"no response with id '{response_id}'", param="response_id")
    return JSONBytes({"id": response_id, "object": "response.deleted", "deleted": True})


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, request: Request) -> Response:
    return JSONBytes(await answer.cancel(state_of(request), response_id))


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    request: Request,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> Response:
    items: list[dict[str, Any]] = (await _stored(request, response_id))["input_items"]
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        at = next((i for i, item in enumerate(ordered) if item.get("id") == after), None)
        if at is None:
            raise BadRequest(f"no input item with id '{after}' in this response", param="after")
        ordered = ordered[at + 1 :]
    page = ordered[:limit]
    return JSONBytes({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                      "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > limit})  # fmt: skip
