"""The browser UI: GET /ui (playground), GET /ui/status (status page), their assets under /ui/static/, and the
JSON the status page polls, GET /admin/status (admin scope when API keys are on, like /admin/models).

The pages and assets are static files shipped as package data and open to all (security.guard.is_exempt);
every API call the pages make carries the key the user typed into them. Each asset has its own route, so the
set of public paths is exactly the files below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from starlette.responses import Response

from vlmserve.api.state import JSONBytes, state_of
from vlmserve.ui.status import snapshot

router = APIRouter(tags=["ui"])
_MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
PAGES = {"/ui": "index.html", "/ui/status": "status.html"}
ASSETS = ("common.js", "app.js", "status.js", "style.css")
# the pages load only from this server; inline scripts are not needed, images come as data: or blob: URLs
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip


@cache
def _read(name: str) -> bytes:
    return resources.files("vlmserve.ui").joinpath("static", name).read_bytes()


def _file_response(name: str) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": _CSP}
    return Response(_read(name), media_type=_MEDIA_TYPES[name.rsplit(".", 1)[1]], headers=headers)


def _serve(name: str) -> Callable[[], Awaitable[Response]]:
    async def endpoint() -> Response:
        return _file_response(name)

    return endpoint


for _path, _name in PAGES.items():
    router.add_api_route(_path, _serve(_name), methods=["GET"], include_in_schema=False)
for _name in ASSETS:
    router.add_api_route(f"/ui/static/{_name}", _serve(_name), methods=["GET"], include_in_schema=False)


@router.get("/admin/status", tags=["admin"])
async def status(request: Request) -> Response:
    """Loaded models, memory budget, queue depths, the last requests and recent batches, for GET /ui/status."""
    return JSONBytes(await snapshot(state_of(request)))
