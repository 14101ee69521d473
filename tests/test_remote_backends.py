"""Remote engines (`engine: openai`, `engine: ollama`) through a running vlmserve, against real fake upstreams.

Both API surfaces (the official `openai` and `ollama` clients, and raw httpx) × both remote kinds: streaming,
parameters and images arriving in the upstream's own format, error mapping (500 → 502, unreachable → 502,
slow → 504, 429 → 429), cancellation of upstream work on client disconnect, embeddings and /health.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from fake_upstreams import Behaviour, FakeUpstream, expected_text, fake_embedding
from PIL import Image
from server_process import ServerProcess, free_port, running_server

READ_TIMEOUT = 1.5  # seconds; the slow-upstream tests wait this long
CHAT_MODELS = ["oa-chat", "ol-chat"]  # remote OpenAI-compatible, remote Ollama
SURFACES = ["openai", "ollama"]
REMOTE_NAMES = {"oa-chat": "fake-gpt", "ol-chat": "fake-llava:7b"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as oa, FakeUpstream() as ol:
        yield {"oa": oa, "ol": ol}


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream]) -> Iterator[ServerProcess]:
    oa, ol, closed = fakes["oa"].url, fakes["ol"].url, f"http://127.0.0.1:{free_port()}"
    common = {"read_timeout": READ_TIMEOUT, "connect_timeout": 2.0}
    chat_caps = {"capabilities": ["completion", "vision"], **common}
    embed_caps = {"capabilities": ["embedding"], **common}
    models = [
        {"name": "oa-chat", "engine": "openai", "url": f"{oa}/v1", "remote_model": "fake-gpt", **chat_caps},
        {"name": "ol-chat", "engine": "ollama", "url": ol, "remote_model": "fake-llava:7b", **chat_caps},
        {"name": "oa-embed", "engine": "openai", "url": oa, "remote_model": "fake-embed", **embed_caps},
        {"name": "ol-embed", "engine": "ollama", "url": ol, "remote_model": "fake-nomic", **embed_caps},
        {"name": "oa-down", "engine": "openai", "url": f"{closed}/v1", **chat_caps},
        {"name": "ol-down", "engine": "ollama", "url": closed, **chat_caps},
    ]
    with running_server({"embedded_models": False, "models": models}) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fakes(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def oai(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oll(gateway: ServerProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=gateway.url)
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def http(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30.0) as client:
        yield client


def upstream_of(fakes: dict[str, FakeUpstream], model: str) -> FakeUpstream:
    return fakes[model[:2]]


def chat_path(model: str) -> str:
    return "/v1/chat/completions" if model.startswith("oa") else "/api/chat"


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((20, 20, 220), (0, 0, size[0] // 2, size[1] // 2))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def image_size(b64_or_uri: str) -> tuple[int, int]:
    data = base64.b64decode(b64_or_uri.split(",", 1)[-1])
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def raw_chat(http: httpx.Client, surface: str, model: str, *, stream: bool) -> httpx.Response:
    messages = [{"role": "user", "content": "hello there"}]
    path = "/v1/chat/completions" if surface == "openai" else "/api/chat"
    return http.post(path, json={"model": model, "messages": messages, "stream": stream})


def assert_error(resp: httpx.Response, surface: str, status: int, openai_type: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    if surface == "openai":
        assert body["error"]["type"] == openai_type and body["error"]["message"], body
    else:
        assert isinstance(body["error"], str) and body["error"], body


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# --- streaming and plain answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_openai_surface(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    upstream_of(fakes, model).behaviour.token_delay = 0.01
    stream = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == expected_text(5) and len(pieces) == 5  # one chunk per upstream token
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == 5
    assert upstream_of(fakes, model).last_body(chat_path(model))["model"] == REMOTE_NAMES[model]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_ollama_surface(model: str, oll: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    upstream_of(fakes, model).behaviour.token_delay = 0.01
    parts = list(oll.chat(model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(p.message.content or "" for p in parts) == expected_text(5)
    assert len(parts) == 6 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 5


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_non_stream_and_completions(
    model: str, oai: openai.OpenAI, oll: ollama.Client, fakes: dict[str, FakeUpstream]
) -> None:
    fake = upstream_of(fakes, model)
    reply = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == expected_text(5) and reply.choices[0].finish_reason == "stop"
    completion = oai.completions.create(model=model, prompt="Once upon a time", max_tokens=4)
    assert completion.choices[0].text == expected_text(4) and completion.choices[0].finish_reason == "length"
    if model.startswith("oa"):
        assert fake.last_body("/v1/completions")["prompt"] == "Once upon a time"
    else:
        body = fake.last_body("/api/generate")
        assert body["prompt"] == "Once upon a time" and body["raw"] is True and body["options"]["num_predict"] == 4
    generated = oll.generate(model=model, prompt="Say something", stream=False)
    assert generated.response == expected_text(5) and generated.done


# --- parameters and images reach the upstream in its own format ---------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_sampling_from_openai_surface(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    reply = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END"],
        max_tokens=3,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content == expected_text(3)
    body = upstream_of(fakes, model).last_body(chat_path(model))
    if model.startswith("oa"):
        expected = {"temperature": 0.3, "top_p": 0.9, "seed": 7, "stop": ["END"], "max_tokens": 3}
        assert {k: body.get(k) for k in expected} == expected
        assert body["response_format"] == {"type": "json_object"}
    else:
        expected = {"temperature": 0.3, "top_p": 0.9, "seed": 7, "stop": ["END"], "num_predict": 3}
        assert {k: body["options"].get(k) for k in expected} == expected
        assert body["format"] == "json"


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_sampling_from_ollama_surface(model: str, oll: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    options = {"temperature": 0.4, "top_k": 20, "seed": 11, "stop": ["STOP"], "num_predict": 2, "repeat_penalty": 1.1}
    reply = oll.chat(
        model=model, messages=[{"role": "user", "content": "hi"}], options=options, format="json", keep_alive="10m"
    )
    assert reply.message.content == expected_text(2) and reply.done_reason == "length"
    body = upstream_of(fakes, model).last_body(chat_path(model))
    if model.startswith("oa"):
        expected = {
            "temperature": 0.4,
            "top_k": 20,
            "seed": 11,
            "stop": ["STOP"],
            "max_tokens": 2,
            "repeat_penalty": 1.1,
        }
        assert {k: body.get(k) for k in expected} == expected
        assert body["response_format"] == {"type": "json_object"}
    else:
        assert {k: body["options"].get(k) for k in options} == options
        assert body["format"] == "json" and body["keep_alive"] == 600


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_image_reaches_upstream(
    model: str, surface: str, oai: openai.OpenAI, oll: ollama.Client, fakes: dict[str, FakeUpstream]
) -> None:
    image = png((64, 48))
    if surface == "openai":
        uri = "data:image/png;base64," + base64.b64encode(image).decode()
        content: Any = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": uri}}]
        reply = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
        assert reply.choices[0].message.content == expected_text(5)
    else:
        answer = oll.chat(model=model, messages=[{"role": "user", "content": "What is this?", "images": [image]}])
        assert answer.message.content == expected_text(5)
    message = upstream_of(fakes, model).last_body(chat_path(model))["messages"][-1]
    if model.startswith("oa"):
        text = next(p for p in message["content"] if p["type"] == "text")
        url = next(p for p in message["content"] if p["type"] == "image_url")["image_url"]["url"]
        assert text["text"] == "What is this?" and url.startswith("data:image/")
        assert image_size(url) == (64, 48)
    else:
        assert message["content"] == "What is this?" and len(message["images"]) == 1
        assert image_size(message["images"][0]) == (64, 48)


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_upstream_500_is_502(
    model: str, surface: str, stream: bool, http: httpx.Client, fakes: dict[str, FakeUpstream]
) -> None:
    upstream_of(fakes, model).behaviour.error_status = 500
    resp = raw_chat(http, surface, model, stream=stream)
    assert_error(resp, surface, 502, "engine_error")
    assert "fake upstream error 500" in resp.text


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_upstream_500_through_official_clients(
    model: str, oai: openai.OpenAI, oll: ollama.Client, fakes: dict[str, FakeUpstream]
) -> None:
    upstream_of(fakes, model).behaviour.error_status = 500
    with pytest.raises(openai.APIStatusError) as oai_error:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert oai_error.value.status_code == 502
    with pytest.raises(ollama.ResponseError) as oll_error:
        oll.chat(model=model, messages=[{"role": "user", "content": "hi"}])
    assert oll_error.value.status_code == 502


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("model", ["oa-down", "ol-down"])
def test_unreachable_upstream_is_502(model: str, surface: str, http: httpx.Client) -> None:
    assert_error(raw_chat(http, surface, model, stream=True), surface, 502, "engine_error")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_slow_upstream_is_504(model: str, surface: str, http: httpx.Client, fakes: dict[str, FakeUpstream]) -> None:
    upstream_of(fakes, model).behaviour.initial_delay = READ_TIMEOUT + 3
    began = time.monotonic()
    resp = raw_chat(http, surface, model, stream=surface == "openai")
    assert_error(resp, surface, 504, "engine_timeout")
    assert time.monotonic() - began < READ_TIMEOUT + 2.5  # answered at the read timeout, not when upstream woke


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_upstream_429_is_429(model: str, http: httpx.Client, fakes: dict[str, FakeUpstream]) -> None:
    upstream_of(fakes, model).behaviour.error_status = 429
    resp = raw_chat(http, "openai", model, stream=False)
    assert_error(resp, "openai", 429, "rate_limit_error")
    assert resp.headers["retry-after"] == "2"  # the upstream's own Retry-After is passed on
    # the Ollama surface answers "busy" as Ollama itself does (503 + Retry-After; api/ollama/errors.py)
    resp = raw_chat(http, "ollama", model, stream=False)
    assert_error(resp, "ollama", 503, "")
    assert "busy" in resp.json()["error"] and resp.headers["retry-after"] == "2"


# --- client disconnect cancels upstream work ----------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_client_disconnect_cancels_upstream(
    model: str, surface: str, http: httpx.Client, fakes: dict[str, FakeUpstream]
) -> None:
    fake = upstream_of(fakes, model)
    fake.behaviour = Behaviour(tokens=400, token_delay=0.025)  # a 10 s answer
    path = "/v1/chat/completions" if surface == "openai" else "/api/chat"
    body = {"model": model, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True}
    with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        seen = 0
        for line in resp.iter_lines():
            seen += bool(line.strip())
            if seen >= 3:
                break
    # leaving the block closed a half-read response: the connection is dropped
    closed_at = time.monotonic()
    assert wait_until(lambda: fake.streams_cancelled >= 1, timeout=3.0), "upstream never saw the disconnect"
    assert fake.streams_completed == 0
    assert time.monotonic() - closed_at < 3.0


# --- embeddings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["oa-embed", "ol-embed"])
def test_embeddings_both_surfaces(
    model: str, oai: openai.OpenAI, oll: ollama.Client, fakes: dict[str, FakeUpstream]
) -> None:
    texts = ["a cat sat on the mat", "hello"]
    expected = [fake_embedding(t) for t in texts]
    result = oai.embeddings.create(model=model, input=texts)
    assert [d.embedding for d in result.data] == [pytest.approx(v, rel=1e-5) for v in expected]
    fake = upstream_of(fakes, model)
    path = "/v1/embeddings" if model.startswith("oa") else "/api/embed"
    assert fake.last_body(path)["input"] == texts
    assert fake.last_body(path)["model"] == ("fake-embed" if model.startswith("oa") else "fake-nomic")
    native = oll.embed(model=model, input=texts)
    assert [list(v) for v in native.embeddings] == [pytest.approx(v, rel=1e-5) for v in expected]


# --- health -------------------------------------------------------------------------------------------------


def test_health_reports_remote_reachability(http: httpx.Client, fakes: dict[str, FakeUpstream]) -> None:
    health = http.get("/health").json()
    engines = health["engines"]
    for name in ("oa-chat", "ol-chat", "oa-embed", "ol-embed"):
        assert engines[name]["reachable"] is True, (name, engines[name])
    assert engines["oa-down"]["reachable"] is False and engines["ol-down"]["reachable"] is False
    assert engines["oa-chat"]["engine"] == "openai" and engines["ol-chat"]["engine"] == "ollama"
    assert health["status"] == "degraded"
    paths = {r.path for fake in fakes.values() for r in fake.requests}
    assert paths & {"/health", "/v1/models"} and "/api/version" in paths


# --- connection reuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_upstream_connections_are_reused(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    for _ in range(5):
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    fake = upstream_of(fakes, model)
    assert len(fake.requests) == 5
    assert fake.connections <= 2, f"{fake.connections} upstream connections for 5 sequential requests"
