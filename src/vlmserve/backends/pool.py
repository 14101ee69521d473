"""PoolBackend: one catalog model served by several upstream replicas of the same remote engine.

Routing: cache-aware, then least busy. A request whose prompt prefix (system prompt, earlier turns, the same
images) a replica served recently goes back to it (its KV cache still holds the prefix: see affinity.py), unless
that replica has AFFINITY_SLACK or more requests in flight beyond the least busy one; otherwise the eligible
replica with the fewest requests in flight, ties round-robin.
Passive health: a refused connection cools a replica down at once; an engine error (5xx, reset, malformed answer),
a 503 or a timeout counts as a failure, and `failures_to_cooldown` of them in a row cool it down for `cooldown`
seconds. After its cooldown a replica is on probation: one more failure cools it down again, a success clears it.
Active health: every `health_interval` seconds every replica's health() is probed; a failed probe cools the
replica down (or keeps it cooling), a passing probe ends a cooldown at once (the replica is then on probation).
Retries: those same failures are retried on another replica (backoff doubling from `retry_backoff`, with jitter)
up to `max_retries` times, only while nothing has been yielded to the caller; after the first chunk an error
propagates as before (in-band). A 4xx is the request's fault: never retried, no mark on the replica. A 429 moves
to a replica not tried yet, else it propagates with the upstream's Retry-After.
When every replica is cooling down, requests still try them (least busy first): refusing outright would turn a
false alarm into an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from vlmserve.backends.affinity import PrefixAffinity, prefix_keys
from vlmserve.backends.base import Backend, BackendStats, ReplicaState, UpstreamStatus
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import EngineError, EngineTimeout, Overloaded, Unavailable, VlmServeError

log = logging.getLogger("vlmserve.pool")
T = TypeVar("T")
AFFINITY_SLACK = 2  # requests in flight beyond the least busy replica at which a cached prefix no longer wins


class MemberBackend(Backend, Protocol):
    """A remote backend for one URL (OllamaBackend, OpenAICompatibleBackend)."""


class Verdict(enum.Enum):
    FATAL = "fatal"  # the request's own fault (4xx) or not an engine failure: propagate as is
    FAILED = "failed"  # the replica failed: mark it, retry elsewhere
    REFUSED = "refused"  # the replica cannot be reached: cool it down now, retry elsewhere
    BUSY = "busy"  # the replica is overloaded (429): retry on an untried replica if any


def verdict(exc: VlmServeError) -> Verdict:
    if isinstance(exc, Overloaded):
        return Verdict.BUSY
    if isinstance(exc, EngineError | EngineTimeout) and isinstance(
        exc.__cause__, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    ):
        return Verdict.REFUSED
    if isinstance(exc, EngineError | EngineTimeout | Unavailable):
        return Verdict.FAILED
    return Verdict.FATAL


@dataclass(eq=False)
class Replica:
    url: str
    backend: MemberBackend
    in_flight: int = 0
    failures: int = 0  # consecutive failed attempts
    down_until: float = 0.0  # clock time; cooling down while the clock is before it
    cooling: bool = False  # went down and has not passed a request or a probe since
    answered: int = 0  # attempts that produced an answer
    failed: int = 0  # attempts that failed (engine errors, timeouts, refused connections)
    cooldowns: int = 0

    def available(self, now: float) -> bool:
        return now >= self.down_until


def public_url(url: str) -> str:
    """`url` without the user:password an upstream URL may carry: what is safe to show."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal needs its brackets back
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))


