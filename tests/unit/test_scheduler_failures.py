"""A failure inside the scheduler's owner task (an enqueue that raises, a planning step that raises) resolves
the waiting caller with the error within a deadline, is logged, and the next request is served."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from test_scheduler_core import SPEC, FakeBackend

from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler import policy
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.state import SchedulerConfig

BAD = ModelSpec(name="bad", engine="llamacpp", path="/nonexistent.gguf", parallel=1, memory_mb=100)


class FactoryBroken(RuntimeError):
    pass


def factory(spec: ModelSpec) -> FakeBackend:
    if spec.name == "bad":
        raise FactoryBroken(f"no backend for {spec.name}")
    return FakeBackend(spec)


def make() -> Scheduler:
    sched = Scheduler(factory, SchedulerConfig(budget_bytes=1000 * 2**20, keep_alive=300.0))
    sched.start()
    return sched


async def served(sched: Scheduler) -> bool:
    async with asyncio.timeout(5):
        async with sched.lease(SPEC):
            return True


async def test_enqueue_that_raises_fails_the_caller_and_the_next_request_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sched = make()
    try:
        with caplog.at_level(logging.ERROR, "vlmserve.scheduler"), pytest.raises(FactoryBroken):
            async with asyncio.timeout(5):  # before the fix: no answer until the queue timeout (600 s)
                async with sched.lease(BAD):
                    pytest.fail("a model without a backend was admitted")
        assert any("Enqueue failed" in r.getMessage() for r in caplog.records), caplog.text
        assert sched.queued("bad") == 0
        assert await served(sched)
    finally:
        await sched.close()


async def test_planning_step_that_raises_fails_the_waiters_and_the_next_request_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sched = make()
    real_plan = policy.plan
    calls = 0

    def plan_failing_once(*args: Any, **kwargs: Any) -> list[policy.Action]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ZeroDivisionError("planner bug")
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(policy, "plan", plan_failing_once)  # the owner task calls it as policy.plan
    try:
        with caplog.at_level(logging.ERROR, "vlmserve.scheduler"), pytest.raises(ZeroDivisionError):
            async with asyncio.timeout(5):
                async with sched.lease(SPEC):
                    pytest.fail("admitted by a plan that failed")
        assert any("scheduler step failed" in r.getMessage() for r in caplog.records), caplog.text
        assert sched.queued("m") == 0
        assert await served(sched)
        assert calls >= 2
    finally:
        await sched.close()
