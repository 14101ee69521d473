"""The scheduler task with a fake backend (fine for lifecycle and queueing; engines are tested for real elsewhere)."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable

import pytest
from test_scheduler_gpu import until

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import InsufficientMemory, Overloaded, Unavailable
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.state import SchedulerConfig


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
        return 100 * 2**20 if self._loaded else None  # as much as SPEC declares

    async def start(self) -> None:
        await asyncio.sleep(self._load_delay)
        self.starts += 1
        self._loaded = True

    async def stop(self) -> None:
        self.stops += 1
        self._loaded = False

    async def aclose(self) -> None:
        pass

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


SPEC = ModelSpec(name="m", engine="llamacpp", path="/nonexistent.gguf", parallel=1, memory_mb=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    sched = make()
    yield sched
    await sched.close()


def make(
    clock: Clock | None = None,
    *,
    max_queue: int = 64,
    load_delay: float = 0.0,
    budget_mb: int = 1000,
    queue_timeout: float = 600.0,
) -> Scheduler:
    config = SchedulerConfig(
        budget_bytes=budget_mb * 2**20, keep_alive=300.0, max_queue=max_queue, queue_timeout=queue_timeout
    )
    sched = Scheduler(lambda spec: FakeBackend(spec, load_delay), config, clock=clock or time.monotonic)
    sched.start()
    return sched


async def hold(sched: Scheduler, release: asyncio.Event) -> None:
    """A request that keeps its slot until `release` is set."""
    async with sched.lease(SPEC):
        await release.wait()


async def planned(sched: Scheduler) -> None:
    """One round trip through the owner task (an unload of a model it never heard of): every event sent before
    it has been applied and planned on. For checks that something did not happen."""
    assert not await sched.unload("no-such-model")


def in_flight(sched: Scheduler, n: int) -> Callable[[], bool]:
    return lambda: sched.snapshot().model(SPEC).in_flight == n


async def test_concurrent_first_requests_load_once() -> None:
    sched = make(load_delay=0.05)
    spec = SPEC.model_copy(update={"parallel": 4})

    async def use() -> tuple[int, object]:
        async with sched.lease(spec) as lease:
            return lease.load_ns, lease.backend

    leases = await asyncio.gather(*(use() for _ in range(4)))
    backends = {id(backend): backend for _, backend in leases}
    assert len(backends) == 1
    (backend,) = backends.values()
    assert isinstance(backend, FakeBackend) and backend.starts == 1
    assert all(t > 0 for t, _ in leases)  # every request admitted by that load reports its duration
    assert sched.snapshot().counters[("load", "m", "first_use")] == 1
    await sched.close()


async def test_keep_alive_zero_unloads_after_the_request(scheduler: Scheduler) -> None:
    async with scheduler.lease(SPEC, keep_alive=0) as lease:
        backend = lease.backend
    await until(lambda: scheduler.snapshot().model(SPEC).state == "unloaded")
    assert not backend.loaded
    assert scheduler.snapshot().counters[("unload", "m", "keep_alive")] == 1


async def test_idle_timer_unloads_but_never_a_busy_model() -> None:
    clock = Clock()
    sched = make(clock)
    async with sched.lease(SPEC, keep_alive=10):
        clock.now += 100  # a long request: the timer must not fire while it runs
        await planned(sched)
        assert sched.snapshot().model(SPEC).state == "loaded"
    await until(in_flight(sched, 0))
    snapshot = sched.snapshot()
    assert snapshot.model(SPEC).expires_at == pytest.approx(clock.now + 10)
    assert snapshot.taken_at == clock.now and snapshot.model(SPEC).expires_in == pytest.approx(10)  # its own clock
    clock.now += 11
    sched.wake()
    await until(lambda: sched.snapshot().model(SPEC).state == "unloaded")
    await sched.close()


async def test_negative_keep_alive_means_forever(scheduler: Scheduler) -> None:
    async with scheduler.lease(SPEC, keep_alive=math.inf):
        pass
    await planned(scheduler)
    model = scheduler.snapshot().model(SPEC)
    assert model.expires_at is None and model.state == "loaded"


async def test_full_queue_is_overloaded_with_retry_after() -> None:
    sched = make(max_queue=2)
    release = asyncio.Event()

    holders = [asyncio.create_task(hold(sched, release))]
    await until(in_flight(sched, 1))  # the first one runs ...
    holders += [asyncio.create_task(hold(sched, release)) for _ in range(2)]  # ... and two wait: the queue is full
    await until(lambda: sched.queued("m") == 2)
    with pytest.raises(Overloaded) as info:
        async with sched.lease(SPEC):
            pass
    assert info.value.retry_after >= 1
    release.set()
    await asyncio.gather(*holders)
    await sched.close()


async def test_cancelled_waiter_leaves_the_queue() -> None:
    sched = make(max_queue=1)
    release = asyncio.Event()

    running = asyncio.create_task(hold(sched, release))
    await until(in_flight(sched, 1))
    waiter = asyncio.create_task(hold(sched, release))
    await until(lambda: sched.queued("m") == 1)
    waiter.cancel()
    await until(lambda: sched.queued("m") == 0)
    release.set()
    await running
    await sched.close()


async def test_queue_timeout_is_503() -> None:
    sched = make(queue_timeout=0.05)
    release = asyncio.Event()

    running = asyncio.create_task(hold(sched, release))
    await until(in_flight(sched, 1))
    with pytest.raises(Unavailable, match="timed out"):
        async with sched.lease(SPEC):
            pass
    release.set()
    await running
    await sched.close()


async def test_model_that_never_fits_is_507(scheduler: Scheduler) -> None:
    huge = SPEC.model_copy(update={"name": "huge", "memory_mb": 5000})
    with pytest.raises(InsufficientMemory):
        async with scheduler.lease(huge):
            pass


async def test_loading_a_second_model_evicts_the_idle_first() -> None:
    sched = make(budget_mb=150)
    other = SPEC.model_copy(update={"name": "other"})
    async with sched.lease(SPEC):
        pass
    async with sched.lease(other):
        pass
    await until(lambda: sched.snapshot().model(SPEC).state == "unloaded")
    snapshot = sched.snapshot()
    assert snapshot.model(SPEC).state == "unloaded" and snapshot.model(other).state == "loaded"
    assert snapshot.counters[("unload", "m", "evicted_for=other")] == 1
    await sched.close()


async def test_crashed_runner_frees_its_budget_and_reloads() -> None:
    sched = make(budget_mb=150)
    async with sched.lease(SPEC) as lease:
        backend = lease.backend
    assert isinstance(backend, FakeBackend)
    backend._loaded = False  # the runner process died
    async with sched.lease(SPEC) as lease:
        assert lease.backend.loaded
    assert backend.starts == 2
    assert sched.snapshot().counters[("unload", "m", "crashed")] == 1
    await sched.close()


async def test_waiter_cancelled_before_admission_takes_no_slot(scheduler: Scheduler) -> None:
    async with scheduler.lease(SPEC):
        pass  # loaded
    release = asyncio.Event()

    running = asyncio.create_task(hold(scheduler, release))
    await until(in_flight(scheduler, 1))
    doomed = asyncio.create_task(hold(scheduler, release))
    await until(lambda: scheduler.queued("m") == 1)
    doomed.cancel()  # its Leave and the Admit that the release triggers race in the same step
    release.set()
    await running
    await until(in_flight(scheduler, 0))
    model = scheduler.snapshot().model(SPEC)
    assert model.in_flight == 0 and model.queued == 0 and scheduler.queued("m") == 0
    async with scheduler.lease(SPEC):  # the slot is free again
        assert scheduler.snapshot().model(SPEC).in_flight == 1


async def test_engine_options_reload_only_that_model_and_sampling_never_does() -> None:
    made: list[ModelSpec] = []

    def factory(spec: ModelSpec) -> FakeBackend:
        made.append(spec)
        return FakeBackend(spec)

    sched = Scheduler(factory, SchedulerConfig(budget_bytes=10_000 * 2**20))
    sched.start()
    other = SPEC.model_copy(update={"name": "other"})
    async with sched.lease(other):
        pass
    async with sched.lease(SPEC):
        pass
    async with sched.lease(SPEC, engine_options={"context_size": SPEC.context_size}):
        pass  # the catalog's own value: no reload
    async with sched.lease(SPEC, engine_options={"context_size": 8192}) as lease:
        assert isinstance(lease.backend, FakeBackend) and lease.backend.spec.context_size == 8192
    async with sched.lease(SPEC) as lease:  # no engine options: served by whatever is loaded
        assert lease.backend.spec.context_size == 8192
    snapshot = sched.snapshot()
    counters = snapshot.counters
    assert counters[("load", "m", "options")] == 1 and counters[("unload", "m", "options")] == 1
    assert snapshot.model(other).state == "loaded" and counters[("load", "other", "first_use")] == 1
    assert [s.context_size for s in made if s.name == "m"] == [SPEC.context_size, 8192]
    await sched.close()


async def test_snapshot_is_frozen_and_reading_it_creates_nothing(scheduler: Scheduler) -> None:
    before = scheduler.snapshot()
    assert before.model(SPEC).state == "unloaded" and len(before.models) == 0  # reported from the entry alone
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.model(SPEC).state = "loaded"  # type: ignore[misc]
    with pytest.raises(TypeError):
        before.counters[("load", "m", "first_use")] = 1  # type: ignore[index]
    assert len(scheduler.snapshot().models) == 0  # still nothing made for a model no request asked for
    async with scheduler.lease(SPEC):
        assert scheduler.snapshot().model(SPEC).in_flight == 1
    assert len(before.models) == 0 and before.counters[("load", "m", "first_use")] == 0  # a copy: it never moves
    assert scheduler.snapshot().counters[("load", "m", "first_use")] == 1


async def test_engine_health_makes_a_remote_runtime_on_the_owner_task_and_never_a_local_one(
    scheduler: Scheduler,
) -> None:
    remote = ModelSpec(name="r", engine="openai", url="http://127.0.0.1:9", remote_model="x")
    assert (await scheduler.engine_health(SPEC)).reachable is None  # a local model never used: nothing to ask
    probe = await scheduler.engine_health(remote)
    assert probe.reachable is False and probe.stats is None  # the fake engine does not answer until started
    assert list(scheduler.snapshot().models) == ["r"] and scheduler.snapshot().model(remote).state == "loaded"
