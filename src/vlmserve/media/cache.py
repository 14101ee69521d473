"""A content-hash cache of prepared images, bounded by bytes: the same image sent again (or many times in one
batch) is decoded and resized once. Concurrent requests for the same key share one preparation."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from vlmserve.domain.types import ImagePart

_HASH_IN_THREAD = 1024 * 1024  # hashing bigger inputs would hold the event loop for milliseconds


async def content_key(data: bytes, *budget: object) -> str:
    """sha256 of the bytes plus the budget they are prepared for (the same photo for two models differs)."""
    if len(data) > _HASH_IN_THREAD:
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    else:
        digest = hashlib.sha256(data).hexdigest()
    return digest + ":" + ":".join(str(b) for b in budget)


class PreparedImageCache:
    """LRU over prepared ImageParts; used from the event loop only (no locks needed)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, ImagePart] = OrderedDict()
        self._pending: dict[str, asyncio.Future[ImagePart]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> ImagePart | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: ImagePart) -> None:
        size = len(item.data)
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= len(old.data)
        self._items[key] = item
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.bytes -= len(evicted.data)

    async def get_or_prepare(self, key: str, prepare: Callable[[], Awaitable[ImagePart]]) -> ImagePart:
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[ImagePart] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            item = await prepare()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: waiters re-raise it, nothing logs "never retrieved"
            raise
        except BaseException:  # cancelled: waiters are cancelled with it
            future.cancel()
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result(item)
        if self.max_bytes > 0:
            self.put(key, item)
        return item
