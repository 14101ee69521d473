"""Scheduler.close(): each backend is stopped, then closed, each step on its own; a failure is logged with the
model's name and never skips the next step or the next model. Requests queued at close, or made after it, get
Unavailable at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from test_scheduler_gpu import until

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import Unavailable
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.state import SchedulerConfig


class TeardownBackend:
    """A backend that records its lifecycle calls; stop() and aclose() raise when told to."""

    def __init__(self, spec: ModelSpec, fail_stop: bool, fail_aclose: bool) -> None:
        self.spec = spec
        self.fail_stop = fail_stop
        self.fail_aclose = fail_aclose
        self.calls: list[str] = []
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def memory_bytes(self) -> int | None:
        return None

    async def start(self) -> None:
        self.calls.append("start")
        self._loaded = True

    async def stop(self) -> None:
        self.calls.append("stop")
        if self.fail_stop:
            raise RuntimeError(f"stop of {self.spec.name} blew up")
        self._loaded = False

    async def aclose(self) -> None:
        self.calls.append("aclose")
        if self.fail_aclose:
            raise OSError(f"aclose of {self.spec.name} blew up")

    async def health(self) -> bool:
        return self._loaded

    def stats(self) -> None:
        return None  # one engine, not a pool

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        return EmbedResult([[1.0]], 1)


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, engine="llamacpp", path="/nonexistent.gguf", parallel=1, memory_mb=100)


async def test_a_failing_stop_still_closes_and_is_logged_with_the_model(caplog: pytest.LogCaptureFixture) -> None:
    failing = {"broken-stop": (True, False), "broken-both": (True, True), "fine": (False, False)}
    made: dict[str, TeardownBackend] = {}

    def factory(spec: ModelSpec) -> TeardownBackend:
        made[spec.name] = TeardownBackend(spec, *failing[spec.name])
        return made[spec.name]

    sched = Scheduler(factory, SchedulerConfig(budget_bytes=10_000 * 2**20))
    sched.start()
    for name in failing:
        async with sched.lease(_spec(name)):
            pass
    with caplog.at_level(logging.ERROR, logger="vlmserve.scheduler"):
        await sched.close()  # raises nothing

    assert {name: backend.calls for name, backend in made.items()} == {
        "broken-stop": ["start", "stop", "aclose"],
        "broken-both": ["start", "stop", "aclose"],
        "fine": ["start", "stop", "aclose"],
    }
    logged = [(r.getMessage(), type(r.exc_info[1]).__name__ if r.exc_info else None) for r in caplog.records]
    assert sorted(logged) == [
        ("closing the engine of broken-both failed", "OSError"),
        ("stopping the engine of broken-both failed", "RuntimeError"),
        ("stopping the engine of broken-stop failed", "RuntimeError"),
    ]


async def _lease_error(sched: Scheduler, spec: ModelSpec) -> BaseException | None:
    try:
        async with sched.lease(spec):
            return None
    except Exception as exc:
        return exc


def _is_shutting_down(exc: BaseException | None) -> bool:
    return isinstance(exc, Unavailable) and "shutting down" in exc.message and exc.retry_after > 0


async def test_close_answers_queued_requests_and_later_ones_at_once() -> None:
    """Before the fix a request queued at close, or made after it, waited on events nobody read any more."""
    sched = Scheduler(lambda spec: TeardownBackend(spec, False, False), SchedulerConfig(budget_bytes=2**30))
    sched.start()
    spec, release, admitted = _spec("one-slot"), asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with sched.lease(spec):
            admitted.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    async with asyncio.timeout(5):
        await admitted.wait()
    queued = asyncio.create_task(_lease_error(sched, spec))  # parallel=1: waits behind the holder
    await until(lambda: sched.queued("one-slot") == 1)
    just_sent = asyncio.create_task(_lease_error(sched, _spec("other")))
    await asyncio.sleep(0)  # one step: its Enqueue is sent, and may not have been applied when close() begins

    await sched.close()
    async with asyncio.timeout(5):
        assert _is_shutting_down(await queued)
        assert _is_shutting_down(await just_sent)
        assert _is_shutting_down(await _lease_error(sched, spec))  # after close: at once
        with pytest.raises(Unavailable, match="shutting down"):
            await sched.load(_spec("other"))
        with pytest.raises(Unavailable, match="shutting down"):
            await sched.unload("one-slot")
    release.set()
    async with asyncio.timeout(5):
        await holder  # a lease held through close ends normally
