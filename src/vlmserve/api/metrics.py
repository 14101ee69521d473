"""Prometheus metrics (GET /metrics). One registry per app. The gateway records each request into plain dicts
and bisect histograms, exported by a collector at scrape time (no prometheus-client locks per request); what
describes the scheduler (queues, loaded models, memory, loads/unloads) is read from it at scrape time too.
Labels are bounded: surface, catalog model names ("" before a model is resolved), status codes, error types.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from vlmserve.context import RequestContext
from vlmserve.jobs.runtime import JobsRuntime
from vlmserve.scheduler.core import Scheduler
from vlmserve.service.fallback import FallbackCounts

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BOUNDS = (*map(str, map(float, _LATENCY)), "+Inf")


class _Histogram:
    """A plain histogram (bisect + list increments: well under a microsecond). Only the event loop thread
    touches it, the scrape included, so it needs no lock."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(_LATENCY, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip(_BOUNDS, self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


@dataclass(slots=True)
class _PerModel:
    ttft: _Histogram = field(default_factory=_Histogram)
    queue_wait: _Histogram = field(default_factory=_Histogram)
    tokens_in: int = 0
    tokens_out: int = 0


class _RequestCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        labels = ["surface", "model", "status"]
        requests = CounterMetricFamily("vlmserve_requests", "HTTP requests", labels=labels)
        latency = HistogramMetricFamily("vlmserve_request_seconds", "request latency", labels=labels)
        for (surface, model, status), (count, hist) in list(self.m.requests.items()):
            requests.add_metric([surface, model, str(status)], count[0])
            latency.add_metric([surface, model, str(status)], hist.buckets(), hist.sum)
        ttft = HistogramMetricFamily("vlmserve_time_to_first_token_seconds", "time to first token", labels=["model"])
        wait = HistogramMetricFamily("vlmserve_queue_wait_seconds", "time waiting for the model's turn",
                                     labels=["model"])  # fmt: skip
        tokens = CounterMetricFamily("vlmserve_tokens", "tokens in (prompt) and out (completion)",
                                     labels=["model", "direction"])  # fmt: skip
        for model, per in list(self.m.per_model.items()):
            ttft.add_metric([model], per.ttft.buckets(), per.ttft.sum)
            wait.add_metric([model], per.queue_wait.buckets(), per.queue_wait.sum)
            tokens.add_metric([model, "in"], per.tokens_in)
            tokens.add_metric([model, "out"], per.tokens_out)
        yield from (requests, latency, ttft, wait, tokens)


class _SchedulerCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Any]:
        scheduler = self.scheduler
        depth = GaugeMetricFamily("vlmserve_queue_depth", "requests waiting per model", labels=["model"])
        loaded = GaugeMetricFamily("vlmserve_model_loaded", "1 when the model is loaded", labels=["model"])
        memory = GaugeMetricFamily("vlmserve_model_memory_bytes", "memory held per model", labels=["model"])
        snapshot = scheduler.snapshot()
        for runtime in snapshot.models.values():
            name = runtime.name
            depth.add_metric([name], runtime.queued)
            loaded.add_metric([name], 1.0 if runtime.state == "loaded" else 0.0)
            held = (runtime.measured or runtime.need) if runtime.state != "unloaded" else 0
            memory.add_metric([name], float(held or 0))
        budget = GaugeMetricFamily("vlmserve_memory_budget_bytes", "memory budget of local models")
        budget.add_metric([], snapshot.budget_bytes)
        yield from _gpu_gauges(scheduler.gpu_report())
        loads = CounterMetricFamily("vlmserve_model_loads", "model loads by reason", labels=["model", "reason"])
        unloads = CounterMetricFamily("vlmserve_model_unloads", "model unloads by reason", labels=["model", "reason"])
        for (kind, model, reason), count in snapshot.counters.items():
            target = loads if kind == "load" else unloads if kind == "unload" else None
            if target is not None:
                target.add_metric([model, reason], count)
        yield from (depth, loaded, memory, budget, loads, unloads)


