"""Cache-aware routing for pools: send a request to the replica that recently served its prompt's prefix.

Engines keep the KV cache of the prompts they served (llama.cpp's slots and prompt cache, vLLM's prefix
cache): a follow-up turn, or a request sharing a long system prompt, is much faster on the replica that has the
prefix already. A request's prefixes are hashed cumulatively per message (role, text, image bytes), longest
last; `PrefixAffinity` remembers which replica served each, for `ttl` seconds, at most `capacity` entries.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from vlmserve.domain.types import ChatRequest, CompletionRequest, ImagePart, TextPart

R = TypeVar("R")
PROMPT_BLOCK = 256  # characters: a raw prompt's prefixes are taken at these boundaries


def prefix_keys(request: ChatRequest | CompletionRequest) -> list[bytes]:
    """Digests of the request's prompt prefixes, shortest first: one per message (each covering all before it),
    or per PROMPT_BLOCK characters of a raw prompt."""
    digest = hashlib.blake2b(request.model.encode(), digest_size=16)
    keys: list[bytes] = []
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        for end in range(PROMPT_BLOCK, len(prompt) + 1, PROMPT_BLOCK):
            digest.update(prompt[end - PROMPT_BLOCK : end].encode("utf-8", "surrogatepass"))
            keys.append(digest.copy().digest())
        return keys
    for message in request.messages:
        digest.update(b"\x00" + message.role.encode())
        for part in message.parts:
            if isinstance(part, TextPart):
                digest.update(b"\x01" + part.text.encode("utf-8", "surrogatepass"))
            elif isinstance(part, ImagePart):
                digest.update(b"\x02" + hashlib.blake2b(part.data, digest_size=16).digest())
        keys.append(digest.copy().digest())
    return keys


class PrefixAffinity(Generic[R]):
    """prefix digest -> the replicas that served it recently (and when), bounded in size and age. A prefix
    several replicas hold (a shared system prompt, once load spread it) lets the least busy of them take it."""

    def __init__(self, clock: Callable[[], float], *, capacity: int = 20_000, ttl: float = 600.0) -> None:
        self._clock = clock
        self._capacity = capacity
        self._ttl = ttl
        self._served: OrderedDict[bytes, dict[R, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._served)

    def owners(self, keys: list[bytes], allowed: Callable[[R], bool]) -> list[R]:
        """The allowed replicas that recently served the longest of `keys` any of them served."""
        now = self._clock()
        for key in reversed(keys):
            served = self._served.get(key)
            if served:
                found = [r for r, at in served.items() if now - at <= self._ttl and allowed(r)]
                if found:
                    return found
        return []

    def record(self, keys: list[bytes], replica: R) -> None:
        now = self._clock()
        for key in keys:
            self._served.setdefault(key, {})[replica] = now
            self._served.move_to_end(key)
        while len(self._served) > self._capacity:
            self._served.popitem(last=False)
