"""The scheduler's state and the events its owner task applies: plain data, and the small steps on it that the
owner task takes (making a runtime, marking it unloaded, the errors a queue gives)."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vlmserve.backends.base import Backend
from vlmserve.domain.spec import ModelSpec
from vlmserve.errors import Overloaded, Unavailable, VlmServeError
from vlmserve.scheduler import policy as pol
from vlmserve.scheduler.memory import max_context
from vlmserve.scheduler.placement import Layout, Placement

MIN_CONTEXT = 256  # tokens: Ollama's smallest num_ctx
MEASURE_EVERY = 5.0  # seconds between RSS measurements of loaded runners


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
    engine_spec: ModelSpec | None = None  # the spec the backend runs (the catalog's, or a variant of it)
    unloaded: asyncio.Event = field(default_factory=asyncio.Event)  # set while state == "unloaded"
    layout: Layout | None = None  # what its next (or current) load takes, by part
    placement: Placement | None = None  # where the loaded engine's memory is (None: RAM only)
    base: dict[int, int] = field(default_factory=dict)  # the files' estimate of that placement, per device
    gpu_estimate: dict[int, int] = field(default_factory=dict)  # bytes per GPU, estimated
    gpu_measured: dict[int, int] | None = None  # bytes per GPU, measured by NVML for the runner's process

    @property
    def need(self) -> int:
        """RAM it holds (or will): measured when known, else estimated."""
        return self.measured if self.measured is not None else self.estimate

    @property
    def gpu_need(self) -> dict[int, int]:
        return self.gpu_measured if self.gpu_measured is not None else self.gpu_estimate

    @property
    def vram_bytes(self) -> int:
        return sum(self.gpu_need.values())

    @property
    def running_spec(self) -> ModelSpec:
        return self.engine_spec or self.spec

    def view(self) -> pol.ModelView:
        running = self.running_spec
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
            running.context_size,
            running.gpu_layers,
            self.gpu_need if self.state in pol.HOLDS_MEMORY else {},
            self.layout,
        )


def new_runtime(spec: ModelSpec, backend: Backend) -> Runtime:
    runtime = Runtime(spec, backend, engine_spec=spec)
    if spec.is_local:
        runtime.unloaded.set()
    else:
        runtime.state = "loaded"  # remote engines are always "loaded": nothing to load locally
    return runtime


def keep_alive_of(runtime: Runtime, default: float) -> float:
    """How long it stays loaded once idle: the last request's keep_alive, else the entry's, else the server's."""
    if runtime.keep_alive is not None:
        return runtime.keep_alive
    return runtime.spec.keep_alive if runtime.spec.keep_alive is not None else default


def queue_full(runtime: Runtime, queued: int, limit: int) -> Overloaded:
    rate = runtime.spec.parallel / max(runtime.service_seconds, 1e-3)  # requests per second this model completes
    return Overloaded(
        f"model '{runtime.spec.name}' has {queued} requests queued (limit {limit})",
        retry_after=max(1, math.ceil((queued + 1) / rate)),
    )


def set_unloaded(runtime: Runtime) -> None:
    runtime.state = "unloaded"
    runtime.unloaded.set()
    runtime.expires_at = None


@dataclass
class Waiter:
    view: pol.WaiterView
    future: asyncio.Future[int]
    deadline: float
    load_spec: ModelSpec | None = None  # the engine options it needs, as a spec to load (None = any engine)


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
    reply: asyncio.Future[Any] | None = None  # what its caller awaits: failed at close if it never ran


Event = Enqueue | Leave | Done | Call
waiter_ids = itertools.count(1)


@dataclass(frozen=True)
class SchedulerConfig:
    budget_bytes: int
    keep_alive: float = 300.0
    max_queue: int = 64
    queue_timeout: float = 600.0
    max_swap_wait: float = 10.0
    ordering: str = "swap-aware"
    gpu_budget_mb: int | None = None  # what our models may hold on each GPU (None: gpu_fraction of it)
    gpu_fraction: float = 0.9


