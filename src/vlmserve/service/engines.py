"""Engine manager: load on demand, per-model concurrency and a bounded wait queue, keep-alive unloading.

This is the first, simple scheduler: no memory budget or eviction yet (see the scheduler issue). A lease is
held for the whole life of a request, streaming included; only time with nothing in flight counts as idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from vlmserve.backends.base import Backend
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import Overloaded, VlmServeError

log = logging.getLogger("vlmserve.engines")
BackendFactory = Callable[[ModelSpec], Backend]


@dataclass
class ModelSlot:
    spec: ModelSpec
    backend: Backend
    slots: asyncio.Semaphore
    in_flight: int = 0
    waiting: int = 0
    keep_alive: float = 300.0
    expires_at: float | None = None  # monotonic time when an idle model unloads; None while busy
    loaded_at: float | None = None
    last_used: float = 0.0
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    service_seconds: float = 1.0  # moving average of request duration, for Retry-After


@dataclass(frozen=True, slots=True)
class Lease:
    backend: Backend
    load_ns: int


class EngineManager:
    def __init__(
        self,
        factory: BackendFactory,
        *,
        keep_alive: float,
        max_queue: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._default_keep_alive = keep_alive
        self._max_queue = max_queue
        self._clock = clock
        self._slots: dict[str, ModelSlot] = {}
        self._reaper: asyncio.Task[None] | None = None

    def slot(self, spec: ModelSpec) -> ModelSlot:
        slot = self._slots.get(spec.name)
        if slot is None:
            slot = ModelSlot(spec=spec, backend=self._factory(spec), slots=asyncio.Semaphore(spec.parallel))
            self._slots[spec.name] = slot
        return slot

    def slots(self) -> list[ModelSlot]:
        return list(self._slots.values())

    @contextlib.asynccontextmanager
    async def lease(self, spec: ModelSpec, keep_alive: float | None = None) -> AsyncIterator[Lease]:
        slot = self.slot(spec)
        if slot.waiting >= self._max_queue:
            retry = max(1.0, slot.service_seconds * (slot.waiting + 1) / spec.parallel)
            raise Overloaded(
                f"model '{spec.name}' has {slot.waiting} requests waiting; retry later", retry_after=math.ceil(retry)
            )
        slot.waiting += 1
        try:
            await slot.slots.acquire()
        finally:
            slot.waiting -= 1
        slot.in_flight += 1
        slot.expires_at = None
        started = self._clock()
        try:
            load_ns = await self._ensure_loaded(slot)
            yield Lease(slot.backend, load_ns)
        finally:
            slot.in_flight -= 1
            slot.slots.release()
            now = self._clock()
            slot.last_used = now
            slot.service_seconds = 0.8 * slot.service_seconds + 0.2 * (now - started)
            self._after_request(slot, keep_alive)

    async def _ensure_loaded(self, slot: ModelSlot) -> int:
        if slot.backend.loaded:
            return 0
        async with slot.load_lock:
            if slot.backend.loaded:
                return 0
            began = time.perf_counter_ns()
            reason = "first_use" if slot.loaded_at is None else "reload"
            await slot.backend.start()
            slot.loaded_at = self._clock()
            log.info("loaded %s (reason=%s) in %.2fs", slot.spec.name, reason, (time.perf_counter_ns() - began) / 1e9)
            return time.perf_counter_ns() - began

    def _after_request(self, slot: ModelSlot, keep_alive: float | None) -> None:
        if keep_alive is not None:
            slot.keep_alive = keep_alive
        elif slot.spec.keep_alive is not None:
            slot.keep_alive = slot.spec.keep_alive
        else:
            slot.keep_alive = self._default_keep_alive
        if slot.in_flight == 0:
            slot.expires_at = None if math.isinf(slot.keep_alive) else self._clock() + slot.keep_alive
            if slot.keep_alive == 0:
                self._spawn_unload(slot, "keep_alive")

    def _spawn_unload(self, slot: ModelSlot, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._unload_if_idle(slot, reason))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _unload_if_idle(self, slot: ModelSlot, reason: str) -> None:
        async with slot.load_lock:
            if slot.in_flight or slot.waiting or not slot.backend.loaded:
                return
            await slot.backend.stop()
            slot.expires_at = None
            log.info("unloaded %s (reason=%s)", slot.spec.name, reason)

    async def unload(self, name: str) -> bool:
        slot = self._slots.get(name)
        if slot is None or not slot.backend.loaded:
            return False
        await self._unload_if_idle(slot, "admin")
        return not slot.backend.loaded

    async def run_reaper(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            for slot in list(self._slots.values()):
                if (
                    slot.backend.loaded
                    and slot.in_flight == 0
                    and slot.expires_at is not None
                    and now >= slot.expires_at
                ):
                    try:
                        await self._unload_if_idle(slot, "keep_alive")
                    except VlmServeError:
                        log.exception("unload of %s failed", slot.spec.name)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self.run_reaper())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for slot in self._slots.values():
            with contextlib.suppress(Exception):
                await slot.backend.stop()
            aclose = getattr(slot.backend, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
