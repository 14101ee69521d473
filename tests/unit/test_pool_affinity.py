"""Cache-aware routing in pools (backends/affinity.py): a follow-up turn goes back to the replica that served
its prefix; an overloaded owner or a cooling-down one loses it to the least busy; prefixes are per message,
images included; the memory of who served what is bounded in size and age."""

from __future__ import annotations

import asyncio

from test_pool import Clock, Member, pool_of

from vlmserve.backends.affinity import PrefixAffinity, prefix_keys
from vlmserve.backends.pool import AFFINITY_SLACK, PoolBackend
from vlmserve.domain.types import ChatRequest, CompletionRequest, ImagePart, Message, TextPart

SYSTEM = Message(role="system", parts=[TextPart("You are a careful assistant. " * 50)])


def _turns(conversation: int, count: int) -> ChatRequest:
    messages = [SYSTEM]
    for turn in range(count):
        messages.append(Message(role="user", parts=[TextPart(f"conversation {conversation}, question {turn}")]))
        if turn < count - 1:
            messages.append(Message(role="assistant", parts=[TextPart(f"answer {turn}")]))
    return ChatRequest(model="pooled", messages=messages)


async def _served_by(pool: PoolBackend, request: ChatRequest) -> str:
    texts = [chunk.text async for chunk in pool.chat(request)]
    return texts[0]


async def _first_turns_under_load(pool: PoolBackend, members: list[Member], count: int) -> dict[int, str]:
    """First turns sent while earlier ones still run: they spread over the replicas (the shared system
    prompt's owner gets busy), as concurrent users do."""
    release = asyncio.Event()
    for member in members:
        member.hold = release
    streams = [pool.chat(_turns(c, 1)) for c in range(count)]
    first = {c: (await anext(stream)).text for c, stream in enumerate(streams)}
    release.set()
    for stream in streams:
        async for _ in stream:
            pass
    for member in members:
        member.hold = None
    return first


async def test_follow_up_turns_return_to_the_replica_of_their_conversation() -> None:
    pool, members = pool_of(2, cache_aware=True)
    first = await _first_turns_under_load(pool, members, 6)
    assert set(first.values()) == {"r0", "r1"}
    for turn in (2, 3, 4):
        for conversation, replica in first.items():
            assert await _served_by(pool, _turns(conversation, turn)) == replica


async def test_new_conversations_sharing_only_the_system_prompt_spread_over_the_replicas() -> None:
    pool, _ = pool_of(2, cache_aware=True)
    first = [await _served_by(pool, _turns(c, 1)) for c in range(4)]  # one at a time: nobody is ever busier
    assert sorted(first) == ["r0", "r0", "r1", "r1"]  # not all on the replica that first served the prompt
    for conversation, replica in enumerate(first):  # and each one's next turns stay where it began
        assert await _served_by(pool, _turns(conversation, 2)) == replica


async def test_a_repeated_one_message_prompt_goes_back_to_its_replica() -> None:
    pool, _ = pool_of(2, cache_aware=True)
    alone = ChatRequest(model="pooled", messages=[Message(role="user", parts=[TextPart("the same long question")])])
    served = [await _served_by(pool, alone) for _ in range(4)]
    assert served == [served[0]] * 4  # its one message is the whole prompt: the replica holding it takes it


async def test_least_busy_routing_scatters_the_same_turns() -> None:
    pool, members = pool_of(2, cache_aware=False)
    first = await _first_turns_under_load(pool, members, 6)
    later = [await _served_by(pool, _turns(c, 2)) == first[c] for c in (0, 2, 4)]
    assert not all(later)  # what affinity fixes


async def test_an_overloaded_owner_loses_the_request_to_the_least_busy() -> None:
    pool, members = pool_of(2, cache_aware=True)
    owner = await _served_by(pool, _turns(0, 1))
    held = next(m for m in members if m.name == owner)
    held.hold = asyncio.Event()
    streams = [pool.chat(_turns(0, 2)) for _ in range(AFFINITY_SLACK)]
    for stream in streams:  # the owner is now AFFINITY_SLACK requests busier than the other
        assert (await anext(stream)).text == owner
    assert await _served_by(pool, _turns(0, 3)) != owner
    held.hold.set()
    for stream in streams:
        async for _ in stream:
            pass


async def test_a_cooling_down_owner_is_not_used() -> None:
    clock = Clock()
    pool, members = pool_of(2, clock, cache_aware=True, cooldown=60.0)
    owner = await _served_by(pool, _turns(0, 1))
    pool._cool_down(next(r for r in pool.replicas if r.backend is next(m for m in members if m.name == owner)),
                    clock(), "test")  # fmt: skip
    assert await _served_by(pool, _turns(0, 2)) != owner


def test_prefix_keys_are_cumulative_per_message_and_count_images() -> None:
    short, longer = prefix_keys(_turns(0, 1)), prefix_keys(_turns(0, 2))
    assert longer[: len(short)] == short and len(longer) == len(short) + 2
    assert prefix_keys(_turns(1, 1))[0] == short[0] and prefix_keys(_turns(1, 1))[1] != short[1]
    with_image = ChatRequest(
        model="pooled", messages=[Message(role="user", parts=[ImagePart(b"a", "image/png", 1, 1)])]
    )
    other_image = ChatRequest(
        model="pooled", messages=[Message(role="user", parts=[ImagePart(b"b", "image/png", 1, 1)])]
    )
    assert prefix_keys(with_image) != prefix_keys(other_image)
    prompt = CompletionRequest(model="pooled", prompt="x" * 1000)
    assert len(prefix_keys(prompt)) == 1000 // 256


def test_the_memory_is_bounded_in_size_and_age() -> None:
    clock = Clock()
    affinity: PrefixAffinity[str] = PrefixAffinity(clock, capacity=3, ttl=10.0)
    affinity.record([b"a", b"b"], "r0")
    affinity.record([b"c", b"d"], "r1")
    assert len(affinity) == 3 and affinity.owners([b"a"], lambda _: True) == []  # the oldest went
    assert affinity.owners([b"c", b"x"], lambda _: True) == ["r1"]
    affinity.record([b"c"], "r0")
    assert sorted(affinity.owners([b"c"], lambda _: True)) == ["r0", "r1"]
    clock.now += 11
    assert affinity.owners([b"c"], lambda _: True) == []
