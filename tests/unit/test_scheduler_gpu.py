"""GPU-aware scheduling on the scripted probe (no GPU needed): placements chosen from each device's room, CPU
fallback, two GPUs, eviction on the short device only, NVML's per-process correction, budgets from the setting.

Models here have synthetic layouts (injected like the probe): 10 blocks of 100 MB (weights + KV cache), a
50 MB output head and 50 MB of host memory; on a GPU each runner also takes a 100 MB CUDA context."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import pytest

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import EngineError, InsufficientMemory
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.devices import ScriptedProbe
from vlmserve.scheduler.placement import RAM, Layout
from vlmserve.scheduler.state import SchedulerConfig

MB = 2**20
GB = 2**30
_pids = itertools.count(4000)


class GpuFakeBackend:
    """A runner that loads instantly; its "process" has a pid the scripted probe can charge GPU memory to."""

    def __init__(self, spec: ModelSpec, fail: bool = False) -> None:
        self.spec = spec
        self.pid = next(_pids)
        self.fail = fail
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def memory_bytes(self) -> int | None:
        return None  # RAM stays estimated: these tests are about the GPUs

    async def start(self) -> None:
        if self.fail:
            raise EngineError(f"{self.spec.name}: runner failed to load the model (exit 1; it ran out of memory)")
        self._loaded = True

    async def stop(self) -> None:
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


def layout(spec: ModelSpec) -> Layout:
    """10 x 100 MB blocks + 50 MB head; `context_size` scales the blocks (a bigger KV cache)."""
    scale = spec.context_size / 4096
    forced = None if spec.gpu_layers == "auto" else int(spec.gpu_layers)
    if spec.engine != "llamacpp":  # a CPU-only engine (ONNX): its memory is RAM
        return Layout(300 * MB)
    block = int(100 * MB * scale)
    return Layout(
        50 * MB, (block,) * 10, output=50 * MB, gpu_context=100 * MB, offload=True,
        forced=forced, devices=tuple(spec.devices), split=tuple(spec.tensor_split),
    )  # fmt: skip


def spec(name: str, **update: object) -> ModelSpec:
    return ModelSpec(name=name, engine="llamacpp", path=f"/nonexistent/{name}.gguf", parallel=1).model_copy(
        update=update
    )


def make(
    gpus: list[tuple[str, int, int]],
    *,
    budget: int = 8 * GB,
    gpu_budget_mb: int | None = None,
    fraction: float = 1.0,
    fail: Callable[[ModelSpec], bool] = lambda s: False,
) -> tuple[Scheduler, ScriptedProbe]:
    probe = ScriptedProbe(gpus)
    config = SchedulerConfig(budget_bytes=budget, queue_timeout=5.0, gpu_budget_mb=gpu_budget_mb, gpu_fraction=fraction)
    sched = Scheduler(lambda s: GpuFakeBackend(s, fail(s)), config, probe=probe, layout_fn=layout)
    sched.start()
    return sched, probe


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def use(sched: Scheduler, model: ModelSpec, **kwargs: object) -> ModelSpec:
    """One request; returns the spec its runner was started with (layers, devices)."""
    async with sched.lease(model, **kwargs) as lease:  # type: ignore[arg-type]
        return lease.backend.spec


async def test_whole_model_on_the_gpu_when_it_fits() -> None:
    sched, _ = make([("A", 4 * GB, 0)])
    started = await use(sched, spec("m"))
    runtime = sched.snapshot().model(spec("m"))
    assert started.gpu_layers == 11 and started.devices == [0]  # 10 blocks + the output head
    assert runtime.gpu_need == {0: 1150 * MB}  # blocks + head + context
    assert runtime.need == 50 * MB  # RAM: only what stays on the CPU
    await sched.close()


async def test_partial_offload_is_chosen_from_free_vram() -> None:
    # 2 GB GPU, 1.5 GB of it held by another program: 500 MB left = context + 4 blocks
    sched, _ = make([("A", 2 * GB, 1536 * MB)])
    started = await use(sched, spec("m"))
    assert started.gpu_layers == 4 and started.devices == [0]
    runtime = sched.snapshot().model(spec("m"))
    assert runtime.gpu_need == {0: 500 * MB}
    assert runtime.need == 50 * MB + 6 * 100 * MB + 50 * MB  # host + the 6 first blocks + the head in RAM
    assert runtime.placement is not None and runtime.placement.kind == "gpu"
    await sched.close()


async def test_cpu_fallback_when_no_gpu_has_room_for_a_block() -> None:
    sched, _ = make([("A", 2 * GB, 1900 * MB)])  # 148 MB free: the context alone leaves no room for a block
    started = await use(sched, spec("m"))
    runtime = sched.snapshot().model(spec("m"))
    assert started.gpu_layers == 0 and started.devices == []  # the runner gets no GPU at all
    assert runtime.vram_bytes == 0 and runtime.need == 1100 * MB  # host + blocks + head, all in RAM
    assert sched.gpu_report()[0]["models"] == {}
    await sched.close()


async def test_two_gpus_most_room_first_then_the_other_without_eviction() -> None:
    sched, _ = make([("A", 2 * GB, 0), ("B", 3 * GB, 0)])
    first = await use(sched, spec("a"))
    second = await use(sched, spec("b"))
    assert first.devices == [1]  # B had more room
    assert second.devices == [0]  # B has 1.85 GB left, A 2 GB: A now
    snapshot = sched.snapshot()
    assert snapshot.model(spec("a")).state == snapshot.model(spec("b")).state == "loaded"
    assert not any(k == "unload" for k, _, _ in snapshot.counters)
    report = {g["index"]: g["models"] for g in sched.gpu_report()}
    assert report == {0: {"b": 1150 * MB}, 1: {"a": 1150 * MB}}
    await sched.close()


async def test_eviction_frees_the_short_device_only() -> None:
    # one 1.5 GB GPU: two GPU models cannot share it. An older, idle CPU-only model holds RAM but no GPU memory.
    sched, _ = make([("A", 1536 * MB, 0)])
    cpu_model = ModelSpec(name="ocr", engine="rapidocr")
    await use(sched, cpu_model)
    await use(sched, spec("a"))
    await use(sched, spec("b"))  # needs GPU memory: only "a" holds any, so only "a" goes
    b = sched.snapshot().model(spec("b"))
    assert b.placement is not None and b.gpu_need == {0: 1150 * MB}
    await until(lambda: sched.snapshot().model(spec("a")).state == "unloaded")
    assert sched.snapshot().model(cpu_model).state == "loaded"  # least recently used, but freeing RAM would not help
    assert sched.snapshot().counters[("unload", "a", "evicted_for=b")] == 1
    await sched.close()


async def test_a_busy_gpu_makes_the_next_model_wait_not_fall_back() -> None:
    sched, _ = make([("A", 1536 * MB, 0)])
    release = asyncio.Event()

    async def hold() -> None:
        async with sched.lease(spec("a")):
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: sched.snapshot().model(spec("a")).in_flight == 1)
    second = asyncio.create_task(use(sched, spec("b")))
    await until(lambda: sched.queued("b") == 1)
    assert sched.snapshot().model(spec("b")).state == "unloaded"  # it fits the GPU once "a" is idle: it waits for it
    release.set()
    started = await second
    assert started.gpu_layers == 11 and started.devices == [0]
    await holder
    await sched.close()


async def test_measured_gpu_memory_replaces_the_estimate_and_corrects_the_next_load() -> None:
    sched, probe = make([("A", 4 * GB, 0)])
    model = spec("m")
    await use(sched, model)
    runtime = sched._models[model.name]  # the live runtime: this test measures it as the owner task would
    probe.set_process(runtime.backend.pid, {0: 3000 * MB})  # type: ignore[attr-defined]
    sched.memory.measure(runtime)
    measured = sched.snapshot().model(model)
    assert measured.gpu_need == {0: 3000 * MB} and measured.gpu_measured is not None
    assert sched.gpu_report()[0]["models"] == {"m": 3000 * MB}
    assert await sched.unload("m")
    # the next load starts from the files' estimate x what was measured, bounded to 2x: 2300 MB, not 3000
    probe.process.clear()
    await use(sched, model)
    assert sched.snapshot().model(model).gpu_need == {0: 2300 * MB}
    await sched.close()


async def test_a_model_larger_than_every_gpu_offloads_what_fits_or_splits() -> None:
    big = spec("big", context_size=8192)  # 10 x 200 MB blocks + head + context: 2.15 GB
    sched, _ = make([("A", 1 * GB, 0)])
    started = await use(sched, big)
    assert started.gpu_layers == 4  # 100 MB context + 4 x 200 MB: the most that fit 1 GB
    await sched.close()
    two, _ = make([("A", 1280 * MB, 0), ("B", 1280 * MB, 0)])
    started = await use(two, big)
    assert started.devices == [0, 1] and started.gpu_layers == 11 and started.tensor_split == [0.5, 0.5]
    assert set(two.snapshot().model(big).gpu_need) == {0, 1}
    await two.close()


async def test_budgets_come_from_the_setting() -> None:
    sched, _ = make([("A", 8 * GB, 0)], gpu_budget_mb=600)  # 600 MB per GPU, whatever the device has
    assert sched.memory.caps([]) == {0: 600 * MB}
    started = await use(sched, spec("m"))
    assert started.gpu_layers == 5  # 100 MB context + 5 blocks = the budget
    await sched.close()
    fraction, _ = make([("A", 1000 * MB, 0)], fraction=0.5)
    assert fraction.memory.caps([]) == {0: 500 * MB}
    assert fraction.gpu_report()[0]["budget_bytes"] == 500 * MB
    await fraction.close()


async def test_a_model_that_fits_no_device_at_all_is_507() -> None:
    sched, _ = make([("A", 512 * MB, 0)], budget=512 * MB)
    with pytest.raises(InsufficientMemory, match="GPU 0"):
        await use(sched, spec("m"))
    await sched.close()


async def test_gpu_layers_fixed_by_the_entry_or_num_gpu_are_used_as_given() -> None:
    sched, _ = make([("A", 4 * GB, 0)])
    assert (await use(sched, spec("fixed", gpu_layers=3))).gpu_layers == 3
    assert (await use(sched, spec("cpu", gpu_layers=0))).gpu_layers == 0
    started = await use(sched, spec("m"), engine_options={"gpu_layers": 2})  # Ollama's num_gpu
    assert started.gpu_layers == 2
    assert (await use(sched, spec("m"), engine_options={"gpu_layers": -1})).gpu_layers == 11  # -1: auto again
    await sched.close()


async def test_devices_and_tensor_split_from_the_entry() -> None:
    sched, _ = make([("A", 4 * GB, 0), ("B", 4 * GB, 0), ("C", 8 * GB, 0)])
    split = spec("s", devices=[0, 1], tensor_split=[3.0, 1.0])
    started = await use(sched, split)
    assert started.devices == [0, 1] and started.tensor_split == [3.0, 1.0]
    need = sched.snapshot().model(split).gpu_need
    assert need[0] > need[1] and 2 not in need
    pinned = await use(sched, spec("one", devices=[1]))
    assert pinned.devices == [1]  # not C, although C has the most room
    await sched.close()


async def test_a_failed_gpu_load_holds_nothing_afterwards() -> None:
    sched, _ = make([("A", 4 * GB, 0)], fail=lambda s: s.name == "bad")
    with pytest.raises(EngineError):
        await use(sched, spec("bad"))
    runtime = sched.snapshot().model(spec("bad"))
    assert runtime.state == "unloaded" and runtime.gpu_need == {} and runtime.placement is None
    assert sched.gpu_status() == {
        "gpu_available": True, "gpu_total_gb": 4.0, "gpu_allocated_gb": 0.0, "gpu_free_gb": 4.0,
    }  # fmt: skip
    await use(sched, spec("good"))
    assert sched.gpu_status()["gpu_allocated_gb"] == round(1150 * MB / GB, 2)
    await sched.close()


async def test_without_gpus_placement_leaves_the_spec_alone() -> None:
    sched, _ = make([])
    model = spec("m")
    started = await use(sched, model)
    assert started == model  # the engine keeps its own defaults (gpu_layers auto)
    assert sched.snapshot().model(model).need == 1100 * MB and sched.gpu_report() == []
    assert sched.gpu_status()["gpu_available"] is False
    assert sched._models[model.name].base == {RAM: 1100 * MB}  # the files' estimate: internal to accounting
    await sched.close()
