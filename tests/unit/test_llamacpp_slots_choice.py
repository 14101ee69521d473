"""A conversation goes back to the llama.cpp slot that holds its earlier turns (backends/slots.py)."""

from __future__ import annotations

from vlmserve.backends.affinity import prefix_keys
from vlmserve.backends.slots import SlotChooser
from vlmserve.domain.types import ChatRequest, Message, TextPart


class HandClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _turns(system: str, *texts: str) -> list[bytes]:
    messages = [Message(role="system", parts=[TextPart(system)])]
    for i, text in enumerate(texts):
        messages.append(Message(role="user" if i % 2 == 0 else "assistant", parts=[TextPart(text)]))
    return prefix_keys(ChatRequest(model="m", messages=messages))


def _serve(chooser: SlotChooser, keys: list[bytes]) -> int | None:
    slot = chooser.take(keys)
    if slot is not None:
        chooser.release(slot, keys)
    return slot


def test_each_conversation_keeps_its_slot_across_turns() -> None:
    chooser = SlotChooser(3, HandClock())
    first = {c: _serve(chooser, _turns("sys", f"q{c}")) for c in "abc"}
    assert sorted(first.values()) == [0, 1, 2]  # three new conversations: three slots, not one overwritten
    for c in "cab":  # turn 2 of each, in another order: back to its own slot
        assert _serve(chooser, _turns("sys", f"q{c}", f"answer {c}", f"q{c}2")) == first[c]


def test_a_new_conversation_takes_the_least_recently_used_slot() -> None:
    chooser = SlotChooser(2, HandClock())
    a = _serve(chooser, _turns("sys", "qa"))
    b = _serve(chooser, _turns("sys", "qb"))
    assert _serve(chooser, _turns("sys", "qa", "answer", "qa2")) == a  # a used last now: b's slot is older
    assert _serve(chooser, _turns("sys", "qc")) == b  # shares only the system prompt: the LRU of those


def test_busy_slots_are_skipped_and_none_idle_lets_the_engine_choose() -> None:
    chooser = SlotChooser(2, HandClock())
    keys = _turns("sys", "qa")
    a = _serve(chooser, keys)
    held = chooser.take(_turns("sys", "qb"))  # in flight
    assert held is not None and held != a
    again = chooser.take(keys)
    assert again == a
    assert chooser.take(_turns("sys", "qc")) is None  # both busy: llama.cpp picks (the request waits for any)
    chooser.release(again, keys)
    chooser.release(held, _turns("sys", "qb"))
    assert chooser.take(_turns("sys", "qb", "answer", "qb2")) == held
