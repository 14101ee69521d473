"""OpenAI Files: POST/GET /v1/files, GET/DELETE /v1/files/{id}, GET /v1/files/{id}/content."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from vlmserve.api.forms import FILE_FIELD, multipart_body, multipart_file
from vlmserve.api.openai import adapter
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.errors import BadRequest, NotFound, PayloadTooLarge, Unavailable
from vlmserve.jobs.model import FILE_PURPOSES
from vlmserve.jobs.runtime import JobsRuntime
from vlmserve.jobs.validate import count_lines

router = APIRouter(prefix="/v1", tags=["openai-files"], route_class=JsonRoute)


def jobs_of(request: Request) -> JobsRuntime:
    jobs = state_of(request).jobs
    if jobs is None:
        raise Unavailable("the batch store is not open")
    return jobs


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": int(row["bytes"]),
        "created_at": int(row["created_at"]),
        "expires_at": _ts(row["expires_at"]),
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


def _expires_at(fields: dict[str, str]) -> float | None:
    anchor = fields.get("expires_after[anchor]") or fields.get("expires_after.anchor")
    seconds = fields.get("expires_after[seconds]") or fields.get("expires_after.seconds")
    if seconds is None:
        return None
    if anchor not in (None, "created_at"):
        raise BadRequest("expires_after.anchor must be 'created_at'", param="expires_after.anchor")
    try:
        value = int(seconds)
    except ValueError:
        raise BadRequest("expires_after.seconds must be an integer", param="expires_after.seconds") from None
    if not 3600 <= value <= 2_592_000:
        raise BadRequest("expires_after.seconds must be between 3600 and 2592000", param="expires_after.seconds")
    return time.time() + value


async def get_file_row(jobs: JobsRuntime, file_id: str) -> dict[str, Any]:
    row = await jobs.store.files.get_file(file_id)
    if row is None:
        raise NotFound(f"no file with id '{file_id}'", param="file_id")
    return row


@router.post(
    "/files",
    openapi_extra=multipart_body({"file": FILE_FIELD, "purpose": {"type": "string", "enum": list(FILE_PURPOSES)},
                                  "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                                  "expires_after[seconds]": {"type": "integer", "minimum": 3600,
                                                             "maximum": 2592000}}),
)  # fmt: skip
async def upload_file(request: Request) -> Response:
    jobs = jobs_of(request)
    _, upload, fields = await multipart_file(request, ("file",), "a 'file' field and a 'purpose' field")
    purpose = fields.get("purpose")
    if purpose not in FILE_PURPOSES:
        raise BadRequest(f"purpose must be one of {', '.join(FILE_PURPOSES)}", param="purpose")
    data = await upload.read(jobs.max_file_bytes + 1)
    if len(data) > jobs.max_file_bytes:
        raise PayloadTooLarge(f"files may be at most {jobs.max_file_bytes} bytes", param="file")
    lines = None
    if purpose == "batch":
        lines = count_lines(data)
        if lines > jobs.max_lines:
            raise BadRequest(f"a batch input file may have at most {jobs.max_lines} lines, not {lines}",
                             param="file")  # fmt: skip
    row = await jobs.store.files.create_file(purpose, upload.filename or "upload", data, _expires_at(fields), lines)
    return JSONBytes(file_object(row))


@router.get("/files")
async def list_files(
    request: Request,
    purpose: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    order: str = Query("desc", pattern="^(asc|desc)$"),
    after: str | None = None,
) -> Response:
    rows, has_more = await jobs_of(request).store.files.list_files(purpose, limit, order, after)
    data = [file_object(row) for row in rows]
    return JSONBytes(adapter.list_page(data, has_more))


@router.get("/files/{file_id}")
async def retrieve_file(file_id: str, request: Request) -> Response:
    return JSONBytes(file_object(await get_file_row(jobs_of(request), file_id)))


@router.get("/files/{file_id}/content")
async def file_content(file_id: str, request: Request) -> Response:
    jobs = jobs_of(request)
    row = await get_file_row(jobs, file_id)
    media = "application/jsonl" if row["filename"].endswith(".jsonl") else "application/octet-stream"
    return Response(await jobs.store.files.file_content(file_id), media_type=media)


@router.delete("/files/{file_id}")
async def delete_file(file_id: str, request: Request) -> Response:
    jobs = jobs_of(request)
    await get_file_row(jobs, file_id)
    deleted = await jobs.store.files.delete_file(file_id)
    return JSONBytes({"id": file_id, "object": "file", "deleted": deleted})
