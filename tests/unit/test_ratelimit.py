"""LocalLimiter on a hand-moved clock: clock-aligned one-minute windows, counts, refusals, reset times."""

from __future__ import annotations

from vlmserve.security.ratelimit import Decision, Limits, LocalLimiter

START = 1_000_000 * 60.0  # the first second of a window


class HandClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_requests_count_within_a_window_and_reset_at_its_edge() -> None:
    clock = HandClock(START + 59.0)
    limiter, limits = LocalLimiter(clock), Limits(rpm=2)
    assert await limiter.acquire("k", limits, "t1") == Decision(True, "", 1, 1.0)
    clock.now = START + 59.999
    second = await limiter.acquire("k", limits, "t2")
    assert (second.allowed, second.requests) == (True, 2)
    refused = await limiter.acquire("k", limits, "t3")
    assert (refused.allowed, refused.reason, refused.requests) == (False, "requests", 2)
    assert refused.retry_after == 1.0  # never less than a second
    clock.now = START + 60.0  # the next window starts at the minute
    assert await limiter.acquire("k", limits, "t4") == Decision(True, "", 1, 60.0)
    assert await limiter.acquire("other", limits, "t5") == Decision(True, "", 1, 60.0)  # keys count apart


async def test_tokens_are_counted_at_release_in_the_window_they_end_in() -> None:
    clock = HandClock(START + 10.0)
    limiter, limits = LocalLimiter(clock), Limits(tpm=100)
    assert (await limiter.acquire("k", limits, "t1")).allowed
    await limiter.release("k", limits, 100, "t1")
    refused = await limiter.acquire("k", limits, "t2")
    assert (refused.allowed, refused.reason, refused.retry_after) == (False, "tokens", 50.0)
    clock.now = START + 60.0 + 5.0
    await limiter.release("k", limits, 40, "late")  # an answer that ended in the next window counts there
    assert (await limiter.acquire("k", limits, "t3")).allowed
    await limiter.release("k", limits, 60, "t3")
    assert (await limiter.acquire("k", limits, "t4")).reason == "tokens"


async def test_concurrency_is_held_until_release() -> None:
    limiter, limits = LocalLimiter(HandClock(START)), Limits(concurrency=1)
    assert (await limiter.acquire("k", limits, "t1")).allowed
    refused = await limiter.acquire("k", limits, "t2")
    assert (refused.reason, refused.retry_after) == ("concurrency", 1.0)
    await limiter.release("k", limits, 0, "t1")
    assert (await limiter.acquire("k", limits, "t3")).allowed


def test_headers_name_the_limit_the_remainder_and_the_reset() -> None:
    decision = Decision(True, "", 3, 12.2)
    assert decision.headers(Limits(rpm=5)) == [
        (b"x-ratelimit-limit-requests", b"5"),
        (b"x-ratelimit-remaining-requests", b"2"),
        (b"x-ratelimit-reset-requests", b"13s"),
    ]
    assert decision.headers(Limits(tpm=5)) == []  # no request limit: no request headers
