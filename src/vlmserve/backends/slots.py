"""Which llama.cpp slot a request goes to, so a conversation keeps finding its earlier turns in the KV cache.

llama.cpp, left to choose, gives a request the idle slot whose cached prompt is most like it: every
conversation that shares a system prompt lands in the same slot and overwrites the one before it, so only the
system prompt is ever reused (bench/pool_affinity.py measured 318 cached tokens of a 444-token turn). Here each
slot remembers the prompt prefixes (affinity.prefix_keys) of the last request it served. A request goes to the
idle slot whose last prompt it extends (the next turn of that conversation), else to an unused slot, else to the
least recently used idle slot sharing its longest prefix (a system prompt), and is sent with `id_slot`. With no
slot idle, llama.cpp chooses (the request waits for any slot, not for one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Slot:
    busy: int = 0
    last_used: float = 0.0
    holds: frozenset[bytes] = field(default_factory=frozenset)  # prefix keys of the last prompt it served


class SlotChooser:
    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = [_Slot() for _ in range(slots)]
        self._clock = clock

    def take(self, keys: list[bytes]) -> int | None:
        """The slot for a prompt with these prefix keys (marked busy), or None to let llama.cpp choose."""
        idle = [i for i, slot in enumerate(self._slots) if slot.busy == 0]
        if not idle:
            return None
        chosen = self._choose(idle, keys)
        self._slots[chosen].busy += 1
        return chosen

    def _choose(self, idle: list[int], keys: list[bytes]) -> int:
        wanted = set(keys)
        # the same conversation, one turn on: its slot's prompt is a prefix of this one, nothing is lost
        extended = [i for i in idle if self._slots[i].holds and self._slots[i].holds <= wanted]
        if extended:
            return max(extended, key=lambda i: len(self._slots[i].holds))
        empty = [i for i in idle if not self._slots[i].holds]
        if empty:  # a new conversation: an unused slot, rather than overwrite another conversation's turns
            return empty[0]
        for key in reversed(keys):  # all slots hold something: the oldest of those sharing the longest prefix
            holding = [i for i in idle if key in self._slots[i].holds]
            if holding:
                return min(holding, key=lambda i: self._slots[i].last_used)
        return min(idle, key=lambda i: self._slots[i].last_used)

    def release(self, slot: int, keys: list[bytes]) -> None:
        """The request on `slot` ended: the slot now holds its prompt."""
        entry = self._slots[slot]
        entry.busy -= 1
        entry.last_used = self._clock()
        entry.holds = frozenset(keys)
