"""GPUs as the scheduler sees them, behind a small seam (as Ollama injects its GPU discovery).

- `NvmlProbe`: NVIDIA GPUs through NVML (nvidia-ml-py): total / free / used per device, and the GPU memory of
  given processes (the runners). Any failure to start NVML means no GPUs, logged once.
- `NoGpuProbe`: no GPUs are managed; runners keep their engines' own GPU behaviour.
- `ScriptedProbe`: FOR TESTS ONLY. GPUs that exist only in settings (`gpu_probe: scripted` with
  `scripted_gpus: [{name, total_mb, used_mb}]`): nothing is allocated on them, runners still run on the CPU,
  and a test sets what each runner "uses" (`set_process`) or what other programs hold (`set_external`).

Devices are numbered as NVML numbers them (PCI bus order); runners get CUDA_DEVICE_ORDER=PCI_BUS_ID so that
CUDA_VISIBLE_DEVICES means the same GPUs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

log = logging.getLogger("vlmserve.scheduler")
MB = 1024 * 1024
ProbeKind = Literal["auto", "nvml", "none", "scripted"]
SAMPLE_EVERY = 0.5  # seconds NVML device figures are reused for (the owner task asks on every plan)


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    name: str
    total: int
    free: int
    used: int  # by every process on the device, ours included


class GpuProbe(Protocol):
    kind: str

    def devices(self) -> list[Device]:
        """The GPUs now (empty: none)."""
        ...

    def process_memory(self, pids: Iterable[int]) -> dict[int, dict[int, int]]:
        """GPU memory of each of `pids` that uses any: {pid: {device index: bytes}}."""
        ...


class NoGpuProbe:
    kind = "none"

    def devices(self) -> list[Device]:
        return []

    def process_memory(self, pids: Iterable[int]) -> dict[int, dict[int, int]]:
        return {}


class ScriptedProbe:
    """FOR TESTS: GPUs from settings; what runners and other programs hold on them is set by the test."""

    kind = "scripted"

    def __init__(self, gpus: Sequence[tuple[str, int, int]]) -> None:  # (name, total bytes, used by others)
        self._gpus = [(name, total) for name, total, _ in gpus]
        self.external: dict[int, int] = {i: used for i, (_, _, used) in enumerate(gpus)}
        self.process: dict[int, dict[int, int]] = {}

    def set_process(self, pid: int, usage: Mapping[int, int]) -> None:
        self.process[pid] = dict(usage)

    def set_external(self, device: int, used: int) -> None:
        self.external[device] = used

    def devices(self) -> list[Device]:
        out = []
        for index, (name, total) in enumerate(self._gpus):
            used = self.external.get(index, 0) + sum(u.get(index, 0) for u in self.process.values())
            out.append(Device(index, name, total, max(0, total - used), min(total, used)))
        return out

    def process_memory(self, pids: Iterable[int]) -> dict[int, dict[int, int]]:
        return {pid: dict(self.process[pid]) for pid in pids if pid in self.process}


class NvmlProbe:
    """NVIDIA GPUs through NVML. Raises RuntimeError when NVML cannot start (no driver, no GPU, no library)."""

    kind = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(self._count)]
            self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
            raise RuntimeError(f"NVML is not available: {exc}") from exc
        self._nvml: Any = pynvml
        self._lock = threading.Lock()
        self._sampled_at = -SAMPLE_EVERY
        self._last: list[Device] = []
        self._warned = False

    def devices(self) -> list[Device]:
        with self._lock:
            if time.monotonic() - self._sampled_at < SAMPLE_EVERY:
                return self._last
            try:
                out = []
                for index, handle in enumerate(self._handles):
                    info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                    out.append(Device(index, self._names[index], int(info.total), int(info.free), int(info.used)))
                self._last = out
            except Exception as exc:  # a GPU fell off the bus, the driver went away: keep the last figures
                self._warn(f"NVML memory query failed: {exc}")
            self._sampled_at = time.monotonic()
            return self._last

    def process_memory(self, pids: Iterable[int]) -> dict[int, dict[int, int]]:
        wanted = set(pids)
        out: dict[int, dict[int, int]] = {}
        for index, handle in enumerate(self._handles):
            try:
                procs = list(self._nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            except Exception as exc:
                self._warn(f"NVML process query failed: {exc}")
                continue
            for proc in procs:
                used = getattr(proc, "usedGpuMemory", None)  # None where the driver does not say (some VMs)
                if proc.pid in wanted and isinstance(used, int):
                    per = out.setdefault(int(proc.pid), {})
                    per[index] = per.get(index, 0) + used
        return out

    def _warn(self, message: str) -> None:
        if not self._warned:
            log.warning("%s (further NVML errors are not logged)", message)
            self._warned = True


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def make_probe(kind: str, scripted: Sequence[tuple[str, int, int]] = ()) -> GpuProbe:
    """The probe a setting names: auto (NVML if it starts, else none), nvml, none, scripted (tests)."""
    if kind == "none":
        return NoGpuProbe()
    if kind == "scripted":
        return ScriptedProbe(scripted)
    try:
        probe = NvmlProbe()
    except RuntimeError as exc:
        (log.warning if kind == "nvml" else log.info)("%s: no GPU is managed (engines keep their own defaults)", exc)
        return NoGpuProbe()
    log.info("GPUs: %s", ", ".join(f"{d.index}: {d.name} ({d.total // MB} MB)" for d in probe.devices()) or "none")
    return probe