def spec_to_load(runtime: Runtime, variant: str | None, waiters: Iterable[Waiter]) -> ModelSpec:
    """The spec a Load runs: the engine options of a request queued for `variant`, else what runs now."""
    if variant is None or variant == runtime.variant:
        return runtime.running_spec
    if variant == "":
        return runtime.spec
    for waiter in waiters:
        if waiter.view.model == runtime.spec.name and waiter.view.variant == variant and waiter.load_spec:
            return waiter.load_spec
    return runtime.spec


def queue_timed_out(waiter: Waiter, now: float, runtime: Runtime) -> Unavailable:
    return Unavailable(
        f"timed out after {now - waiter.view.enqueued_at:.0f}s waiting in the queue of model '{waiter.view.model}'",
        retry_after=max(1, math.ceil(runtime.service_seconds)),
    )


def next_deadline(now: float, waiters: dict[int, Waiter], runtimes: dict[str, Runtime], swap_wait: float) -> float:
    """When the owner task must plan again: the next queue timeout, swap wait, idle expiry or measurement."""
    deadlines = [now + MEASURE_EVERY]
    deadlines += [w.deadline for w in waiters.values()]
    deadlines += [w.view.enqueued_at + swap_wait for w in waiters.values()]
    deadlines += [r.expires_at for r in runtimes.values() if r.expires_at is not None]
    return min(d for d in deadlines if d > now)  # passed deadlines were handled when they passed


def shutting_down() -> Unavailable:
    return Unavailable("the server is shutting down", retry_after=5)


def fail_pending(waiters: dict[int, Waiter], events: asyncio.Queue[Event]) -> None:
    """At close, once the owner task is gone: the queued requests, and the events it will never apply now (an
    Enqueue, an admin Call), are answered with `shutting_down`, so no caller is left waiting."""
    pending = list(waiters.values())
    waiters.clear()
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, Enqueue):
            pending.append(event.waiter)
        elif isinstance(event, Call) and event.reply is not None and not event.reply.done():
            event.reply.set_exception(shutting_down())
    for waiter in pending:
        if not waiter.future.done():
            waiter.future.set_exception(shutting_down())  # one error each: a shared one would pile up tracebacks


def engine_variant(spec: ModelSpec, options: dict[str, int] | None) -> tuple[str | None, ModelSpec]:
    """The variant key a request needs (None = any engine) and the spec to load for it.

    Only options this engine takes at load count (context size, threads, GPU layers); sampling options never
    cause a reload. They are bounded first: the context by what the model can use (`max_context`), threads by
    this machine's cores; a negative number of GPU layers is Ollama's "as many as fit" (auto). An option equal
    to the catalog's value asks for the catalog's engine (key "")."""
    if not options or not spec.is_local:
        return None, spec
    wanted: dict[str, int | str] = {k: v for k, v in options.items() if k in spec.engine_option_names}
    if not wanted:
        return None, spec
    if "context_size" in wanted:
        wanted["context_size"] = min(max(int(wanted["context_size"]), MIN_CONTEXT), max_context(spec))
    if "threads" in wanted:
        wanted["threads"] = min(max(int(wanted["threads"]), 1), os.cpu_count() or 1)
    if "gpu_layers" in wanted and int(wanted["gpu_layers"]) < 0:
        wanted["gpu_layers"] = "auto"
    changed = {k: v for k, v in sorted(wanted.items()) if getattr(spec, k) != v}
    key = ",".join(f"{k}={v}" for k, v in changed.items())
    return key, spec.model_copy(update=changed) if changed else spec


def waiter_view(
    waiter_id: int,
    spec: ModelSpec,
    variant: str | None,
    load_spec: ModelSpec,
    options: dict[str, int] | None,
    **fields: Any,
) -> pol.WaiterView:
    """A queued request's view: an engine with at least the context it asks for (and the GPU layers, when it
    names them) serves it, so smaller contexts and thread counts never reload a model."""
    if variant is None:
        return pol.WaiterView(waiter_id, spec.name, **fields)
    asked_gpu = load_spec.gpu_layers if options and "gpu_layers" in options else None
    return pol.WaiterView(
        waiter_id, spec.name, variant=variant, context_size=load_spec.context_size, gpu_layers=asked_gpu, **fields
    )
