"""The scheduler: one task owns all model and queue state; requests talk to it through events.

A request enqueues (queue full -> 429, never fits -> 507), waits for Admit (or its queue timeout -> 503),
runs with a lease, and releases. Each event is applied by the owner task, then `policy.plan` decides what
to admit, load, evict or unload; loads and unloads run as tasks that report back as events. A request that
is cancelled while queued (client gone) leaves the queue at once.

Memory is counted per device (RAM and each GPU the probe finds, see accounting.py and placement.py): the plan
says where a load goes (all on one GPU, split, some layers offloaded, or CPU only) and the runner is started
with that placement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from vlmserve.backends.base import Backend
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler import policy as pol
from vlmserve.scheduler.accounting import MAX_RATIO, MIN_RATIO, MemoryBook
from vlmserve.scheduler.devices import GpuProbe
from vlmserve.scheduler.jobs import Jobs, close_backend
from vlmserve.scheduler.placement import Layout
from vlmserve.scheduler.snapshot import EngineProbe, SchedulerSnapshot, take
from vlmserve.scheduler.state import (
    MEASURE_EVERY,
    Call,
    Done,
    Enqueue,
    Event,
    Lease,
    Leave,
    Runtime,
    SchedulerConfig,
    Waiter,
    engine_variant,
    fail_pending,
    keep_alive_of,
    new_runtime,
    next_deadline,
    queue_full,
    queue_timed_out,
    set_unloaded,
    shutting_down,
    spec_to_load,
    waiter_ids,
    waiter_view,
)

log = logging.getLogger("vlmserve.scheduler")
BackendFactory = Callable[[ModelSpec], Backend]
T = TypeVar("T")
__all__ = ["MAX_RATIO", "MIN_RATIO", "Scheduler"]


class Scheduler:
    def __init__(
        self,
        factory: BackendFactory,
        config: SchedulerConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        probe: GpuProbe | None = None,
        layout_fn: Callable[[ModelSpec], Layout] | None = None,
    ) -> None:
        self._factory = factory
        self.config = config
        self._policy = pol.Policy(
            config.budget_bytes, config.max_swap_wait, "fifo" if config.ordering == "fifo" else "swap-aware"
        )
        self._clock = clock
        self._models: dict[str, Runtime] = {}
        self._waiters: dict[int, Waiter] = {}
        self._admitted: dict[int, str] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._counters: Counter[tuple[str, str, str]] = Counter()  # (load/unload, model, reason): its own, not config
        self._loader = Jobs(self._models, self._events, factory, self._counters)
        self.memory = MemoryBook(config, probe) if layout_fn is None else MemoryBook(config, probe, layout_fn)
        self.memory.refresh()
        self._last_measure = 0.0
        self._unload_reasons: dict[str, str] = {}  # why the next unload of a model happens (admin, ...)
        self._closed = False  # set by close(): from then on nobody reads the events, so nothing may wait on them

    # --- what requests and admin endpoints call -------------------------------------------------------------

    def snapshot(self) -> SchedulerSnapshot:
        """A frozen copy of every model's state on the scheduler's clock: what readers outside it use."""
        queued = Counter(w.view.model for w in self._waiters.values())
        return take(self._models.values(), queued, self._clock(), self.config.budget_bytes, self._counters)

    async def engine_health(self, spec: ModelSpec) -> EngineProbe:
        """Ask a model's engine whether it answers (GET /health). A remote engine is asked even before its first
        request, so its runtime (and backend) may have to be made: on the owner task, the one place runtimes
        are made. A local engine is asked only while loaded (reachable None otherwise: nothing runs to ask)."""
        runtime = self._models.get(spec.name)
        if spec.is_local and (runtime is None or runtime.state != "loaded"):
            return EngineProbe(None, None)
        backend = runtime.backend if runtime is not None else await self._on_owner(lambda: self._runtime(spec).backend)
        reachable = await backend.health()
        return EngineProbe(reachable, backend.stats())  # stats read after the probe, which updated them

    def gpu_report(self) -> list[dict[str, Any]]:
        """Per GPU: index, name, total, used, free, budget and the models on it (GET /admin/memory)."""
        return self.memory.gpu_report(self._models.values())

    def gpu_status(self) -> dict[str, Any]:
        """gpu_available, gpu_total_gb, gpu_allocated_gb, gpu_free_gb (the seed's GET /admin/memory_status)."""
        return self.memory.gpu_status(self._models.values())

    def queued(self, name: str) -> int:
        return sum(1 for w in self._waiters.values() if w.view.model == name)

    @contextlib.asynccontextmanager
    async def lease(
        self,
        spec: ModelSpec,
        keep_alive: float | None = None,
        *,
        client: str = "",
        background: bool = False,
        queue_timeout: float | None = None,
        engine_options: dict[str, int] | None = None,
    ) -> AsyncIterator[Lease]:
        if self._closed:
            raise shutting_down()
        now = self._clock()
        variant, load_spec = engine_variant(spec, engine_options)
        view = waiter_view(
            next(waiter_ids), spec, variant, load_spec, engine_options, client=client, enqueued_at=now,
            background=background,
        )  # fmt: skip
        waiter = Waiter(
            view,
            asyncio.get_running_loop().create_future(),
            now + (queue_timeout if queue_timeout is not None else self.config.queue_timeout),
            load_spec if variant is not None else None,
        )
        self._events.put_nowait(Enqueue(spec, waiter))
        try:
            load_ns = await waiter.future
        except BaseException:
            self._events.put_nowait(Leave(view.id, spec.name))
            raise
        runtime = self._models[spec.name]
        began = self._clock()
        try:
            yield Lease(runtime.backend, load_ns)
        finally:
            self._events.put_nowait(Leave(view.id, spec.name, keep_alive, self._clock() - began))

    async def load(self, spec: ModelSpec, keep_alive: float | None = None) -> int:
        """Load a model now (admin / Ollama's empty request); returns the load time in ns."""
        async with self.lease(spec, keep_alive) as lease:
            return lease.load_ns

    async def unload(self, name: str, reason: str = "admin") -> bool:
        """Unload a model once it is idle; False if it was not loaded."""

        def expire() -> bool:
            runtime = self._models.get(name)
            if runtime is None or runtime.state != "loaded" or not runtime.spec.is_local:
                return False
            runtime.expires_at = self._clock()  # expire now: the plan unloads it as soon as it is idle
            runtime.keep_alive = 0.0
            self._unload_reasons[name] = reason
            return True

        if not await self._on_owner(expire):
            return False
        with contextlib.suppress(TimeoutError):  # a model with a steady queue may not go idle: say what happened
            async with asyncio.timeout(30.0):
                await self._models[name].unloaded.wait()
        return self._models[name].state == "unloaded"

    async def _on_owner(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the owner task and return what it returns (directly while there is no owner task)."""
        if self._closed:
            raise shutting_down()
        if self._task is None or self._task.done():
            return fn()
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # the caller gets the error, never a wait without end
                done.set_exception(exc)

        self._events.put_nowait(Call(run, done))
        return await done

    def wake(self) -> None:
        """Plan again now (for an injected clock that moved on its own)."""
        self._events.put_nowait(Call(lambda: None))

    # --- the owner task -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vlmserve-scheduler")

    async def close(self) -> None:
        self._closed = True  # new leases fail at once from here on
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        fail_pending(self._waiters, self._events)  # queued at close: answered now, never left hanging
        for job in list(self._jobs):
            job.cancel()
        for runtime in self._models.values():
            await close_backend(runtime.backend)

    async def _run(self) -> None:
        while True:
            event: Event | None = None
            try:
                # asyncio.timeout, not wait_for: wait_for can swallow a cancellation that races with get()
                wait = next_deadline(self._clock(), self._waiters, self._models, self.config.max_swap_wait)
                async with asyncio.timeout(max(0.0, wait - self._clock())):
                    event = await self._events.get()
            except TimeoutError:
                pass
            if event is not None:
                self._apply(event)
                while not self._events.empty():  # take everything that is ready before planning once
                    self._apply(self._events.get_nowait())
            try:
                self._tick()
                self.memory.refresh()
                policy = dataclasses.replace(self._policy, gpu_caps=self.memory.caps(self._models.values()))
                self._execute(
                    pol.plan(
                        {n: r.view() for n, r in self._models.items()},
                        [w.view for w in self._waiters.values()],
                        policy,
                        self._clock(),
                    )
                )
            except Exception as exc:  # the owner task survives; the queued requests get the error, never a hang
                log.exception("scheduler step failed: failing the %d queued requests", len(self._waiters))
                for waiter in self._waiters.values():
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                self._waiters.clear()

    def _apply(self, event: Event) -> None:
        """One event; a failure is logged and never stops the others (an enqueue's caller gets its error)."""
        try:
            self._apply_one(event)
        except Exception as exc:
            log.exception("scheduler event %s failed", type(event).__name__)
            if isinstance(event, Enqueue):
                self._waiters.pop(event.waiter.view.id, None)
                if not event.waiter.future.done():
                    event.waiter.future.set_exception(exc)

    def _apply_one(self, event: Event) -> None:
        if isinstance(event, Enqueue):
            self._enqueue(event.spec, event.waiter)
        elif isinstance(event, Leave):
            self._leave(event)
        elif isinstance(event, Done):
            self._done(event)
        else:
            event.run()

    def _runtime(self, spec: ModelSpec) -> Runtime:
        """The model's runtime, made on its first request: on the owner task only (or while none runs)."""
        runtime = self._models.get(spec.name)
        if runtime is None:
            runtime = self._models[spec.name] = new_runtime(spec, self._factory(spec))
            self.memory.forget(runtime)
        return runtime

    def _enqueue(self, spec: ModelSpec, waiter: Waiter) -> None:
        runtime = self._runtime(spec)
        # what a fresh load would take (not what a loaded runner holds now: one request's spike must not make
        # the model look as if it could never fit again)
        layout = self.memory.layout(waiter.load_spec or runtime.running_spec)
        if spec.is_local and not self.memory.ever_fits(layout):
            waiter.future.set_exception(self.memory.never_fits(spec, waiter.view.variant, layout))
            return
        if waiter.load_spec is not None:
            waiter.view = dataclasses.replace(waiter.view, need_bytes=layout.cpu_bytes, layout=layout)
        queued = self.queued(spec.name)
        if queued >= self.config.max_queue:
            waiter.future.set_exception(queue_full(runtime, queued, self.config.max_queue))
            return
        if runtime.state == "loaded" and spec.is_local and not runtime.backend.loaded:
            self._mark_unloaded(runtime, "crashed")  # the runner died since its last request
        self._waiters[waiter.view.id] = waiter

    def _leave(self, event: Leave) -> None:
        waiter = self._waiters.pop(event.waiter_id, None)
        if waiter is not None:
            if not waiter.future.done():
                waiter.future.cancel()
            return
        if self._admitted.pop(event.waiter_id, None) is None:
            return
        runtime = self._models[event.model]
        runtime.in_flight -= 1
        now = self._clock()
        runtime.last_used = now
        if event.seconds > 0:
            runtime.service_seconds = 0.8 * runtime.service_seconds + 0.2 * event.seconds
        if event.keep_alive is not None:
            runtime.keep_alive = event.keep_alive
        if runtime.in_flight == 0 and runtime.spec.is_local:
            alive = keep_alive_of(runtime, self.config.keep_alive)
            runtime.expires_at = None if math.isinf(alive) or runtime.spec.pin else now + alive

    def _done(self, event: Done) -> None:
        runtime = self._models[event.model]
        if not event.loaded:
            if event.error is not None:  # a failed load fails everyone waiting for it
                for waiter_id, waiter in list(self._waiters.items()):
                    if waiter.view.model == event.model:
                        del self._waiters[waiter_id]
                        waiter.future.set_exception(event.error)
                if runtime.variant:  # a variant that failed to load leaves the catalog's engine, as before it
                    self._spawn(close_backend(runtime.backend))
                    runtime.backend, runtime.variant, runtime.engine_spec = self._factory(runtime.spec), "", None
            self.memory.forget(runtime)
            set_unloaded(runtime)
            return
        runtime.state = "loaded"
        runtime.loaded_at = self._clock()
        runtime.load_ns = event.load_ns
        runtime.expires_at = None
        runtime.keep_alive = None
        self._measure(runtime)

    def _mark_unloaded(self, runtime: Runtime, reason: str) -> None:
        set_unloaded(runtime)
        self._counters[("unload", runtime.spec.name, reason)] += 1
        log.warning("model %s is no longer loaded (reason=%s)", runtime.spec.name, reason)

    def _measure(self, runtime: Runtime) -> None:
        """The runner's memory now replaces its estimate (RSS for RAM, NVML for its GPUs); an idle runner that
        grew far past its estimate (freed memory a process keeps) is recycled: unloaded, so the next request
        gets a fresh one."""
        grown = self.memory.measure(runtime)
        if grown and runtime.in_flight == 0 and runtime.spec.name not in self._unload_reasons:
            log.warning(
                "model %s holds %d MB, estimated %d MB: recycling its runner when idle",
                runtime.spec.name, (runtime.measured or 0) // 2**20, runtime.estimate // 2**20,
            )  # fmt: skip
            runtime.expires_at = self._clock()
            runtime.keep_alive = 0.0
            self._unload_reasons[runtime.spec.name] = "memory_grew"

    def _tick(self) -> None:
        now = self._clock()
        for waiter_id, waiter in list(self._waiters.items()):
            if now >= waiter.deadline:
                del self._waiters[waiter_id]
                waiter.future.set_exception(queue_timed_out(waiter, now, self._models[waiter.view.model]))
        measure = now - self._last_measure >= MEASURE_EVERY
        if measure:
            self._last_measure = now
        for runtime in self._models.values():
            if runtime.state != "loaded" or not runtime.spec.is_local:
                continue
            if not runtime.backend.loaded:
                self._mark_unloaded(runtime, "crashed")  # frees its share of the budget
            elif measure:
                self._measure(runtime)

    def _execute(self, actions: list[pol.Action]) -> None:
        for action in actions:
            if isinstance(action, pol.Admit):
                waiter = self._waiters.pop(action.waiter_id)
                if waiter.future.done():
                    continue  # cancelled while this plan was made: its Leave finds nothing to undo
                runtime = self._models[waiter.view.model]
                runtime.in_flight += 1
                runtime.expires_at = None
                self._admitted[action.waiter_id] = runtime.spec.name
                waiter.future.set_result(runtime.load_ns)  # the load this request waited for, else 0
            elif isinstance(action, pol.Load):
                for name in action.evict:
                    self._models[name].state = "unloading"
                runtime = self._models[action.model]
                runtime.state = "loading"
                runtime.unloaded.clear()
                load_spec = spec_to_load(runtime, action.variant, self._waiters.values())
                self.memory.begin(runtime, load_spec, action.placement)
                self.memory.log_placement(runtime, action.placement)
                placed = self.memory.placed_spec(load_spec, action.placement)
                self._spawn(self._loader.swap(action.evict, runtime, action.variant, load_spec, placed))
            else:
                self._models[action.model].state = "unloading"
                reason = self._unload_reasons.pop(action.model, action.reason)
                self._spawn(self._loader.unload(self._models[action.model], reason))
        for runtime in self._models.values():
            runtime.load_ns = 0  # only requests admitted right after a load report its duration

    def _spawn(self, job: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
