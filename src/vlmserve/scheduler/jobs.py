"""The scheduler's load and unload jobs: tasks that stop, replace and start engines, then report back to the
owner task as `Done` events (they never touch the plan's state themselves, except the runtime's backend)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from vlmserve.backends.base import Backend
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import EngineError, VlmServeError
from vlmserve.scheduler.state import Done, Event, Runtime

log = logging.getLogger("vlmserve.scheduler")


class Jobs:
    def __init__(
        self,
        models: Mapping[str, Runtime],
        events: asyncio.Queue[Event],
        factory: Callable[[ModelSpec], Backend],
        counters: Counter[tuple[str, str, str]],
    ) -> None:
        self._models = models
        self._events = events
        self._factory = factory
        self._counters = counters

    async def replace_backend(
        self, runtime: Runtime, variant: str, spec: ModelSpec, placed: ModelSpec, *, reloading: bool
    ) -> None:
        await close_backend(runtime.backend)
        if reloading:
            self._counters[("unload", runtime.spec.name, "options")] += 1
            log.info("unloaded %s (reason=options)", runtime.spec.name)
        runtime.backend = self._factory(placed)
        runtime.variant = variant
        runtime.engine_spec = spec

    async def unload(self, runtime: Runtime, reason: str) -> None:
        try:
            await runtime.backend.stop()
        except Exception:
            log.exception("unloading %s failed", runtime.spec.name)
        self._counters[("unload", runtime.spec.name, reason)] += 1
        log.info("unloaded %s (reason=%s)", runtime.spec.name, reason)
        self._events.put_nowait(Done(runtime.spec.name, loaded=False))

    async def swap(
        self, evict: tuple[str, ...], runtime: Runtime, variant: str | None, spec: ModelSpec, placed: ModelSpec
    ) -> None:
        """Unload the victims, then load `runtime` with `spec` (engine options) started as `placed` (GPUs)."""
        name = runtime.spec.name
        for victim in evict:
            if victim != name:
                await self.unload(self._models[victim], f"evicted_for={name}")
        reason = "first_use" if runtime.loaded_at is None else "reload"
        if variant is not None and variant != runtime.variant:  # other engine options: a new engine for this model
            await self.replace_backend(runtime, variant, spec, placed, reloading=name in evict)
            reason = "options"
        elif runtime.backend.spec != placed:  # another placement (layers, devices): an engine started with it
            await close_backend(runtime.backend)
            runtime.backend = self._factory(placed)
        began = time.perf_counter_ns()
        try:
            await runtime.backend.start()
        except VlmServeError as exc:
            self._events.put_nowait(Done(name, loaded=False, error=exc))
            return
        except Exception as exc:
            log.exception("loading %s failed", name)
            self._events.put_nowait(Done(name, loaded=False, error=EngineError(f"{name}: load failed: {exc}")))
            return
        took = time.perf_counter_ns() - began
        self._counters[("load", name, reason)] += 1
        log.info("loaded %s (reason=%s) in %.2fs", name, reason, took / 1e9)
        self._events.put_nowait(Done(name, loaded=True, load_ns=took))


async def close_backend(backend: Backend) -> None:
    """Stop a backend that is replaced (or the server ends), then close its connections, each step on its own:
    a failing stop() still gets aclose(). What fails is logged with the model's name, never raised."""
    name = backend.spec.name
    try:
        await backend.stop()
    except Exception:
        log.exception("stopping the engine of %s failed", name)
    try:
        await backend.aclose()
    except Exception:
        log.exception("closing the engine of %s failed", name)
