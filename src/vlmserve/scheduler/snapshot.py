"""What readers outside the scheduler see: a frozen copy of its state, taken at one instant on its own clock.

The owner task mutates `Runtime` objects; admin, metrics, the status page and the Ollama surface read these
snapshots instead, so they never hold a live object nor compare the scheduler's times with a clock of their own
(`taken_at` is the scheduler's clock; `expires_in` is seconds from `taken_at`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vlmserve.backends.base import BackendStats
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler import policy as pol
from vlmserve.scheduler.placement import Placement
from vlmserve.scheduler.state import Runtime

Counters = Mapping[tuple[str, str, str], int]  # (kind "load"/"unload", model, reason) -> count
_EMPTY: Mapping[int, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EngineProbe:
    """What asking an engine found: reachable (None: not asked, nothing runs) and an engine pool's upstreams."""

    reachable: bool | None
    stats: BackendStats | None


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """One model as the scheduler knew it at `SchedulerSnapshot.taken_at` (read-only)."""

    name: str
    spec: ModelSpec  # the catalog's entry
    running_spec: ModelSpec  # what the engine runs: the entry, or a variant with other engine options
    variant: str  # "" = the catalog's engine options
    state: pol.ModelState
    in_flight: int
    queued: int
    estimate: int  # RAM bytes, estimated
    measured: int | None  # RAM bytes, measured (None until it is)
    need: int  # RAM it holds (or will): measured when known, else estimated
    gpu_need: Mapping[int, int]  # bytes per GPU: measured when known, else estimated
    gpu_measured: Mapping[int, int] | None
    placement: Placement | None
    last_used: float  # scheduler clock
    loaded_at: float | None  # scheduler clock
    expires_at: float | None  # scheduler clock; None: no unload planned
    expires_in: float | None  # seconds from the snapshot's `taken_at` (may be negative: overdue)
    keep_alive: float | None
    load_ns: int
    service_seconds: float
    stats: BackendStats | None  # an engine pool's upstreams; None for one engine

    @property
    def vram_bytes(self) -> int:
        return sum(self.gpu_need.values())

    @property
    def holds_memory(self) -> bool:
        return self.state in pol.HOLDS_MEMORY


@dataclass(frozen=True, slots=True)
class SchedulerSnapshot:
    taken_at: float  # the scheduler's clock
    models: Mapping[str, ModelSnapshot]  # models the scheduler has seen, in the order it first saw them
    used_bytes: int  # RAM the loaded (loading, unloading) models hold, as the budget counts it
    budget_bytes: int
    counters: Counters

    def model(self, spec: ModelSpec) -> ModelSnapshot:
        """The model's state; one never requested yet is reported from its entry (unloaded, or "loaded" for a
        remote engine, which has nothing to load), without creating anything for it."""
        return self.models.get(spec.name) or unseen(spec)

    def loaded_local(self) -> list[str]:
        return [m.name for m in self.models.values() if m.spec.is_local and m.state == "loaded"]


def _frozen(values: Mapping[int, int]) -> Mapping[int, int]:
    return MappingProxyType(dict(values)) if values else _EMPTY


def of_runtime(runtime: Runtime, now: float, queued: int) -> ModelSnapshot:
    expires = runtime.expires_at
    return ModelSnapshot(
        name=runtime.spec.name, spec=runtime.spec, running_spec=runtime.running_spec, variant=runtime.variant,
        state=runtime.state, in_flight=runtime.in_flight, queued=queued, estimate=runtime.estimate,
        measured=runtime.measured, need=runtime.need, gpu_need=_frozen(runtime.gpu_need),
        gpu_measured=None if runtime.gpu_measured is None else _frozen(runtime.gpu_measured),
        placement=runtime.placement, last_used=runtime.last_used, loaded_at=runtime.loaded_at, expires_at=expires,
        expires_in=None if expires is None else expires - now, keep_alive=runtime.keep_alive,
        load_ns=runtime.load_ns, service_seconds=runtime.service_seconds, stats=runtime.backend.stats(),
    )  # fmt: skip


def unseen(spec: ModelSpec) -> ModelSnapshot:
    return ModelSnapshot(
        name=spec.name, spec=spec, running_spec=spec, variant="", state="unloaded" if spec.is_local else "loaded",
        in_flight=0, queued=0, estimate=0, measured=None, need=0, gpu_need=_EMPTY, gpu_measured=None,
        placement=None, last_used=0.0, loaded_at=None, expires_at=None, expires_in=None, keep_alive=None,
        load_ns=0, service_seconds=1.0, stats=None,
    )  # fmt: skip


def take(
    runtimes: Iterable[Runtime], queued: Mapping[str, int], now: float, budget_bytes: int, counters: Counters
) -> SchedulerSnapshot:
    models = {r.spec.name: of_runtime(r, now, queued.get(r.spec.name, 0)) for r in runtimes}
    used = sum(m.need for m in models.values() if m.holds_memory)
    frozen_counters = MappingProxyType(Counter(counters))  # a Counter: absent keys read 0, as before
    return SchedulerSnapshot(now, MappingProxyType(models), used, budget_bytes, frozen_counters)
