"""Per-request facts shared between the gateway (auth, limits, metrics) and the services, via a context var.

The gateway sets a `RequestContext` for each HTTP request; the services note the resolved model, token counts,
first-token time, queue wait and engine errors on it. Work outside a request (batch lines) sees None.
Noting only records; the key's model allowlist is a step of its own (`check_model_visible`, 403).
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

from vlmserve.errors import PermissionDenied


@dataclass(slots=True)
class RequestContext:
    request_id: str
    surface: str
    started_ns: int
    key_id: str | None = None
    models: frozenset[str] | None = None  # the API key's model allowlist (None: every model)
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    first_token_ns: int | None = None
    queue_wait_ns: int | None = None
    error_type: str | None = None


current: ContextVar[RequestContext | None] = ContextVar("vlmserve_request", default=None)


def note_model(name: str) -> None:
    """The request's model is resolved: label its metrics and access log with it (the first one noted). Only
    records: the key's allowlist is checked by the caller, with `check_model_visible`, before this."""
    ctx = current.get()
    if ctx is not None and not ctx.model:
        ctx.model = name


def model_visible(name: str) -> bool:
    """Whether the request's API key may see (and use) this model: listing routes show only these."""
    ctx = current.get()
    return ctx is None or ctx.models is None or name in ctx.models


def check_model_visible(name: str) -> None:
    """A model outside the key's allowlist: 403 model_not_allowed, as a chat request on it answers."""
    if not model_visible(name):
        raise PermissionDenied(f"this API key may not use model '{name}'", param="model", code="model_not_allowed")


def note_tokens(prompt: int, completion: int) -> None:
    ctx = current.get()
    if ctx is not None:
        ctx.tokens_in += prompt
        ctx.tokens_out += completion


def note_first_token() -> None:
    ctx = current.get()
    if ctx is not None and ctx.first_token_ns is None:
        ctx.first_token_ns = time.perf_counter_ns()


def note_queue_wait(ns: int) -> None:
    ctx = current.get()
    if ctx is not None and ctx.queue_wait_ns is None:
        ctx.queue_wait_ns = max(0, ns)


def note_error(error_type: str) -> None:
    ctx = current.get()
    if ctx is not None and ctx.error_type is None:
        ctx.error_type = error_type


def request_id() -> str:
    ctx = current.get()
    return ctx.request_id if ctx is not None else "-"
