"""Multipart uploads, read the same way by every endpoint that takes a file (/process, /v1/files, audio)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from vlmserve.api.wire import check_text
from vlmserve.errors import BadRequest

FILE_FIELD: dict[str, Any] = {"type": "string", "format": "binary"}


def multipart_body(fields: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI request body (for `openapi_extra`) of a multipart route that reads its form itself; the first
    field is required."""
    schema = {"type": "object", "properties": fields, "required": [next(iter(fields))]}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def multipart_file(request: Request, names: tuple[str, ...], what: str) -> tuple[str, UploadFile, dict[str, str]]:
    """(field name, file) of the first of `names` present as a file, and the form's text fields; 400 otherwise."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest(f"send multipart/form-data with {what}", param=names[0])
    form = await request.form()
    # a part's charset may be any codec (unicode_escape yields lone surrogates): text is checked like JSON's
    fields = {check_text(key, key): check_text(value, key) for key, value in form.items() if isinstance(value, str)}
    for name in names:
        upload = form.get(name)
        if isinstance(upload, UploadFile):
            check_text(upload.filename or "", "filename")
            return name, upload, fields
    raise BadRequest(f"missing file field '{names[0]}' ({what})", param=names[0])
