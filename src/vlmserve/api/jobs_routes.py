"""Async single jobs, for the seeds' pattern: submit now, poll later; stored as durably as batches.

POST /analyze/async   same JSON body as POST /analyze  -> 202 {"id", "status": "pending"}
GET  /job/{id}                                          -> {"id", "status": pending|complete|failed, ...}
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.openai.files_routes import jobs_of
from vlmserve.api.simple import AnalyzeRequest
from vlmserve.api.state import JSONBytes
from vlmserve.errors import NotFound
from vlmserve.media.images import decode_base64

router = APIRouter(tags=["jobs"])


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    status = "pending" if row["status"] in ("pending", "running") else row["status"]
    obj: dict[str, Any] = {
        "id": row["id"],
        "object": "job",
        "kind": row["kind"],
        "status": status,
        "created_at": int(row["created_at"]),
        "completed_at": None if row["completed_at"] is None else int(row["completed_at"]),
    }
    if row["result"]:
        obj["result"] = orjson.loads(row["result"])
    if row["error"]:
        obj["error"] = orjson.loads(row["error"])
    return obj


@router.post("/analyze/async", status_code=202)
async def analyze_async(body: AnalyzeRequest, request: Request) -> Response:
    jobs = jobs_of(request)
    decode_base64(body.image_base64.split(",", 1)[-1], field="image_base64")  # bad base64 is a 400 now
    row = await jobs.store.create_job("analyze", body.model_dump())
    jobs.wake()
    return JSONBytes({**job_object(row), "job_id": row["id"]}, status_code=202)


@router.get("/job/{job_id}")
async def get_job(job_id: str, request: Request) -> Response:
    row = await jobs_of(request).store.get_job(job_id)
    if row is None:
        raise NotFound(f"no job with id '{job_id}'", param="job_id")
    return JSONBytes(job_object(row))
