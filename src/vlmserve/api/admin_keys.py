"""Admin API of API keys: POST /admin/keys (the secret is in the answer, once), GET /admin/keys,
DELETE /admin/keys/{id}. Needs the admin scope (like every /admin route) once keys are in use."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.config import Scope
from vlmserve.errors import BadRequest, NotFound
from vlmserve.security.guard import Security
from vlmserve.security.keys import LIMIT_MAX

router = APIRouter(prefix="/admin/keys", tags=["admin"], route_class=JsonRoute)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["inference"]), min_length=1)
    models: list[str] | None = None
    # le: the key table's BIGINT columns (a larger number was a 500 from the database driver)
    rpm: int | None = Field(None, ge=0, le=LIMIT_MAX)
    tpm: int | None = Field(None, ge=0, le=LIMIT_MAX)
    concurrency: int | None = Field(None, ge=0, le=LIMIT_MAX)


def _security(request: Request) -> Security:
    security = state_of(request).security
    if security is None or security.store is None:
        raise BadRequest("API keys need the batch database, which is not open")
    return security


@router.post("", status_code=201)
async def create_key(body: KeyCreate, request: Request) -> Response:
    security = _security(request)
    assert security.store is not None
    secret, key = await security.store.create(
        name=body.name,
        scopes=list(body.scopes),
        models=body.models,
        rpm=body.rpm,
        tpm=body.tpm,
        concurrency=body.concurrency,
    )
    security.keys.remember(secret, key)
    return JSONBytes({**key.public(), "key": secret}, status_code=201)


@router.get("")
async def list_keys(request: Request, include_revoked: bool = False) -> Response:
    security = _security(request)
    assert security.store is not None
    return JSONBytes({"object": "list", "data": [k.public() for k in await security.store.list(include_revoked)]})


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request) -> Response:
    security = _security(request)
    assert security.store is not None
    if not await security.store.revoke(key_id):
        raise NotFound(f"no active API key {key_id}", code="key_not_found")
    security.keys.forget(key_id)
    return JSONBytes({"id": key_id, "revoked": True})
