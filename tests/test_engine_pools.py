"""Engine pools and fallbacks through a running vlmserve, against real fake upstreams (threads or processes).

- Two flaky upstream processes (20% of inference requests reset, 500 or stall past read_timeout) behind one
  pooled model: ≥ 99.9% of 1000 mixed requests (OpenAI/Ollama surfaces, stream or not, 16 at once) succeed, and
  both replicas answer.
- A replica whose port is closed is cooled down (seen in /metrics) while the other serves everything; started
  again, the active health probe brings it back and it serves again.
- `fallbacks`: a model on a dead URL or an always-500 upstream is answered by its fallback on both surfaces,
  streaming too, and the answer names the fallback; a 400 is not handed to the fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest
from fake_upstreams import Behaviour, FakeUpstream, expected_text, fake_embedding, upstream_process
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, free_port, running_server

FAULT_RATE = 0.2
REQUESTS = 1000
CONCURRENCY = 16
READ_TIMEOUT = 0.5  # a "stall" fault outlasts it
MESSAGES = [{"role": "user", "content": "hello there"}]


def metric(text: str, name: str, **labels: str) -> float:
    """The sample of `name` whose labels include `labels` (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --- 20% faults over two replicas ---------------------------------------------------------------------------


def _check(kind: int, response: httpx.Response) -> str | None:
    """None when the answer is complete and right, else what was wrong."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    want = expected_text(5)
    if kind == 0:
        got = response.json()["choices"][0]["message"]["content"]
    elif kind == 1:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]":
            return f"stream did not end with [DONE]: {response.text[-200:]}"
        payloads = [orjson.loads(e) for e in events[:-1]]
        if any("error" in p for p in payloads):
            return f"in-band error: {response.text[-200:]}"
        got = "".join(c["delta"].get("content") or "" for p in payloads for c in p["choices"])
    elif kind == 2:
        got = response.json()["message"]["content"]
    else:
        lines = [orjson.loads(line) for line in response.text.splitlines() if line.strip()]
        if any("error" in line for line in lines) or not lines[-1].get("done"):
            return f"bad NDJSON stream: {response.text[-200:]}"
        got = "".join(line["message"]["content"] for line in lines)
    return None if got == want else f"wrong text {got!r}"


async def _hammer(url: str, total: int, concurrency: int) -> list[str | None]:
    """`total` requests, `concurrency` at once, cycling through OpenAI/Ollama × JSON/stream."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(client: httpx.AsyncClient, i: int) -> str | None:
        kind = i % 4
        path = "/v1/chat/completions" if kind < 2 else "/api/chat"
        body = {"model": "pooled", "messages": MESSAGES, "stream": kind in (1, 3)}
        async with gate:
            try:
                return _check(kind, await client.post(path, json=body))
            except httpx.HTTPError as exc:
                return f"client error {exc!r}"

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        return await asyncio.gather(*(one(client, i) for i in range(total)))


@pytest.mark.slow
def test_two_flaky_replicas_at_20_percent_faults_lose_under_0_1_percent() -> None:
    flaky = ("--fault-rate", str(FAULT_RATE), "--faults", "reset,500,stall")
    with upstream_process(*flaky, "--seed", "11") as first, upstream_process(*flaky, "--seed", "12") as second:
        model = {
            "name": "pooled", "engine": "openai", "url": f"{first}/v1", "replicas": [f"{second}/v1"],
            "read_timeout": READ_TIMEOUT, "connect_timeout": 2.0, "max_retries": 6, "retry_backoff": 0.01,
        }  # fmt: skip
        with running_server({"embedded_models": False, "models": [model]}) as server:
            began = time.monotonic()
            outcomes = asyncio.run(_hammer(server.url, REQUESTS, CONCURRENCY))
            took = time.monotonic() - began
            text = httpx.get(server.url + "/metrics").text
    failures = [o for o in outcomes if o is not None]
    retries = sum(metric(text, "vlmserve_engine_retries_total", model="pooled", type=t)
                  for t in ("engine_error", "engine_timeout", "service_unavailable"))  # fmt: skip
    served = {url: metric(text, "vlmserve_replica_attempts_total", replica=f"{url}/v1", outcome="ok")
              for url in (first, second)}  # fmt: skip
    failed_attempts = sum(metric(text, "vlmserve_replica_attempts_total", replica=f"{url}/v1", outcome="failed")
                          for url in (first, second))  # fmt: skip
    print(f"\n{REQUESTS} requests at {FAULT_RATE:.0%} faults: {len(failures)} failed "
          f"({1 - len(failures) / REQUESTS:.2%} ok), {retries:.0f} retries, {failed_attempts:.0f} failed attempts, "
          f"served per replica {sorted(served.values())}, {took:.1f}s")  # fmt: skip
    assert len(failures) <= REQUESTS * 0.001, failures[:5]
    assert all(count > REQUESTS * 0.2 for count in served.values()), served  # both replicas carried traffic
    # the faults really happened and were absorbed by retries (expected: about a quarter of the requests)
    assert failed_attempts > REQUESTS * FAULT_RATE * 0.5 and retries == failed_attempts - len(failures), text


# --- a dead replica, revived ----------------------------------------------------------------------------------


def test_dead_replica_is_cooled_down_then_brought_back_by_the_health_probe() -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{port}"
    with FakeUpstream() as live:
        model = {"name": "pooled", "engine": "ollama", "url": live.url, "replicas": [dead], "connect_timeout": 1.0,
                 "cooldown": 3600, "health_interval": 0.3}  # fmt: skip
        with running_server({"embedded_models": False, "models": [model]}) as server:
            client = ollama.Client(host=server.url)
            for i in range(12):
                # distinct questions: cache-aware routing would send a repeated one back to the same replica
                messages = [{"role": "user", "content": f"question {i}"}]
                reply = client.chat(model="pooled", messages=messages, stream=i % 2 == 0)
                parts = [reply] if isinstance(reply, ollama.ChatResponse) else list(reply)
                assert "".join(p.message.content or "" for p in parts) == expected_text(5)
            text = httpx.get(server.url + "/metrics").text
            assert metric(text, "vlmserve_replica_healthy", replica=dead) == 0
            assert metric(text, "vlmserve_replica_cooldowns_total", replica=dead) >= 1
            assert metric(text, "vlmserve_replica_attempts_total", replica=dead, outcome="failed") <= 1  # left out
            assert metric(text, "vlmserve_replica_attempts_total", replica=live.url, outcome="ok") == 12
            assert len([r for r in live.requests if r.method == "POST"]) == 12

            with FakeUpstream(port=port) as revived:  # the host comes back; its cooldown (an hour) has not ended

                def healthy() -> bool:
                    scrape = httpx.get(server.url + "/metrics").text
                    return metric(scrape, "vlmserve_replica_healthy", replica=dead) == 1

                assert wait_until(healthy, 15.0)
                for i in range(6):
                    messages = [{"role": "user", "content": f"after {i}"}]
                    assert client.chat(model="pooled", messages=messages, stream=False).message.content
                assert len([r for r in revived.requests if r.path == "/api/chat"]) >= 2
            client.close()  # type: ignore[no-untyped-call]


# --- fallbacks ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fallback_upstreams() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as healthy, FakeUpstream(Behaviour(error_status=500)) as broken, \
            FakeUpstream(Behaviour(error_status=400)) as rejecting:  # fmt: skip
        yield {"healthy": healthy, "broken": broken, "rejecting": rejecting}


@pytest.fixture(scope="module")
def fallback_server(fallback_upstreams: dict[str, FakeUpstream]) -> Iterator[ServerProcess]:
    ok, dead = fallback_upstreams["healthy"].url, f"http://127.0.0.1:{free_port()}"
    broken, rejecting = fallback_upstreams["broken"].url, fallback_upstreams["rejecting"].url
    chat = {"capabilities": ["completion", "vision"], "connect_timeout": 1.0}
    models: list[dict[str, Any]] = [
        {"name": "backup", "engine": "openai", "url": f"{ok}/v1", "remote_model": "backup-remote", **chat},
        {"name": "embed-backup", "engine": "openai", "url": ok, "capabilities": ["embedding"]},
        # embed-backup cannot chat: skipped; backup answers
        {"name": "primary", "engine": "openai", "url": f"{dead}/v1", "fallbacks": ["embed-backup", "backup"], **chat},
        {"name": "broken", "engine": "ollama", "url": broken, "fallbacks": ["backup"], **chat},
        {"name": "picky", "engine": "openai", "url": rejecting, "fallbacks": ["backup"], **chat},
        {"name": "embed-primary", "engine": "ollama", "url": dead, "capabilities": ["embedding"],
         "connect_timeout": 1.0, "fallbacks": ["embed-backup"]},
    ]  # fmt: skip
    with running_server({"embedded_models": False, "models": models}) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "fallback_upstreams" in request.fixturenames:
        for fake in request.getfixturevalue("fallback_upstreams").values():
            fake.reset(fake.behaviour)


@pytest.mark.parametrize("model", ["primary", "broken"])
def test_openai_client_gets_the_fallback_answer(
    model: str, fallback_server: ServerProcess, fallback_upstreams: dict[str, FakeUpstream]
) -> None:
    with openai.OpenAI(base_url=fallback_server.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.model == "backup" and reply.choices[0].message.content == expected_text(5)
        stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        chunks = list(stream)
        assert {c.model for c in chunks} == {"backup"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text(5)
        completion = client.completions.create(model=model, prompt="Once upon a time", max_tokens=3)
        assert completion.model == "backup" and completion.choices[0].text == expected_text(3)
    upstream = fallback_upstreams["healthy"]
    assert upstream.last_body("/v1/chat/completions")["model"] == "backup-remote"
    assert len([r for r in upstream.requests if r.method == "POST"]) == 3
    if model == "broken":
        assert len(fallback_upstreams["broken"].requests) == 3  # tried first each time, then handed on


def test_ollama_client_gets_the_fallback_answer(fallback_server: ServerProcess) -> None:
    client = ollama.Client(host=fallback_server.url)
    reply = client.chat(model="primary", messages=MESSAGES)
    assert reply.model == "backup" and reply.message.content == expected_text(5)
    parts = list(client.chat(model="broken", messages=MESSAGES, stream=True))
    assert {p.model for p in parts} == {"backup"} and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == expected_text(5)
    generated = client.generate(model="primary", prompt="Say something")
    assert generated.model == "backup" and generated.response == expected_text(5)
    client.close()  # type: ignore[no-untyped-call]


def test_a_client_error_is_not_handed_to_the_fallback(
    fallback_server: ServerProcess, fallback_upstreams: dict[str, FakeUpstream]
) -> None:
    client = openai.OpenAI(base_url=fallback_server.url + "/v1", api_key="unused", max_retries=0)
    with client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="picky", messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.status_code == 400 and "fake upstream error 400" in refused.value.message
    response = httpx.post(fallback_server.url + "/api/chat", json={"model": "picky", "messages": MESSAGES})
    assert response.status_code == 400 and isinstance(response.json()["error"], str)
    assert len(fallback_upstreams["rejecting"].requests) == 2
    assert fallback_upstreams["healthy"].requests == []


def test_embeddings_fall_back_and_fallbacks_are_counted(fallback_server: ServerProcess) -> None:
    with openai.OpenAI(base_url=fallback_server.url + "/v1", api_key="unused", max_retries=0) as client:
        result = client.embeddings.create(model="embed-primary", input=["a cat"])
        assert result.model == "embed-backup"
        assert result.data[0].embedding == pytest.approx(fake_embedding("a cat"), abs=1e-6)  # float32 on the wire
        client.chat.completions.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
    text = httpx.get(fallback_server.url + "/metrics").text
    assert metric(text, "vlmserve_fallbacks_total", model="embed-primary", fallback="embed-backup") >= 1
    assert metric(text, "vlmserve_fallbacks_total", model="primary", fallback="backup") >= 1
    assert metric(text, "vlmserve_fallbacks_total", model="picky", fallback="backup") == 0


# --- what operators see: /health and the admin view ----------------------------------------------------------

ADMIN_KEY, INFERENCE_KEY = "vs-pool-admin-secret", "vs-pool-inference-secret"


def test_health_and_admin_view_show_each_replica_without_secrets() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeUpstream() as live:
        live_with_password = live.url.replace("http://", "http://operator:hunter2@")  # aiohttp sends it as Basic auth
        model = {"name": "pooled", "engine": "ollama", "url": live_with_password, "replicas": [dead],
                 "connect_timeout": 1.0, "cooldown": 3600, "health_interval": 3600}  # fmt: skip
        keys = [ADMIN_KEY, {"key": INFERENCE_KEY, "id": "pool-infer", "scopes": ["inference"]}]
        with running_server({"embedded_models": False, "models": [model], "api_keys": keys}) as server, \
                httpx.Client(base_url=server.url, timeout=30) as http:  # fmt: skip
            for i in range(4):  # round-robin sends the second one to the dead replica: refused, retried on the live one
                messages = [{"role": "user", "content": f"question {i}"}]  # distinct: no cached prefix to follow
                body = {"model": "pooled", "messages": messages, "stream": False}
                answer = http.post("/api/chat", json=body, headers={"Authorization": f"Bearer {INFERENCE_KEY}"})
                assert answer.status_code == 200 and answer.json()["message"]["content"] == expected_text(5)

            health = http.get("/health")  # open to all: probes every replica, then reports them
            assert health.status_code == 200 and "hunter2" not in health.text and "operator" not in health.text
            engine = health.json()["engines"]["pooled"]
            assert engine["reachable"] is True and engine["url"] == live.url
            by_url = {r["url"]: r for r in engine["replicas"]}
            assert list(by_url) == [live.url, dead]
            assert by_url[dead]["status"] == "cooling_down" and by_url[dead]["cooldown_left_seconds"] > 3000
            assert by_url[dead]["consecutive_failures"] >= 1 and by_url[dead]["failed"] >= 1
            assert by_url[live.url]["status"] == "healthy" and by_url[live.url]["consecutive_failures"] == 0
            assert by_url[live.url]["answered"] == 4 and by_url[live.url]["in_flight"] == 0

            assert http.get("/admin/models").status_code == 401  # the admin view keeps its admin scope
            denied = http.get("/admin/models", headers={"Authorization": f"Bearer {INFERENCE_KEY}"})
            assert denied.status_code == 403
            admin = http.get("/admin/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert admin.status_code == 200 and "hunter2" not in admin.text
            (pooled,) = [m for m in admin.json()["models"] if m["name"] == "pooled"]
            states = {r["url"]: r["status"] for r in pooled["replicas"]}
            assert states == {live.url: "healthy", dead: "cooling_down"}
            metrics = http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert metrics.status_code == 200 and f'replica="{live.url}"' in metrics.text
            assert "hunter2" not in metrics.text and "operator" not in metrics.text
    assert len([r for r in live.requests if r.path == "/api/chat"]) == 4


def test_fallback_answers_name_the_model_asked_for_in_a_header(fallback_server: ServerProcess) -> None:
    header = "x-vlmserve-fallback-from"
    chat: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 3}
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": "primary", **chat}),
        ("/v1/chat/completions", {"model": "broken", **chat, "stream": True}),
        ("/v1/completions", {"model": "primary", "prompt": "Once", "max_tokens": 3}),
        ("/v1/completions", {"model": "primary", "prompt": "Once", "max_tokens": 3, "stream": True}),
        ("/api/chat", {"model": "broken", "messages": MESSAGES, "stream": False}),
        ("/api/chat", {"model": "primary", "messages": MESSAGES}),  # Ollama streams by default
        ("/api/generate", {"model": "primary", "prompt": "Say something", "stream": False}),
    ]
    embeddings: list[tuple[str, dict[str, Any]]] = [
        ("/v1/embeddings", {"model": "embed-primary", "input": "a cat"}),
        ("/api/embed", {"model": "embed-primary", "input": "a cat"}),
        ("/api/embeddings", {"model": "embed-primary", "prompt": "a cat"}),
    ]
    with httpx.Client(base_url=fallback_server.url, timeout=30) as http:
        for path, body in requests:
            response = http.post(path, json=body)
            assert response.status_code == 200 and "backup" in response.text, (path, response.text)
            assert response.headers.get(header) == body["model"], (path, dict(response.headers))
        for path, body in embeddings:
            response = http.post(path, json=body)
            assert response.status_code == 200 and response.headers.get(header) == "embed-primary", path
            if path != "/api/embeddings":  # the legacy route's body has no model field
                assert response.json()["model"] == "embed-backup", (path, response.text)
        # a model that answers itself sends no such header
        direct = http.post("/v1/chat/completions", json={"model": "backup", **chat})
        assert direct.status_code == 200 and header not in direct.headers
        assert header not in http.post("/v1/embeddings", json={"model": "embed-backup", "input": "x"}).headers
    with openai.OpenAI(base_url=fallback_server.url + "/v1", api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="primary", messages=MESSAGES)  # type: ignore[arg-type]
        assert raw.headers[header] == "primary" and raw.parse().model == "backup"
