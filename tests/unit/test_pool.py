"""PoolBackend (backends/pool.py): replica choice, passive cooldown, active recovery, retry rules; and the spec /
catalog rules for `replicas` and `fallbacks`. Members are small in-test fakes of the Backend protocol, except
where the error must come from a real socket (a refused connection, a real upstream)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fake_upstreams import FakeUpstream, expected_text
from server_process import free_port

from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.backends.pool import PoolBackend, Verdict, verdict
from vlmserve.backends.registry import build_backend
from vlmserve.config import Settings
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Message, Usage
from vlmserve.errors import BadRequest, EngineError, EngineTimeout, Overloaded, VlmServeError
from vlmserve.service.catalog import Catalog

Outcome = str | VlmServeError  # "ok", "mid-error" (one chunk, then an engine error), or an error raised at once


class Member:
    """A scripted Backend: each call takes the next outcome (default "ok"); `hold` keeps streams open."""

    def __init__(self, spec: ModelSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.outcomes: deque[Outcome] = deque()
        self.calls = 0
        self.up = True  # what health() answers
        self.probes = 0  # health() calls: the prober's
        self.hold: asyncio.Event | None = None
        self.closed = False

    @property
    def loaded(self) -> bool:
        return True

    @property
    def memory_bytes(self) -> int | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True

    async def health(self) -> bool:
        self.probes += 1
        return self.up

    def _next(self) -> Outcome:
        self.calls += 1
        return self.outcomes.popleft() if self.outcomes else "ok"

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        outcome = self._next()
        if isinstance(outcome, VlmServeError):
            raise outcome
        yield ChatChunk(text=self.name)
        if self.hold is not None:
            await self.hold.wait()
        if outcome == "mid-error":
            raise EngineError(f"{self.name} died mid-stream")
        yield ChatChunk(finish_reason="stop", usage=Usage())

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        return self.chat(ChatRequest(model=request.model, messages=[]))

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        outcome = self._next()
        if isinstance(outcome, VlmServeError):
            raise outcome
        return EmbedResult(vectors=[[1.0]], prompt_tokens=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_POOLS: list[PoolBackend] = []


@pytest.fixture(autouse=True)
async def _close_pools() -> AsyncIterator[None]:
    yield
    while _POOLS:  # stops each pool's health prober
        await _POOLS.pop().aclose()


def pool_of(
    count: int = 2, clock: Clock | None = None, *, cache_aware: bool = False, **knobs: Any
) -> tuple[PoolBackend, list[Member]]:
    """A pool of scripted members; least-busy routing unless `cache_aware` (these tests repeat one request,
    which cache-aware routing sends back to the same replica: tests/unit/test_pool_affinity.py)."""
    urls = [f"http://replica{i}:8000" for i in range(count)]
    spec = ModelSpec(name="pooled", engine="openai", replicas=urls, retry_backoff=0.0, **knobs)
    members = [Member(spec, f"r{i}") for i in range(count)]
    pool = PoolBackend(spec, list(zip(urls, members, strict=True)), clock=clock or Clock(), cache_aware=cache_aware)
    _POOLS.append(pool)
    return pool, members


REQUEST = ChatRequest(model="pooled", messages=[Message(role="user", parts=[])])


async def answer(pool: PoolBackend) -> str:
    texts = [chunk.text async for chunk in pool.chat(REQUEST)]
    return texts[0]


async def _until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll with a deadline: the prober runs on its own timer."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- choosing a replica -----------------------------------------------------------------------------------------


async def test_ties_go_round_robin() -> None:
    pool, _members = pool_of(3)
    answers = [await answer(pool) for _ in range(6)]
    assert sorted(answers) == ["r0", "r0", "r1", "r1", "r2", "r2"]
    assert all(answers[i] != answers[i + 1] for i in range(5))
    await pool.aclose()


async def test_least_busy_replica_is_chosen() -> None:
    pool, members = pool_of(2)
    members[0].hold = asyncio.Event()
    members[1].hold = asyncio.Event()
    held = [pool.chat(REQUEST) for _ in range(3)]
    first = [(await anext(stream)).text for stream in held]  # three streams held open after their first chunk
    assert first[0] != first[1]  # the second goes to the replica that had nothing in flight
    busy_index = 0 if pool.replicas[0].in_flight == 2 else 1
    quiet = members[1 - busy_index]
    assert pool.replicas[1 - busy_index].in_flight == 1
    quiet.hold = None
    assert [await answer(pool) for _ in range(4)] == [quiet.name] * 4  # never the busier one, whatever the turn
    for stream in held:
        await stream.aclose()
    assert [r.in_flight for r in pool.replicas] == [0, 0]  # closing a stream gives its slot back
    await pool.aclose()


async def test_cooled_down_replica_is_skipped_until_its_cooldown_ends() -> None:
    clock = Clock()
    pool, (bad, _good) = pool_of(2, clock, failures_to_cooldown=2, cooldown=30.0)
    bad.outcomes.extend([EngineError("boom"), EngineError("boom")])
    assert {await answer(pool) for _ in range(4)} == {"r1"}  # two failures (retried on r1) cool r0 down
    assert bad.calls == 2 and pool.replicas[0].cooling and pool.replicas[0].cooldowns == 1
    assert [await answer(pool) for _ in range(5)] == ["r1"] * 5
    assert bad.calls == 2
    clock.now += 31  # cooldown over: on probation, back in the rotation
    assert {await answer(pool) for _ in range(4)} == {"r0", "r1"}
    assert not pool.replicas[0].cooling  # it answered: healthy again


async def test_failure_on_probation_cools_down_again_at_once() -> None:
    clock = Clock()
    pool, (bad, _good) = pool_of(2, clock, failures_to_cooldown=3, cooldown=30.0)
    bad.outcomes.extend([EngineError("boom")] * 4)
    for _ in range(6):
        assert await answer(pool) == "r1"
    assert bad.calls == 3 and pool.replicas[0].cooldowns == 1
    clock.now += 31
    for _ in range(4):
        assert await answer(pool) == "r1"
    assert bad.calls == 4 and pool.replicas[0].cooldowns == 2  # one failure after the cooldown was enough


async def test_active_probe_brings_a_replica_back_before_its_cooldown_ends() -> None:
    pool, (bad, _good) = pool_of(2, health_interval=0.05, cooldown=3600.0, failures_to_cooldown=1)
    bad.outcomes.append(EngineError("boom"))
    bad.up = False
    assert await answer(pool) == "r1"  # the first request also starts the prober
    assert pool.replicas[0].cooling
    probed = bad.probes
    await _until(lambda: bad.probes >= probed + 3)
    assert pool.replicas[0].cooling  # probes keep failing: it stays out
    assert not pool.is_up(pool.replicas[0])
    bad.up = True
    await _until(lambda: pool.is_up(pool.replicas[0]))
    assert pool.replicas[0].cooling  # back, on probation
    assert {await answer(pool) for _ in range(4)} == {"r0", "r1"}
    assert not pool.replicas[0].cooling  # it answered: healthy
    await pool.aclose()
    assert bad.closed and pool._prober is None


async def test_a_failed_probe_cools_a_healthy_replica_down() -> None:
    pool, (dead, _alive) = pool_of(2)
    dead.up = False
    assert await pool.health() is True
    assert pool.replicas[0].cooling and not pool.replicas[1].cooling
    assert [await answer(pool) for _ in range(3)] == ["r1"] * 3 and dead.calls == 0


async def test_every_replica_cooling_still_tries_them() -> None:
    pool, members = pool_of(2)
    for member in members:
        member.up = False
    assert await pool.health() is False
    assert await answer(pool) in ("r0", "r1")  # a false alarm must not become an outage


# --- retry rules ------------------------------------------------------------------------------------------------


async def test_engine_errors_and_timeouts_are_retried_on_another_replica() -> None:
    pool, (first, second) = pool_of(2)
    first.outcomes.append(EngineError("500"))
    second.outcomes.append(EngineTimeout("slow"))
    assert await answer(pool) == "r0"  # r0 failed, r1 timed out, r0 answered
    assert (first.calls, second.calls) == (2, 1)
    assert pool.retries == {"engine_error": 1, "engine_timeout": 1}


async def test_no_retry_after_the_first_chunk() -> None:
    pool, (first, second) = pool_of(2)
    first.outcomes.append("mid-error")
    second.outcomes.append("mid-error")
    received: list[str] = []
    with pytest.raises(EngineError, match="mid-stream"):
        async for chunk in pool.chat(REQUEST):
            received.append(chunk.text)
    assert len(received) == 1 and first.calls + second.calls == 1
    assert not pool.retries


async def test_no_retry_on_a_client_error() -> None:
    pool, (first, second) = pool_of(2)
    for member in (first, second):
        member.outcomes.append(BadRequest("bad request", code="engine_rejected"))
    with pytest.raises(BadRequest):
        await answer(pool)
    assert first.calls + second.calls == 1
    assert all(r.failures == 0 and not r.cooling for r in pool.replicas)  # the request's fault, not the replica's


async def test_retries_stop_at_max_retries() -> None:
    pool, members = pool_of(2, max_retries=3)
    for member in members:
        member.outcomes.extend([EngineError("down")] * 5)
    with pytest.raises(EngineError):
        await answer(pool)
    assert sum(m.calls for m in members) == 4
    assert pool.retries == {"engine_error": 3}


async def test_429_moves_to_a_free_replica_else_propagates_with_retry_after() -> None:
    pool, (first, second) = pool_of(2)
    first.outcomes.append(Overloaded("full", retry_after=7))
    assert await answer(pool) == "r1"
    assert not pool.replicas[0].cooling and pool.replicas[0].failures == 0
    first.outcomes.append(Overloaded("full", retry_after=7))
    second.outcomes.append(Overloaded("full", retry_after=7))
    with pytest.raises(Overloaded) as refused:
        await answer(pool)
    assert refused.value.retry_after == 7 and first.calls + second.calls == 4


async def test_embed_is_retried_too() -> None:
    pool, (first, second) = pool_of(2)
    first.outcomes.append(EngineError("500"))
    second.outcomes.append(EngineError("500"))
    result = await pool.embed(EmbedRequest(model="pooled", inputs=["x"]))
    assert result.vectors == [[1.0]] and first.calls + second.calls == 3


# --- real sockets -----------------------------------------------------------------------------------------------


async def test_refused_connection_cools_down_at_once_and_the_live_replica_answers() -> None:
    with FakeUpstream() as live:
        dead_url = f"http://127.0.0.1:{free_port()}"
        spec = ModelSpec(name="pooled", engine="openai", replicas=[dead_url, live.url], connect_timeout=1.0)
        pool = build_backend(spec, start_timeout=1.0, threads=None)
        assert isinstance(pool, PoolBackend) and spec.url == dead_url
        try:
            texts = ["".join([c.text async for c in pool.chat(REQUEST)]) for _ in range(4)]
            assert texts == [expected_text(5)] * 4
            dead = pool.replicas[0]
            assert dead.cooling and dead.cooldowns == 1 and dead.failed == 1  # tried once, then left out
            assert pool.replicas[1].answered == 4 and len(live.requests) == 4
        finally:
            await pool.aclose()


async def test_verdicts_of_real_transport_errors() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    backend = OpenAICompatibleBackend(ModelSpec(name="m", engine="openai", url=closed), closed)
    with pytest.raises(EngineError) as refused:
        await backend.embed(EmbedRequest(model="m", inputs=["x"]))
    await backend.aclose()
    assert verdict(refused.value) is Verdict.REFUSED
    assert verdict(EngineError("HTTP 500")) is Verdict.FAILED
    assert verdict(BadRequest("no")) is Verdict.FATAL


# --- declaring pools and fallbacks ------------------------------------------------------------------------------


def test_spec_rules_for_replicas_and_fallbacks() -> None:
    spec = ModelSpec(name="m", engine="ollama", replicas=["http://a:11434", "http://b:11434", "http://a:11434"])
    assert spec.url == "http://a:11434" and spec.urls == ["http://a:11434", "http://b:11434"]
    assert spec.max_retries == 4 and spec.cooldown == 10.0
    single = ModelSpec(name="s", engine="ollama", url="http://a:11434")
    assert not isinstance(build_backend(single, start_timeout=1, threads=None), PoolBackend)
    retried = ModelSpec(name="s", engine="ollama", url="http://a:11434", max_retries=2)
    assert isinstance(build_backend(retried, start_timeout=1, threads=None), PoolBackend)
    with pytest.raises(ValueError, match="needs `url` or `replicas`"):
        ModelSpec(name="m", engine="openai")
    with pytest.raises(ValueError, match="remote engine"):
        ModelSpec(name="m", engine="llamacpp", path="/x.gguf", replicas=["http://a"])
    with pytest.raises(ValueError, match="other models"):
        ModelSpec(name="m", engine="ollama", url="http://a", fallbacks=["m"])


def test_catalog_checks_fallbacks() -> None:
    settings = Settings(embedded_models=False)
    a = ModelSpec(name="a", engine="ollama", url="http://a", fallbacks=["b"], aliases=["alpha"])
    b = ModelSpec(name="b", engine="ollama", url="http://b", fallbacks=["a"])  # mutual backup: one level, no loop
    Catalog([a, b], settings)
    with pytest.raises(ValueError, match="not another catalog model"):
        Catalog([ModelSpec(name="a", engine="ollama", url="http://a", fallbacks=["nope"])], settings)
    with pytest.raises(ValueError, match="not another catalog model"):
        Catalog([ModelSpec(name="a", engine="ollama", url="http://a", aliases=["x"], fallbacks=["x"])], settings)
