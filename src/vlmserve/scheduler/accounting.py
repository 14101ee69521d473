"""What models take and where, kept by the scheduler's owner task: layouts from the files corrected by what the
runners measured, each GPU's capacity for our models, and the per-device reports (admin, metrics, status page).

A GPU's capacity is its budget (`gpu_memory_budget_mb`, else `gpu_memory_fraction` of its total), and never
more than what other programs leave: total - (used - what our runners hold there). After a load the runner's
RSS replaces its RAM estimate and NVML's per-process figure its GPU estimate; what one measurement teaches the
next estimate of that model is bounded to [MIN_RATIO, MAX_RATIO] of the files' estimate and averaged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import Any

from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import InsufficientMemory
from vlmserve.scheduler.devices import Device, GpuProbe, NoGpuProbe
from vlmserve.scheduler.layout import apply_placement, layout_of
from vlmserve.scheduler.placement import RAM, Layout, Placement, placements, raw_footprint
from vlmserve.scheduler.policy import HOLDS_MEMORY
from vlmserve.scheduler.state import Runtime, SchedulerConfig

log = logging.getLogger("vlmserve.scheduler")
MB = 1024 * 1024
GB = 1024**3
MIN_RATIO, MAX_RATIO = 0.5, 2.0  # what a measurement may teach the next estimate, relative to the files' estimate
RECYCLE_FACTOR = 3.0  # an idle runner holding this many times its estimate is restarted (memory it kept)...
RECYCLE_MIN_BYTES = 512 * 2**20  # ...when that is also this much more than the estimate


class MemoryBook:
    def __init__(
        self,
        config: SchedulerConfig,
        probe: GpuProbe | None = None,
        layout_fn: Callable[[ModelSpec], Layout] = layout_of,
    ) -> None:
        self.config = config
        self.probe: GpuProbe = probe or NoGpuProbe()
        self._layout_fn = layout_fn
        self._ratio: dict[str, float] = {}  # RAM measured/estimated, per model
        self._gpu_ratio: dict[str, float] = {}
        self.devices: list[Device] = []

    @property
    def managed(self) -> bool:
        """GPUs are placed by the scheduler (the probe found some); else engines keep their own defaults."""
        return bool(self.devices)

    def refresh(self) -> None:
        self.devices = self.probe.devices()

    # --- estimates ------------------------------------------------------------------------------------------

    def layout(self, spec: ModelSpec) -> Layout:
        """The files' layout of `spec`, corrected by what earlier loads of this model measured."""
        base = self._layout_fn(spec)
        if spec.memory_mb is not None:
            return base
        return dataclasses.replace(
            base, ram_scale=self._ratio.get(spec.name, 1.0), gpu_scale=self._gpu_ratio.get(spec.name, 1.0)
        )

    def estimate(self, spec: ModelSpec) -> int:
        """RAM that loading `spec` takes with nothing on a GPU, corrected by earlier measurements."""
        return self.layout(spec).cpu_bytes

    def begin(self, runtime: Runtime, spec: ModelSpec, placement: Placement | None) -> None:
        """A load of `spec` starts with `placement` (None: CPU only): what it will hold, by device."""
        layout = self.layout(spec)
        if placement is None or not self.managed:
            runtime.placement, runtime.base = None, {RAM: self._layout_fn(spec).cpu_bytes}
            runtime.estimate, runtime.gpu_estimate = layout.cpu_bytes, {}
        else:
            raw = raw_footprint(self._layout_fn(spec), placement.gpu_layers, placement.devices, placement.split)
            runtime.placement, runtime.base = placement, raw
            runtime.estimate = placement.memory.get(RAM, 0)
            runtime.gpu_estimate = {d: b for d, b in placement.memory.items() if d != RAM}
        runtime.layout = layout
        runtime.measured = runtime.gpu_measured = None

    def forget(self, runtime: Runtime) -> None:
        """The model is unloaded (or failed to load): it holds nothing; its next load starts from the files."""
        runtime.placement, runtime.gpu_estimate, runtime.gpu_measured, runtime.measured = None, {}, None, None
        runtime.layout = self.layout(runtime.running_spec)
        runtime.estimate = runtime.layout.cpu_bytes
        runtime.base = {RAM: self._layout_fn(runtime.running_spec).cpu_bytes}

    def placed_spec(self, spec: ModelSpec, placement: Placement | None) -> ModelSpec:
        """The spec the runner starts with: the placement's layers and devices (only when GPUs are managed)."""
        if placement is None or not self.managed:
            return spec
        return apply_placement(spec, placement)

    # --- capacities -----------------------------------------------------------------------------------------

    def budget(self, device: Device) -> int:
        if self.config.gpu_budget_mb is not None:
            return min(device.total, self.config.gpu_budget_mb * MB)
        return int(device.total * self.config.gpu_fraction)

    def caps(self, runtimes: Iterable[Runtime], *, empty: bool = False) -> dict[int, int]:
        """What our models may hold on each GPU now: its budget, less what other programs use there (`empty`:
        the budget alone, for "could it ever fit")."""
        held = _held_per_gpu(runtimes)
        out = {}
        for device in self.devices:
            cap = self.budget(device)
            if not empty:
                external = max(0, device.used - held.get(device.index, 0))
                cap = max(0, min(cap, device.total - external))
            out[device.index] = cap
        return out

    def ever_fits(self, layout: Layout) -> bool:
        """Some placement fits the budgets of an empty machine (RAM, and each GPU's budget)."""
        return bool(placements(layout, {RAM: self.config.budget_bytes, **self.caps([], empty=True)}))

    def never_fits(self, spec: ModelSpec, variant: str | None, layout: Layout) -> InsufficientMemory:
        asked = f" with engine options {variant}" if variant else ""
        gpus = self.caps([], empty=True)
        where = f"the whole memory budget ({self.config.budget_bytes // MB} MB)"
        if gpus and layout.offload:
            where += ", even with as many layers as fit on " + " or ".join(
                f"GPU {d} ({cap // MB} MB)" for d, cap in gpus.items()
            )
        forced = " (gpu_layers fixes how many go to the GPU)" if layout.forced not in (None, 0) and gpus else ""
        return InsufficientMemory(
            f"model '{spec.name}'{asked} needs about {layout.cpu_bytes // MB} MB, more than {where}{forced}; "
            "raise memory_budget_mb or use a smaller model" + (" or a smaller num_ctx" if asked else "")
        )

    def log_placement(self, runtime: Runtime, placement: Placement | None) -> None:
        if placement is None or not self.managed or not runtime.spec.is_local:
            return
        name, layout = runtime.spec.name, runtime.layout
        if placement.kind == "cpu":
            log.warning("model %s fits no GPU: it runs on the CPU (%d MB of RAM)", name, runtime.estimate // MB)
        elif layout is not None and not placement.complete:
            log.info("model %s: %d of %d layers on GPU %s, the rest on the CPU", name, placement.gpu_layers,
                     layout.units, ",".join(map(str, placement.devices)))  # fmt: skip
        else:
            log.info("model %s: on GPU %s", name, ",".join(map(str, placement.devices)))

    # --- measurements ---------------------------------------------------------------------------------------

    def measure(self, runtime: Runtime) -> bool:
        """The runner's memory now (what the budget counts while it is loaded) and what it teaches the next
        estimate. True when an idle runner grew far past its estimate and should be recycled."""
        name = runtime.spec.name
        sample = runtime.backend.memory_bytes
        base = runtime.base.get(RAM, 0)
        if sample is not None and base > 0:
            runtime.measured = sample
            self._ratio[name] = _learn(self._ratio.get(name), sample / base)
        pid = getattr(runtime.backend, "pid", None)
        if self.managed and isinstance(pid, int):
            usage = self.probe.process_memory([pid]).get(pid)
            gpu_base = sum(b for d, b in runtime.base.items() if d != RAM)
            if usage:
                runtime.gpu_measured = usage
                if gpu_base > 0:
                    self._gpu_ratio[name] = _learn(self._gpu_ratio.get(name), sum(usage.values()) / gpu_base)
        if sample is None or base <= 0:
            return False
        return sample > RECYCLE_FACTOR * max(base, runtime.estimate) and sample - base > RECYCLE_MIN_BYTES

    # --- reports --------------------------------------------------------------------------------------------

    def gpu_report(self, runtimes: Iterable[Runtime]) -> list[dict[str, Any]]:
        """One entry per GPU: index, name, total, used, free, budget and the models on it (bytes)."""
        runtimes = list(runtimes)
        out = []
        for device in self.devices:
            models = {
                r.spec.name: r.gpu_need[device.index]
                for r in runtimes
                if r.state in HOLDS_MEMORY and r.gpu_need.get(device.index)
            }
            out.append({
                "index": device.index, "name": device.name, "total_bytes": device.total,
                "used_bytes": device.used, "free_bytes": device.free, "budget_bytes": self.budget(device),
                "models_bytes": sum(models.values()), "models": models,
            })  # fmt: skip
        return out

    def gpu_status(self, runtimes: Iterable[Runtime]) -> dict[str, Any]:
        """The seed's GPU fields of GET /admin/memory_status: any GPU managed; total, allocated (what our
        models hold, measured or estimated) and free (the devices' own figure) over every GPU, in GB."""
        held = _held_per_gpu(runtimes)
        return {
            "gpu_available": self.managed,
            "gpu_total_gb": round(sum(d.total for d in self.devices) / GB, 2),
            "gpu_allocated_gb": round(sum(held.values()) / GB, 2),
            "gpu_free_gb": round(sum(d.free for d in self.devices) / GB, 2),
        }


def _learn(old: float | None, ratio: float) -> float:
    learned = min(MAX_RATIO, max(MIN_RATIO, ratio))
    return learned if old is None else (old + learned) / 2


def _held_per_gpu(runtimes: Iterable[Runtime]) -> dict[int, int]:
    held: dict[int, int] = {}
    for runtime in runtimes:
        if runtime.state in HOLDS_MEMORY:
            for device, bytes_ in runtime.gpu_need.items():
                held[device] = held.get(device, 0) + bytes_
    return held
