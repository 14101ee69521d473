"""Per-key rate limits: requests per minute, tokens per minute (counted after each answer), requests in flight.

Fixed one-minute windows aligned to the clock, so every replica agrees where a window starts. `LocalLimiter`
keeps counters in this process; `RedisLimiter` keeps them in Redis (one Lua script per request: check and
count atomically), so limits hold across replicas. A limit of 0 means unlimited. Both read the wall clock through
`clock` (time.time by default): tests give them one they move by hand.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vlmserve.errors import Unavailable

log = logging.getLogger("vlmserve.ratelimit")
WINDOW = 60.0
Clock = Callable[[], float]  # seconds since the epoch: windows are aligned to it, the same on every replica
STALE_IN_FLIGHT = 600  # seconds after which a request still counted in flight (its replica died) is dropped


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # "" when allowed, else "requests" / "tokens" / "concurrency"
    requests: int  # requests counted in this window (including this one when allowed)
    reset: float  # seconds until the window ends

    def headers(self, limits: Limits) -> list[tuple[bytes, bytes]]:
        if not limits.rpm:
            return []
        return [
            (b"x-ratelimit-limit-requests", str(limits.rpm).encode()),
            (b"x-ratelimit-remaining-requests", str(max(0, limits.rpm - self.requests)).encode()),
            (b"x-ratelimit-reset-requests", f"{math.ceil(self.reset)}s".encode()),
        ]

    @property
    def retry_after(self) -> float:
        return 1.0 if self.reason == "concurrency" else max(1.0, self.reset)


def _window(now: float) -> tuple[int, float]:
    index = int(now // WINDOW)
    return index, (index + 1) * WINDOW - now


class Limiter(Protocol):
    async def acquire(self, key_id: str, limits: Limits, ticket: str) -> Decision: ...

    async def release(self, key_id: str, limits: Limits, tokens: int, ticket: str) -> None: ...

    async def close(self) -> None: ...


class LocalLimiter:
    """Counters in this process: plain dict updates, no awaits, so no locks are needed."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, int, int]] = {}  # key -> (window, requests, tokens)
        self._in_flight: dict[str, int] = {}

    async def acquire(self, key_id: str, limits: Limits, ticket: str) -> Decision:
        index, reset = _window(self._clock())
        window, requests, tokens = self._windows.get(key_id, (index, 0, 0))
        if window != index:
            requests, tokens = 0, 0
        reason = ""
        if limits.rpm and requests >= limits.rpm:
            reason = "requests"
        elif limits.tpm and tokens >= limits.tpm:
            reason = "tokens"
        elif limits.concurrency and self._in_flight.get(key_id, 0) >= limits.concurrency:
            reason = "concurrency"
        if reason:
            return Decision(False, reason, requests, reset)
        self._windows[key_id] = (index, requests + 1, tokens)
        if limits.concurrency:
            self._in_flight[key_id] = self._in_flight.get(key_id, 0) + 1
        return Decision(True, "", requests + 1, reset)

    async def release(self, key_id: str, limits: Limits, tokens: int, ticket: str) -> None:
        if limits.concurrency:
            self._in_flight[key_id] = max(0, self._in_flight.get(key_id, 0) - 1)
        if tokens and limits.tpm:
            index, _ = _window(self._clock())
            window, requests, counted = self._windows.get(key_id, (index, 0, 0))
            self._windows[key_id] = (index, requests, counted + tokens) if window == index else (index, 0, tokens)

    async def close(self) -> None:
        return None


_ACQUIRE = """
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local requests = tonumber(redis.call('GET', KEYS[1]) or '0')
if rpm > 0 and requests >= rpm then return {1, requests} end
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return {2, requests} end
if conc > 0 then
  local now = tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
  if redis.call('ZCARD', KEYS[3]) >= conc then return {3, requests} end
  redis.call('ZADD', KEYS[3], now, ARGV[5])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
end
requests = redis.call('INCR', KEYS[1])
if requests == 1 then redis.call('EXPIRE', KEYS[1], 120) end
return {0, requests}
"""
_REASONS = {0: "", 1: "requests", 2: "tokens", 3: "concurrency"}


class RedisLimiter:
    """Counters in Redis, shared by every replica pointed at it. Keys: vlmserve:rl:{key}:{req|tok}:{window}
    (expire after two windows) and vlmserve:rl:{key}:conc (a sorted set of in-flight requests by start time:
    entries older than STALE_IN_FLIGHT seconds, left by a crashed replica, stop counting)."""

    def __init__(self, url: str, clock: Clock = time.time) -> None:
        from redis import RedisError
        from redis import asyncio as aioredis

        self._clock = clock
        self._errors = RedisError
        self._redis: Any = aioredis.Redis.from_url(url)
        self._script: Any = self._redis.register_script(_ACQUIRE)

    async def acquire(self, key_id: str, limits: Limits, ticket: str) -> Decision:
        now = self._clock()
        index, reset = _window(now)
        base = f"vlmserve:rl:{key_id}"
        keys = [f"{base}:req:{index}", f"{base}:tok:{index}", f"{base}:conc"]
        args = [limits.rpm, limits.tpm, limits.concurrency, now, ticket, STALE_IN_FLIGHT]
        try:
            code, requests = await self._script(keys=keys, args=args)
        except (self._errors, OSError) as exc:  # limits are never dropped silently: refuse until Redis is back
            raise Unavailable(f"rate limit store unreachable: {exc.__class__.__name__}", retry_after=1.0) from exc
        return Decision(code == 0, _REASONS[int(code)], int(requests), reset)

    async def release(self, key_id: str, limits: Limits, tokens: int, ticket: str) -> None:
        base = f"vlmserve:rl:{key_id}"
        async with self._redis.pipeline(transaction=False) as pipe:
            if limits.concurrency:
                pipe.zrem(f"{base}:conc", ticket)
            if tokens and limits.tpm:
                index, _ = _window(self._clock())
                pipe.incrby(f"{base}:tok:{index}", tokens)
                pipe.expire(f"{base}:tok:{index}", 120)
            try:
                await pipe.execute()
            except (self._errors, OSError) as exc:  # the in-flight entry goes stale by itself
                log.warning("rate limit release failed for %s: %s", key_id, exc)

    async def close(self) -> None:
        await self._redis.aclose()


def build_limiter(redis_url: str | None, clock: Clock = time.time) -> Limiter:
    return RedisLimiter(redis_url, clock) if redis_url else LocalLimiter(clock)
