"""What route handlers reach through `request.app.state.vlm`: the services, built once at start-up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from vlmserve.config import Settings
from vlmserve.service.catalog import Catalog
from vlmserve.service.chat import ChatService
from vlmserve.service.embed import EmbedService
from vlmserve.service.engines import EngineManager


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    engines: EngineManager
    chat: ChatService
    embed: EmbedService
    started_at: float = field(default_factory=time.time)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.vlm
    return state


class JSONBytes(Response):
    """JSON via orjson: several times faster than the stdlib encoder on large embedding payloads."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
