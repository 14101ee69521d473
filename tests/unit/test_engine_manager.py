"""EngineManager with a fake backend (fine for lifecycle and queueing; engines are tested for real elsewhere)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import Overloaded
from vlmserve.service.engines import EngineManager


class FakeBackend:
    def __init__(self, spec: ModelSpec, load_delay: float = 0.0) -> None:
        self.spec = spec
        self.starts = 0
        self.stops = 0
        self._loaded = False
        self._load_delay = load_delay

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def memory_bytes(self) -> int | None:
        return None

    async def start(self) -> None:
        await asyncio.sleep(self._load_delay)
        self.starts += 1
        self._loaded = True

    async def stop(self) -> None:
        self.stops += 1
        self._loaded = False

    async def health(self) -> bool:
        return self._loaded

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        return EmbedResult([[1.0]], 1)


SPEC = ModelSpec(name="m", engine="openai", url="http://unused", parallel=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(clock: Clock | None = None, *, max_queue: int = 64, load_delay: float = 0.0) -> EngineManager:
    return EngineManager(lambda spec: FakeBackend(spec, load_delay), keep_alive=300.0, max_queue=max_queue,
                         clock=clock or Clock())


async def test_concurrent_first_requests_load_once() -> None:
    engines = manager(load_delay=0.05)
    spec = SPEC.model_copy(update={"parallel": 4})

    async def use() -> int:
        async with engines.lease(spec) as lease:
            return lease.load_ns

    load_times = await asyncio.gather(*(use() for _ in range(4)))
    backend = engines.slot(spec).backend
    assert isinstance(backend, FakeBackend) and backend.starts == 1
    assert sum(1 for t in load_times if t > 0) >= 1


async def test_keep_alive_zero_unloads_after_the_request() -> None:
    engines = manager()
    async with engines.lease(SPEC, keep_alive=0):
        pass
    await asyncio.sleep(0.01)
    assert not engines.slot(SPEC).backend.loaded


async def test_idle_timer_unloads_but_never_a_busy_model() -> None:
    clock = Clock()
    engines = manager(clock)
    async with engines.lease(SPEC, keep_alive=10):
        clock.now += 100  # long request: its timer must not fire while it runs
        reaper = asyncio.create_task(engines.run_reaper(interval=0.001))
        await asyncio.sleep(0.02)
        assert engines.slot(SPEC).backend.loaded
    slot = engines.slot(SPEC)
    assert slot.expires_at == pytest.approx(clock.now + 10)
    clock.now += 11
    await asyncio.sleep(0.02)
    reaper.cancel()
    assert not slot.backend.loaded


async def test_negative_keep_alive_means_forever() -> None:
    engines = manager()
    async with engines.lease(SPEC, keep_alive=math.inf):
        pass
    assert engines.slot(SPEC).expires_at is None and engines.slot(SPEC).backend.loaded


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    engines = manager(max_queue=2)
    release = asyncio.Event()

    async def hold() -> None:
        async with engines.lease(SPEC):
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(3)]  # 1 running + 2 waiting
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as info:
        async with engines.lease(SPEC):
            pass
    assert info.value.retry_after >= 1
    release.set()
    await asyncio.gather(*holders)


async def test_cancelled_waiter_leaves_the_queue() -> None:
    engines = manager(max_queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with engines.lease(SPEC):
            await release.wait()

    running = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert engines.slot(SPEC).waiting == 1
    waiter.cancel()
    await asyncio.sleep(0.01)
    assert engines.slot(SPEC).waiting == 0
    release.set()
    await running
