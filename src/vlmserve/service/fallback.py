"""Fallbacks: a model that fails before its first byte with a server-side error hands the same request to each
model of its `fallbacks` list in turn (one level deep, as LiteLLM's `fallbacks`); the answer names the model that
gave it. A client error (4xx) from the first model never falls back: the next model would refuse it too.

Server-side here means the engine failed or cannot take the request now: EngineError (502), EngineTimeout (504),
Unavailable (503: queue timeout, upstream 503), Overloaded (429: the model's queue or its upstream is full) and
InsufficientMemory (507: the model can never fit). A per-key RateLimited 429 is the client's: no fallback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from vlmserve.context import current
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import EngineError, EngineTimeout, InsufficientMemory, Overloaded, Unavailable, VlmServeError
from vlmserve.service.catalog import Catalog

log = logging.getLogger("vlmserve.fallback")
T = TypeVar("T")
FALLBACK_ON = (EngineError, EngineTimeout, Unavailable, Overloaded, InsufficientMemory)
FallbackCounts = Counter[tuple[str, str]]  # (model that failed, model that answered) -> requests


async def with_fallbacks(
    catalog: Catalog,
    spec: ModelSpec,
    fits: Callable[[ModelSpec], bool],
    start: Callable[[ModelSpec], Awaitable[T]],
    counts: FallbackCounts,
) -> T:
    """`start(spec)`, then `start(fallback)` for each fallback that `fits` the request, until one starts.
    When none does, the first model's error is raised: it names what the client asked for."""
    try:
        return await start(spec)
    except FALLBACK_ON as exc:
        if not spec.fallbacks:
            raise
        failure: VlmServeError = exc
    for name in spec.fallbacks:
        candidate = catalog.get(name)
        if not fits(candidate):
            log.info("%s: fallback %s cannot serve this request, skipped", spec.name, candidate.name)
            continue
        log.warning("%s failed (%s: %s); falling back to %s", spec.name, failure.type, failure.message, candidate.name)
        try:
            result = await start(candidate)
        except VlmServeError as exc:  # whatever stops a fallback, the next one may still answer
            log.warning("fallback %s of %s failed too (%s: %s)", candidate.name, spec.name, exc.type, exc.message)
            continue
        counts[(spec.name, candidate.name)] += 1
        _forget_error()
        return result
    raise failure


def _forget_error() -> None:
    """The request succeeded after all: it must not count as a failed request in the engine error metric."""
    ctx = current.get()
    if ctx is not None:
        ctx.error_type = None
