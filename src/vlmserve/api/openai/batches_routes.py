"""OpenAI Batches: POST/GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from vlmserve.api.openai import adapter
from vlmserve.api.openai.files_routes import get_file_row, jobs_of
from vlmserve.api.state import JSONBytes
from vlmserve.api.wire import JsonRoute
from vlmserve.context import current
from vlmserve.domain.duration import parse_duration
from vlmserve.errors import BadRequest, Conflict, NotFound
from vlmserve.jobs.model import ENDPOINTS, BatchStatus, ItemState
from vlmserve.jobs.runtime import JobsRuntime

router = APIRouter(prefix="/v1", tags=["openai-batches"], route_class=JsonRoute)
_TIMES = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
          "expired_at", "cancelling_at", "cancelled_at")  # fmt: skip


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str = Field(min_length=1)
    endpoint: str
    completion_window: str = Field("24h", max_length=32)
    # OpenAI's limits: keys up to 64 characters, values up to 512 (at most 16 keys: checked in create_batch)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = None


def batch_object(row: dict[str, Any], counts: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
    def n(*states: ItemState) -> int:
        return sum(counts.get(s.value, (0, 0, 0))[0] for s in states)

    prompt = sum(c[1] for c in counts.values())
    completion = sum(c[2] for c in counts.values())
    obj: dict[str, Any] = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": orjson.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
    }
    obj.update({key: None if row[key] is None else int(row[key]) for key in _TIMES})
    obj["request_counts"] = {
        "total": sum(c[0] for c in counts.values()),
        "completed": n(ItemState.SUCCEEDED),
        "failed": n(ItemState.FAILED, ItemState.CANCELLED, ItemState.EXPIRED),
    }
    obj["metadata"] = orjson.loads(row["metadata"]) if row["metadata"] else None
    obj["usage"] = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    return obj


async def _render(jobs: JobsRuntime, batch_id: str) -> dict[str, Any]:
    row = await jobs.store.batches.get_batch(batch_id)
    if row is None:
        raise NotFound(f"no batch with id '{batch_id}'", param="batch_id")
    return batch_object(row, await jobs.store.batches.batch_counts(batch_id))


MAX_WINDOW = 7 * 86_400  # OpenAI takes only "24h"; shorter windows (tests, quick jobs) and up to a week here


def _window_seconds(window: str) -> float:
    try:
        seconds = parse_duration(window)
    except ValueError:
        seconds = None
    if seconds is None or not 1 <= seconds <= MAX_WINDOW:
        raise BadRequest("completion_window must be a duration from '1s' to '168h' (OpenAI accepts '24h')",
                         param="completion_window")  # fmt: skip
    return seconds


@router.post("/batches")
async def create_batch(body: BatchCreate, request: Request) -> Response:
    jobs = jobs_of(request)
    if body.endpoint not in ENDPOINTS:
        raise BadRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint")
    seconds = _window_seconds(body.completion_window)
    if body.metadata is not None and len(body.metadata) > 16:
        raise BadRequest("metadata takes at most 16 keys", param="metadata")
    file = await get_file_row(jobs, body.input_file_id)
    if file["purpose"] != "batch":
        raise BadRequest(f"file {file['id']} has purpose '{file['purpose']}', not 'batch'", param="input_file_id")
    ctx = current.get()  # the API key's model allowlist goes with the batch: its lines may use only those models
    row = await jobs.store.batches.create_batch(
        body.endpoint, body.input_file_id, body.completion_window, seconds, body.metadata,
        ctx.models if ctx is not None else None,
    )  # fmt: skip
    jobs.wake()
    return JSONBytes(batch_object(row, {}))


@router.get("/batches")
async def list_batches(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)) -> Response:
    jobs = jobs_of(request)
    rows, has_more = await jobs.store.batches.list_batches(after, limit)
    data = [batch_object(row, await jobs.store.batches.batch_counts(row["id"])) for row in rows]
    return JSONBytes(adapter.list_page(data, has_more))


@router.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request) -> Response:
    return JSONBytes(await _render(jobs_of(request), batch_id))


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, request: Request) -> Response:
    jobs = jobs_of(request)
    current = await _render(jobs, batch_id)
    if current["status"] in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS):
        await jobs.store.batches.request_cancel(batch_id)
        jobs.wake()
        return JSONBytes(await _render(jobs, batch_id))
    if current["status"] in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
        return JSONBytes(current)
    raise Conflict(f"batch {batch_id} is {current['status']} and can no longer be cancelled")
