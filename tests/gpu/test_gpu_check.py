"""The GPU check (scripts/gpu_check.sh runs it on a CUDA machine): real runners placed by the scheduler on NVML's
GPUs. Skipped where NVML finds no GPU (every machine this project's CI has).

The models are random (made by the script before pytest starts, paths in the environment): a Llama folder of
about 200M parameters in bf16 for transformers, and the same converted to an f16 GGUF for llama.cpp.

1. NVML sees the GPUs, and the probe's figures are NVML's.
2. transformers on CUDA: placed whole on a GPU; estimate vs NVML's per-process figure (or the device's `used`
   delta where NVML cannot name processes, as in some VMs).
3. llama.cpp on CUDA (when the xllamacpp build has CUDA): all layers, then a GPU budget of half the model:
   part of the layers, within the budget.
4. Eviction under a tight gpu_memory_budget_mb: a second model that does not fit beside the first evicts it.

Each test prints one line of figures (pytest -s)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest

from vlmserve.backends.runner_process import LocalRunnerBackend
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.devices import NvmlProbe
from vlmserve.scheduler.memory import default_budget_bytes
from vlmserve.scheduler.state import Runtime, SchedulerConfig

MB = 2**20


def _probe() -> NvmlProbe | None:
    try:
        probe = NvmlProbe()
    except RuntimeError:
        return None
    return probe if probe.devices() else None


PROBE = _probe()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(PROBE is None, reason="no NVIDIA GPU (NVML finds none)")]
HF_DIR = os.environ.get("VLMSERVE_GPU_HF_MODEL", "")
GGUF = os.environ.get("VLMSERVE_GPU_GGUF", "")
LLAMACPP_CUDA = os.environ.get("VLMSERVE_GPU_LLAMACPP_CUDA") == "1"


def _scheduler(gpu_budget_mb: int | None = None) -> Scheduler:
    config = SchedulerConfig(default_budget_bytes(None), queue_timeout=300.0, gpu_budget_mb=gpu_budget_mb)
    sched = Scheduler(lambda s: LocalRunnerBackend(s, start_timeout=300.0), config, probe=NvmlProbe())
    sched.start()
    return sched


@pytest.fixture
async def scheduler_factory() -> AsyncIterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(**kwargs: int | None) -> Scheduler:
        made.append(_scheduler(**kwargs))
        return made[-1]

    yield make
    for sched in made:
        await sched.close()


async def _measured(sched: Scheduler, runtime: Runtime, device_used_before: int) -> tuple[int, str]:
    """The runner's GPU bytes: NVML's per-process figure when it names the runner, else the device's used
    delta (some VMs give no per-process figures) once two reads in a row agree; polled, as allocation follows
    the load."""
    deadline = time.monotonic() + 30.0
    best, last, how = 0, -1, "device used delta"
    while time.monotonic() < deadline:
        sched.memory.measure(runtime)
        if runtime.gpu_measured:
            return sum(runtime.gpu_measured.values()), "NVML per process"
        used = _used_now() - device_used_before
        if used > 0 and used == last:
            return max(best, used), how  # settled: the allocation stopped growing
        best, last = max(best, used), used
        await asyncio.sleep(0.5)  # the poll's interval
    return best, how


def _used_now() -> int:
    return sum(d.used for d in NvmlProbe().devices())


def _line(label: str, estimate: int, measured: int, how: str, extra: str = "") -> None:
    ratio = measured / estimate if estimate else float("nan")
    print(f"\nGPU-CHECK {label}: estimate {estimate // MB} MB, measured {measured // MB} MB ({how}), "
          f"measured/estimate {ratio:.2f}{extra}")  # fmt: skip


def test_nvml_sees_the_gpus() -> None:
    assert PROBE is not None
    devices = PROBE.devices()
    print("\nGPU-CHECK devices: " + "; ".join(f"{d.index} {d.name} {d.total // MB} MB, {d.used // MB} MB used"
                                             for d in devices))  # fmt: skip
    assert all(d.total > 0 and d.free + d.used <= d.total * 1.01 for d in devices)


@pytest.mark.skipif(not HF_DIR, reason="VLMSERVE_GPU_HF_MODEL not set (scripts/gpu_check.sh builds it)")
async def test_transformers_model_on_cuda(scheduler_factory: Callable[..., Scheduler]) -> None:
    sched = scheduler_factory()
    spec = ModelSpec(name="hf-gpu", engine="transformers", path=HF_DIR, context_size=2048)
    before = _used_now()
    async with sched.lease(spec) as lease:
        runtime = sched._models[spec.name]
        assert runtime.placement is not None and runtime.placement.kind == "gpu", runtime.placement
        assert lease.backend.spec.device == "cuda"
        measured, how = await _measured(sched, runtime, before)
    estimate = sum(runtime.gpu_estimate.values())
    _line("transformers bf16 whole on GPU", estimate, measured, how)
    assert measured > 0 and 0.33 < measured / estimate < 3.0


@pytest.mark.skipif(not (GGUF and LLAMACPP_CUDA), reason="no CUDA build of xllamacpp (or no GGUF) here")
async def test_gguf_offload_all_then_part_under_a_budget(scheduler_factory: Callable[..., Scheduler]) -> None:
    spec = ModelSpec(name="gguf-gpu", engine="llamacpp", path=GGUF, context_size=4096)
    sched = scheduler_factory()
    before = _used_now()
    async with sched.lease(spec):
        runtime = sched._models[spec.name]
        assert runtime.placement is not None and runtime.placement.complete, runtime.placement
        measured, how = await _measured(sched, runtime, before)
    estimate = sum(runtime.gpu_estimate.values())
    _line("llama.cpp f16 all layers", estimate, measured, how, f", {runtime.placement.gpu_layers} layers")
    assert 0.5 < measured / estimate < 2.0
    await sched.close()
    budget_mb = max(1, estimate // 2 // MB)
    tight = scheduler_factory(gpu_budget_mb=budget_mb)
    before = _used_now()
    async with tight.lease(spec):
        runtime = tight._models[spec.name]
        placement = runtime.placement
        assert placement is not None and placement.gpu_layers > 0 and not placement.complete, placement
        measured, how = await _measured(tight, runtime, before)
    _line(f"llama.cpp under a {budget_mb} MB GPU budget", sum(runtime.gpu_estimate.values()), measured, how,
          f", {placement.gpu_layers} of {runtime.layout.units if runtime.layout else '?'} layers")  # fmt: skip
    assert measured <= budget_mb * MB * 1.15


@pytest.mark.skipif(not HF_DIR, reason="VLMSERVE_GPU_HF_MODEL not set (scripts/gpu_check.sh builds it)")
async def test_eviction_under_a_tight_gpu_budget(scheduler_factory: Callable[..., Scheduler]) -> None:
    first = ModelSpec(name="hf-a", engine="transformers", path=HF_DIR, context_size=2048)
    second = first.model_copy(update={"name": "hf-b"})
    probe_sched = scheduler_factory()
    one = sum(probe_sched.memory.layout(first).blocks) + probe_sched.memory.layout(first).output
    need = one + probe_sched.memory.layout(first).gpu_context + probe_sched.memory.layout(first).compute
    budget_mb = int(need * 1.5) // MB  # one fits, two do not
    sched = scheduler_factory(gpu_budget_mb=budget_mb)
    async with sched.lease(first):
        pid_a = sched._models[first.name].backend.pid  # type: ignore[attr-defined]
    async with sched.lease(second):
        runtime_b = sched._models[second.name]
        assert runtime_b.placement is not None and runtime_b.placement.kind == "gpu"
    async with asyncio.timeout(30.0):  # the eviction ran before hf-b loaded; its runner is gone by now
        await sched._models[first.name].unloaded.wait()
    assert sched.snapshot().counters[("unload", "hf-a", "evicted_for=hf-b")] == 1
    gone = pid_a not in NvmlProbe().process_memory([pid_a])
    print(f"\nGPU-CHECK eviction under a {budget_mb} MB GPU budget: hf-a evicted for hf-b; hf-a's process "
          f"{'gone from' if gone else 'STILL ON'} the GPU")  # fmt: skip
    assert gone
