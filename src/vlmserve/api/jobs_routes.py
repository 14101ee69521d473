"""Async single jobs, for the seeds' pattern: submit now, poll later; stored as durably as batches.

POST /analyze/async   same JSON body as POST /analyze  -> 202 {"job_id", "id", "status": "pending"}
GET  /job/{id}        -> {"status": "pending"} | {"status": "complete", "result": "<text>", "model", "usage"}
                         | {"status": "failed", "error": "<message>", "error_info": {"type", "code", "status"}}

The shapes are the deployment service's (an RQ worker's `job.result` text, `str(job.exc_info)`), with the id,
timestamps, model and token usage beside them.

API keys: a key with a model allowlist may submit jobs only on those models (403 `model_not_allowed` at
submission, as /analyze answers; the model resolved then is the one the job runs on). A job is readable only by
the key that submitted it (others get 404, as for an unknown id); jobs submitted with no key are open to all.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from vlmserve.api.openai.files_routes import jobs_of
from vlmserve.api.simple import AnalyzeRequest, Usage
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.context import check_model_visible, current, note_model
from vlmserve.domain.types import Capability
from vlmserve.errors import NotFound, VlmServeError
from vlmserve.jobs.model import JobStatus
from vlmserve.media.images import decode_base64

router = APIRouter(tags=["jobs"], route_class=JsonRoute)
EPOCH_MAX = 2**53  # seconds


class Job(BaseModel):
    id: str
    job_id: str | None = Field(None, description="the id again, as the deployment service named it (at submission)")
    object: Literal["job"]
    kind: str
    status: Literal["pending", "complete", "failed"]
    created_at: int = Field(ge=0, le=EPOCH_MAX)
    completed_at: int | None = Field(ge=0, le=EPOCH_MAX)
    result: str | None = Field(None, description="the answer, once complete")
    model: str | None = None
    usage: Usage | None = None
    error: str | None = Field(None, description="why it failed")
    error_info: dict[str, Any] | None = Field(None, description="the error's type, code and HTTP status")


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    status = JobStatus(row["status"])
    obj: dict[str, Any] = {
        "id": row["id"],
        "object": "job",
        "kind": row["kind"],
        "status": (JobStatus.PENDING if status is JobStatus.RUNNING else status).value,
        "created_at": int(row["created_at"]),
        "completed_at": None if row["completed_at"] is None else int(row["completed_at"]),
    }
    if row["result"]:
        answer = orjson.loads(row["result"])  # what /analyze answered: {"response", "model", "usage"}
        obj.update(result=answer.get("response", ""), model=answer.get("model"), usage=answer.get("usage"))
    if row["error"]:
        error = orjson.loads(row["error"])  # {"message", "type", "code", "status"}
        obj["error"] = error.get("message", "") if isinstance(error, dict) else str(error)
        obj["error_info"] = {k: v for k, v in error.items() if k != "message"} if isinstance(error, dict) else {}
    return obj


def _checked_body(body: AnalyzeRequest, request: Request) -> dict[str, Any]:
    """The job's body, its model checked against the key's allowlist as /analyze checks it (403). The resolved
    name is pinned, so a default model changed before the job runs cannot bypass the check. A model that does
    not resolve is left as asked: the job fails when it runs, as it always has."""
    try:
        spec = state_of(request).catalog.resolve(body.model, Capability.VISION)
    except VlmServeError:
        return body.model_dump()
    check_model_visible(spec.name)  # PermissionDenied (model_not_allowed) for a key limited to other models
    note_model(spec.name)
    return {**body.model_dump(), "model": spec.name}


@router.post("/analyze/async", status_code=202, response_model=Job)
async def analyze_async(body: AnalyzeRequest, request: Request) -> Response:
    jobs = jobs_of(request)
    decode_base64(body.image_base64.split(",", 1)[-1], field="image_base64")  # bad base64 is a 400 now
    ctx = current.get()
    row = await jobs.store.jobs.create_job("analyze", _checked_body(body, request), ctx.key_id if ctx else None)
    jobs.wake()
    return JSONBytes({**job_object(row), "job_id": row["id"]}, status_code=202)


@router.get("/job/{job_id}", response_model=Job)
async def get_job(job_id: str, request: Request) -> Response:
    row = await jobs_of(request).store.jobs.get_job(job_id)
    ctx = current.get()
    asker = ctx.key_id if ctx is not None else None
    if row is None or (asker is not None and row["key_id"] not in (None, asker)):
        raise NotFound(f"no job with id '{job_id}'", param="job_id")
    return JSONBytes(job_object(row))
