"""The app in this process: `create_app` with its real lifespan (scheduler, gateway, stores), called through
httpx's ASGI transport. No port, no subprocess: fast tests of ChatService, fallback, the gateway and the surface
adapters, beside the subprocess tests that check the same through a real socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from vlmserve.api.app import create_app
from vlmserve.config import load_settings


@contextlib.asynccontextmanager
async def in_process_client(config: dict[str, Any], data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app built from `config` (embedded models off unless it says otherwise)."""
    settings = load_settings(None, **{"embedded_models": False, "data_dir": str(data_dir), **config})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process", timeout=30) as client:
            yield client