def _gpu_gauges(gpus: list[dict[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Per GPU: total, used (every process), free, our budget, and what each model holds there."""
    labels = ["gpu", "name"]
    families = {
        key: GaugeMetricFamily(f"vlmserve_gpu_memory_{key}_bytes", f"GPU memory: {key}", labels=labels)
        for key in ("total", "used", "free", "budget")
    }
    per_model = GaugeMetricFamily(
        "vlmserve_model_gpu_memory_bytes", "GPU memory held per model", labels=["model", "gpu"]
    )
    for gpu in gpus:
        index = str(gpu["index"])
        for key, family in families.items():
            family.add_metric([index, gpu["name"]], float(gpu[f"{key}_bytes"]))
        for model, held in gpu["models"].items():
            per_model.add_metric([model, index], float(held))
    yield from (*families.values(), per_model)


class _PoolCollector(Collector):
    """Engine pools (backends/pool.py) and fallbacks (service/fallback.py), read from them at scrape time."""

    def __init__(self, scheduler: Scheduler, fallbacks: Sequence[FallbackCounts]) -> None:
        self.scheduler = scheduler
        self.fallbacks = fallbacks  # the services' own counters, read as they are at scrape time

    def collect(self) -> Iterator[Any]:
        labels = ["model", "replica"]
        healthy = GaugeMetricFamily("vlmserve_replica_healthy", "1 when a replica takes traffic, 0 while it cools down",
                                    labels=labels)  # fmt: skip
        busy = GaugeMetricFamily("vlmserve_replica_in_flight", "requests in flight per replica", labels=labels)
        attempts = CounterMetricFamily("vlmserve_replica_attempts", "attempts per replica by outcome",
                                       labels=[*labels, "outcome"])  # fmt: skip
        cooldowns = CounterMetricFamily("vlmserve_replica_cooldowns", "times a replica was cooled down", labels=labels)
        retries = CounterMetricFamily("vlmserve_engine_retries", "retries by the error that caused them",
                                      labels=["model", "type"])  # fmt: skip
        for runtime in self.scheduler.snapshot().models.values():
            stats, name = runtime.stats, runtime.name
            if stats is None:  # one engine, not a pool
                continue
            for replica in stats.upstreams:
                url = replica.url  # without a password from the URL: never one in a label
                healthy.add_metric([name, url], 1.0 if replica.up else 0.0)
                busy.add_metric([name, url], replica.in_flight)
                attempts.add_metric([name, url, "ok"], replica.answered)
                attempts.add_metric([name, url, "failed"], replica.failed)
                cooldowns.add_metric([name, url], replica.cooldowns)
            for error_type, count in stats.retries.items():
                retries.add_metric([name, error_type], count)
        fallbacks = CounterMetricFamily("vlmserve_fallbacks", "requests answered by a fallback model",
                                        labels=["model", "fallback"])  # fmt: skip
        counts = sum(self.fallbacks, FallbackCounts())
        for (model, fallback), count in counts.items():
            fallbacks.add_metric([model, fallback], count)
        yield from (healthy, busy, attempts, cooldowns, retries, fallbacks)


RECENT_REQUESTS = 50
# not kept in the recent-requests list: the status page's own polling, liveness probes and pages would crowd it
_NOT_RECENT = ("/ui", "/admin/status", "/metrics", "/health", "/docs", "/redoc", "/openapi.json")


@dataclass(frozen=True, slots=True)
class RecentRequest:
    """One finished request as the status page lists it: route, model, outcome and counts, never a body."""

    ended_at: float  # epoch seconds
    method: str
    path: str
    surface: str
    model: str
    status: int
    duration_ms: float
    first_token_ms: float | None
    tokens_in: int
    tokens_out: int


class Metrics:
    def __init__(self) -> None:
        self.recent: deque[RecentRequest] = deque(maxlen=RECENT_REQUESTS)
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests: dict[tuple[str, str, int], tuple[list[int], _Histogram]] = {}
        self.per_model: dict[str, _PerModel] = {}
        r.register(_RequestCollector(self))
        self.engine_errors = Counter("vlmserve_engine_errors", "failed requests by error type", ["type"], registry=r)
        self.rate_limited = Counter("vlmserve_rate_limited", "requests refused by a rate limit", ["reason"],
                                    registry=r)  # fmt: skip
        self.batch_lines = Gauge("vlmserve_batch_lines", "batch lines by state", ["state"], registry=r)

    def attach(self, scheduler: Scheduler, fallbacks: Sequence[FallbackCounts] = ()) -> None:
        """Export what the scheduler and the services' fallback counters hold, read at each scrape."""
        self.registry.register(_SchedulerCollector(scheduler))
        self.registry.register(_PoolCollector(scheduler, fallbacks))

    def observe(self, ctx: RequestContext, status: int, end_ns: int) -> None:
        """One finished request: dict lookups and integer adds, a microsecond or so."""
        label = (ctx.surface, ctx.model, status)
        entry = self.requests.get(label)
        if entry is None:
            entry = self.requests[label] = ([0], _Histogram())
        entry[0][0] += 1
        entry[1].observe((end_ns - ctx.started_ns) / 1e9)
        if not ctx.model:
            return
        per = self.per_model.get(ctx.model)
        if per is None:
            per = self.per_model[ctx.model] = _PerModel()
        if ctx.first_token_ns is not None:
            per.ttft.observe((ctx.first_token_ns - ctx.started_ns) / 1e9)
        if ctx.queue_wait_ns is not None:
            per.queue_wait.observe(ctx.queue_wait_ns / 1e9)
        per.tokens_in += ctx.tokens_in
        per.tokens_out += ctx.tokens_out

    def remember(self, ctx: RequestContext, method: str, path: str, status: int, end_ns: int) -> None:
        """Keep the request in the bounded recent list (GET /admin/status); a deque append, no lock needed."""
        if path == "/" or path.startswith(_NOT_RECENT):
            return
        first = None if ctx.first_token_ns is None else round((ctx.first_token_ns - ctx.started_ns) / 1e6, 1)
        self.recent.append(RecentRequest(time.time(), method, path, ctx.surface, ctx.model, status,
                                         round((end_ns - ctx.started_ns) / 1e6, 1), first, ctx.tokens_in,
                                         ctx.tokens_out))  # fmt: skip

    async def render(self, jobs: JobsRuntime | None) -> bytes:
        if jobs is not None:
            for item_state, n in (await jobs.store.batches.item_state_counts()).items():
                self.batch_lines.labels(item_state).set(n)
        return generate_latest(self.registry)