class PoolBackend:
    """The Backend protocol over N member backends of one remote model (one per URL)."""

    def __init__(
        self,
        spec: ModelSpec,
        members: list[tuple[str, MemberBackend]],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        cache_aware: bool = True,
    ) -> None:
        if not members:
            raise ValueError(f"model {spec.name!r}: a pool needs at least one member")
        self.spec = spec
        self.replicas = [Replica(url, backend) for url, backend in members]
        self.retries: Counter[str] = Counter()  # retries by the error type that caused them
        self._clock = clock
        self._rng = rng or random.Random()
        self._turn = 0
        self._prober: asyncio.Task[None] | None = None
        self.cache_aware = cache_aware
        self.affinity: PrefixAffinity[Replica] = PrefixAffinity(clock)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def is_up(self, replica: Replica) -> bool:
        """True when the replica takes traffic (healthy or on probation), False while it cools down."""
        return replica.available(self._clock())

    def replica_states(self) -> list[ReplicaState]:
        """Every replica's state now, in configuration order (reads only: probes nothing, changes nothing)."""
        now = self._clock()
        states = []
        for replica in self.replicas:
            up = replica.available(now)
            status: UpstreamStatus = "cooling_down" if not up else "on_probation" if replica.cooling else "healthy"
            states.append(ReplicaState(
                url=public_url(replica.url), status=status,
                cooldown_left_seconds=0.0 if up else round(replica.down_until - now, 1),
                in_flight=replica.in_flight, consecutive_failures=replica.failures, answered=replica.answered,
                failed=replica.failed, cooldowns=replica.cooldowns,
            ))  # fmt: skip
        return states

    def stats(self) -> BackendStats:
        """Each replica's state and the retries so far (GET /health, GET /admin/models, /metrics read them)."""
        return BackendStats(tuple(self.replica_states()), dict(self.retries))

    @property
    def loaded(self) -> bool:
        return any(r.backend.loaded for r in self.replicas)

    @property
    def memory_bytes(self) -> int | None:
        return None

    async def start(self) -> None:
        """Start every member; succeeds when at least one is reachable."""
        await asyncio.gather(*(r.backend.start() for r in self.replicas))
        if not await self.health():
            raise Unavailable(f"{self.spec.name}: no replica is reachable ({', '.join(self.spec.urls)})")

    async def stop(self) -> None:
        await self._stop_prober()
        for replica in self.replicas:
            await replica.backend.stop()

    async def aclose(self) -> None:
        await self._stop_prober()
        for replica in self.replicas:
            await replica.backend.aclose()

    async def health(self) -> bool:
        """Probe every replica now (updating their state); True when at least one answers."""
        results = await asyncio.gather(*(r.backend.health() for r in self.replicas))
        now = self._clock()
        for replica, ok in zip(self.replicas, results, strict=True):
            if ok and not replica.available(now):  # back on probation: its next request decides
                replica.down_until = 0.0
                log.info("%s: replica %s is back (health probe passed)", self.spec.name, replica.url)
            elif not ok:
                self._cool_down(replica, now, "health probe failed")
        return any(results)

    # --- inference ------------------------------------------------------------------------------------------

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._stream(lambda backend: backend.chat(request), self._keys(request))

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        return self._stream(lambda backend: backend.complete(request), self._keys(request))

    def _keys(self, request: ChatRequest | CompletionRequest) -> list[bytes]:
        return prefix_keys(request) if self.cache_aware and len(self.replicas) > 1 else []

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        return await self._call(lambda backend: backend.embed(request))

    async def _stream(
        self, open_stream: Callable[[MemberBackend], AsyncIterator[ChatChunk]], keys: list[bytes]
    ) -> AsyncIterator[ChatChunk]:
        self._ensure_prober()
        tried: set[Replica] = set()
        attempt = 0
        while True:
            replica = self._take(tried, keys)
            started = False
            try:
                # backends' streams are async generators: closing one at once closes its HTTP response
                stream = cast(AsyncGenerator[ChatChunk, None], open_stream(replica.backend))
                async with contextlib.aclosing(stream) as chunks:
                    async for chunk in chunks:
                        if not started:
                            started = True
                            self._healthy(replica)
                        yield chunk
                if not started:
                    self._healthy(replica)
                replica.answered += 1
                if keys:
                    self.affinity.record(keys, replica)
                return
            except VlmServeError as exc:
                if started:  # bytes reached the caller: no retry, but the replica still failed
                    self._mark(replica, verdict(exc))
                    raise
                if not self._retry(exc, replica, tried, attempt):
                    raise
            finally:
                replica.in_flight -= 1
            attempt += 1
            await self._backoff(attempt)

    async def _call(self, call: Callable[[MemberBackend], Awaitable[T]]) -> T:
        self._ensure_prober()
        tried: set[Replica] = set()
        attempt = 0
        while True:
            replica = self._take(tried)
            try:
                result = await call(replica.backend)
            except VlmServeError as exc:
                if not self._retry(exc, replica, tried, attempt):
                    raise
            else:
                self._healthy(replica)
                replica.answered += 1
                return result
            finally:
                replica.in_flight -= 1
            attempt += 1
            await self._backoff(attempt)

    # --- choosing, marking, retrying ------------------------------------------------------------------------

    def _take(self, tried: set[Replica], keys: list[bytes] | None = None) -> Replica:
        """Pick a replica for the next attempt and count it busy (the caller's `finally` uncounts it)."""
        replica = self.pick(tried, keys)
        tried.add(replica)
        replica.in_flight += 1
        return replica

    def pick(self, tried: set[Replica], keys: list[bytes] | None = None) -> Replica:
        """Among available untried replicas, else available ones, else untried, else any: the one that served the
        longest prefix of `keys` (when not AFFINITY_SLACK busier than the least busy), else the least busy."""
        now = self._clock()
        available = [r for r in self.replicas if r.available(now)]
        tiers = ([r for r in available if r not in tried], available, [r for r in self.replicas if r not in tried])
        candidates = next((tier for tier in tiers if tier), self.replicas)
        fewest = min(r.in_flight for r in candidates)
        # a request's first message alone (a shared system prompt) does not pin it: every replica that served it
        # once holds it, and pinning it sent every new conversation to the first one (bench/pool_affinity.py)
        owned = keys[1:] if keys and len(keys) > 1 else keys
        if owned:
            owners = self.affinity.owners(owned, lambda r: r in candidates and r.in_flight - fewest < AFFINITY_SLACK)
            if owners:
                return min(owners, key=lambda r: r.in_flight)
        least_busy = [r for r in candidates if r.in_flight == fewest]
        chosen = least_busy[self._turn % len(least_busy)]
        self._turn += 1
        return chosen

    def _retry(self, exc: VlmServeError, replica: Replica, tried: set[Replica], attempt: int) -> bool:
        """Mark the replica for this failure; True when the request should try again."""
        kind = verdict(exc)
        self._mark(replica, kind)
        if kind is Verdict.FATAL or attempt >= self.spec.max_retries:
            return False
        if kind is Verdict.BUSY:
            now = self._clock()
            if not any(r not in tried and r.available(now) for r in self.replicas):
                return False  # every replica is busy: the caller gets the 429 and its Retry-After
        self.retries[exc.type] += 1
        log.info("%s: retrying after %s from %s (%s)", self.spec.name, exc.type, replica.url, exc.message)
        return True

    def _mark(self, replica: Replica, kind: Verdict) -> None:
        if kind in (Verdict.FATAL, Verdict.BUSY):
            return
        replica.failed += 1
        replica.failures += 1
        if kind is Verdict.REFUSED:
            self._cool_down(replica, self._clock(), "connection refused")
        elif replica.cooling:  # on probation after its cooldown: one failure is enough
            self._cool_down(replica, self._clock(), "failed again after its cooldown")
        elif replica.failures >= self.spec.failures_to_cooldown:
            self._cool_down(replica, self._clock(), f"{replica.failures} failures in a row")

    def _healthy(self, replica: Replica) -> None:
        replica.failures = 0
        if replica.cooling:
            replica.cooling, replica.down_until = False, 0.0
            log.info("%s: replica %s is back (answered a request)", self.spec.name, replica.url)

    def _cool_down(self, replica: Replica, now: float, why: str) -> None:
        if replica.available(now):  # a new cooldown (not a failed probe extending the current one)
            replica.cooldowns += 1
            log.warning("%s: replica %s cools down for %.1fs (%s)", self.spec.name, replica.url, self.spec.cooldown,
                        why)  # fmt: skip
        replica.cooling = True
        replica.down_until = now + self.spec.cooldown

    async def _backoff(self, attempt: int) -> None:
        base = self.spec.retry_backoff * 2 ** (attempt - 1)
        await asyncio.sleep(base * (0.5 + self._rng.random()))  # jitter: retries of many requests spread out

    # --- active health --------------------------------------------------------------------------------------

    def _ensure_prober(self) -> None:
        """Remote models are never start()ed by the scheduler: the prober starts with the first request."""
        if self._prober is None or self._prober.done():
            loop = asyncio.get_running_loop()
            self._prober = loop.create_task(self._probe_forever(), name=f"pool-{self.spec.name}")

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.spec.health_interval)
            try:
                await self.health()
            except Exception:  # the prober must outlive any one bad probe
                log.exception("%s: health probe failed", self.spec.name)

    async def _stop_prober(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
