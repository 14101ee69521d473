"""One way from a request to its engine lease: what every service hands the scheduler about the caller."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatRequest, CompletionRequest, EmbedRequest
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.state import Lease


def lease_for(
    scheduler: Scheduler, spec: ModelSpec, request: ChatRequest | CompletionRequest | EmbedRequest
) -> AbstractAsyncContextManager[Lease]:
    return scheduler.lease(
        spec,
        request.keep_alive,
        client=request.client,
        background=request.background,
        engine_options=request.engine_options,
    )
