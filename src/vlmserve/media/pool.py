"""DecodePool: image decodes run in a few worker threads and reserve their decoded-memory cost from one budget.

Eight 0.5 GB decodes at once took a server from 0.7 to 3.9 GB. Each decode reserves `decoded_cost` bytes before
it starts; when the budget is spoken for it waits, first come first served (a big image is not starved by small
ones), at most `wait` seconds, then 503 with Retry-After. An image that alone needs more than the budget is a 413.
A reservation is given back when the decode's thread is done, not when its request is cancelled: a cancelled
request cannot start another decode while the first is still allocating.

Freed pixel buffers are given back to the system (vlmserve/malloc.py): after eight concurrent 25 MP decodes the
server kept 0.6-1.1 GB resident without `malloc_trim`, nothing with it (measured; run after any decode costing
more than TRIM_BYTES).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from vlmserve import malloc
from vlmserve.errors import PayloadTooLarge, Unavailable

T = TypeVar("T")
TRIM_BYTES = 16 * 1024 * 1024  # decodes bigger than one Pillow block leave arena memory worth giving back


class DecodePool:
    """A weighted semaphore over decoded bytes plus the threads that decode; used from one event loop."""

    def __init__(self, budget_bytes: int, *, wait: float = 30.0, threads: int | None = None) -> None:
        self.budget = budget_bytes
        self.wait = wait
        self.used = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        workers = threads or min(8, os.cpu_count() or 1)
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="vlmserve-decode")

    async def run(self, cost: int, work: Callable[[], T], *, field: str = "image") -> T:
        """`work()` in a decode thread once `cost` bytes of the budget are reserved for it."""
        if cost > self.budget:
            raise PayloadTooLarge(
                f"{field}: decoding this image takes about {_mb(cost)} MB, more than the decode memory budget "
                f"of {_mb(self.budget)} MB (media_decode_memory_mb)",
                param=field,
            )
        await self._acquire(cost, field)
        loop = asyncio.get_running_loop()
        try:
            job = self._executor.submit(self._work, cost, work)
        except BaseException:
            self._release(cost)
            raise
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release, cost))
        return await asyncio.wrap_future(job)

    def _work(self, cost: int, work: Callable[[], T]) -> T:
        try:
            return work()
        finally:
            if cost > TRIM_BYTES:
                malloc.trim()

    async def thread(self, work: Callable[[], T]) -> T:
        """`work()` in a decode thread without a reservation (header parsing: small and bounded)."""
        return await asyncio.wrap_future(self._executor.submit(work))

    async def _acquire(self, cost: int, field: str) -> None:
        if not self._waiters and self.used + cost <= self.budget:
            self._take(cost)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (cost, granted)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.wait):
                await asyncio.shield(granted)
        except BaseException as exc:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
            if granted.done() and not granted.cancelled():
                self._release(cost)  # granted just as the wait ended: hand it on
            else:
                granted.cancel()
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"{field}: the server is decoding other images (decode memory budget of {_mb(self.budget)} MB "
                    f"in use for {self.wait:g} s); retry shortly",
                    retry_after=max(1.0, self.wait / 10),
                    code="decode_busy",
                ) from None
            raise

    def _take(self, cost: int) -> None:
        self.used += cost
        self.peak = max(self.peak, self.used)

    def _release(self, cost: int) -> None:
        self.used -= cost
        while self._waiters and self.used + self._waiters[0][0] <= self.budget:
            head_cost, granted = self._waiters.popleft()
            if granted.done():
                continue
            self._take(head_cost)
            granted.set_result(None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"
