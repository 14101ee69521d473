"""The scheduler's state and the events its owner task applies (plain data; no behaviour)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from vlmserve.backends.base import Backend
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import VlmServeError
from vlmserve.scheduler import policy as pol


@dataclass(frozen=True, slots=True)
class Lease:
    backend: Backend
    load_ns: int


@dataclass
class Runtime:
    """Everything the scheduler knows about one catalog model."""

    spec: ModelSpec
    backend: Backend
    state: pol.ModelState = "unloaded"
    in_flight: int = 0
    estimate: int = 0
    measured: int | None = None
    last_used: float = 0.0
    expires_at: float | None = None
    keep_alive: float | None = None
    loaded_at: float | None = None
    service_seconds: float = 1.0  # moving average of lease duration: the basis of Retry-After
    load_ns: int = 0
    variant: str = ""  # engine options the backend runs with ("" = the catalog's)
    unloaded: asyncio.Event = field(default_factory=asyncio.Event)  # set while state == "unloaded"

    @property
    def need(self) -> int:
        return self.measured if self.measured is not None else self.estimate

    def view(self) -> pol.ModelView:
        return pol.ModelView(
            self.spec.name,
            self.state,
            self.in_flight,
            self.spec.parallel,
            self.need,
            self.spec.pin,
            self.spec.priority,
            self.last_used,
            self.expires_at,
            self.variant,
        )


@dataclass
class Waiter:
    view: pol.WaiterView
    future: asyncio.Future[int]
    deadline: float


@dataclass(frozen=True)
class Enqueue:
    spec: ModelSpec
    waiter: Waiter


@dataclass(frozen=True)
class Leave:  # a queued or admitted request is gone (cancelled or finished)
    waiter_id: int
    model: str
    keep_alive: float | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Done:  # a load or unload task finished
    model: str
    loaded: bool
    error: VlmServeError | None = None
    load_ns: int = 0


@dataclass(frozen=True)
class Call:  # admin operations, run by the owner task
    run: Callable[[], None]


Event = Enqueue | Leave | Done | Call
waiter_ids = itertools.count(1)


@dataclass
class SchedulerConfig:
    budget_bytes: int
    keep_alive: float = 300.0
    max_queue: int = 64
    queue_timeout: float = 600.0
    max_swap_wait: float = 10.0
    ordering: str = "swap-aware"
    counters: Counter[tuple[str, str, str]] = field(default_factory=Counter)


ENGINE_OPTIONS = ("context_size", "threads", "gpu_layers")  # options that need the engine restarted


def engine_variant(spec: ModelSpec, options: dict[str, int] | None) -> tuple[str | None, ModelSpec]:
    """The variant key a request needs (None = any) and the spec to load for it.

    Only options that change the engine count (context size, threads, GPU layers); sampling options never
    cause a reload. An option equal to the catalog's value asks for the catalog's engine (key "")."""
    if not options or not spec.is_local:
        return None, spec
    changed = {k: v for k, v in sorted(options.items()) if k in ENGINE_OPTIONS and getattr(spec, k) != v}
    key = ",".join(f"{k}={v}" for k, v in changed.items())
    return key, spec.model_copy(update=changed) if changed else spec
