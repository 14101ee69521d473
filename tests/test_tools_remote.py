"""Tools, reasoning and logprobs through remote engines (OpenAI-compatible and Ollama), against fake upstreams.

Both official clients, both remote kinds: what the client sends reaches the upstream in the upstream's own
form (tools, tool_choice, call history, tool results, think, logprobs), and what the upstream answers reaches
the client in the client's form, streamed or not. fake_agentic.py says what the fakes answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from fake_agentic import CALL_ID, FAKE_ARGUMENTS, THINKING
from fake_upstreams import FakeUpstream, remote_chat_models
from server_process import ServerProcess, running_server

MODELS = ["oa-chat", "ol-chat"]
PATHS = {"oa-chat": ("oa", "/v1/chat/completions"), "ol-chat": ("ol", "/api/chat")}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}
ASK: Any = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as oa, FakeUpstream() as ol:
        yield {"oa": oa, "ol": ol}


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream]) -> Iterator[ServerProcess]:
    oa, ol = fakes["oa"].url, fakes["ol"].url
    models = [
        *remote_chat_models(oa, ol),
        {"name": "ol-plain", "engine": "ollama", "url": ol, "capabilities": ["completion"]},
        {"name": "oa-embed", "engine": "openai", "url": f"{oa}/v1", "capabilities": ["embedding"]},
        {"name": "ol-embed", "engine": "ollama", "url": ol, "capabilities": ["embedding"]},
    ]
    with running_server({"embedded_models": False, "models": models}) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream]) -> None:
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


def upstream_body(fakes: dict[str, FakeUpstream], model: str) -> dict[str, Any]:
    fake, path = PATHS[model]
    return fakes[fake].last_body(path)


def sent_tool_names(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


@pytest.mark.parametrize("model", MODELS)
def test_openai_tools_non_stream(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    reply = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], tool_choice="required")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == FAKE_ARGUMENTS
    body = upstream_body(fakes, model)
    assert sent_tool_names(body) == ["get_weather"]
    if model == "oa-chat":  # pass-through: the engine forces the call itself
        assert body["tool_choice"] == "required"
    else:  # Ollama has no tool_choice: the call is forced with a format schema of it
        assert body["format"]["properties"]["name"] == {"const": "get_weather"}


@pytest.mark.parametrize("model", MODELS)
def test_openai_tools_stream(model: str, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER], stream=True)
    deltas: list[Any] = []
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert deltas[0].id == CALL_ID and deltas[0].function.name == "get_weather" and deltas[0].type == "function"
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == FAKE_ARGUMENTS
    if model == "oa-chat":
        assert len(deltas) == 4, "OpenAI-compatible upstream: arguments stay in their pieces"


@pytest.mark.parametrize("model", MODELS)
def test_openai_round_trip_history(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    history: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
    ]
    reply = oai.chat.completions.create(model=model, messages=history, tools=[WEATHER], tool_choice="none")
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content
    sent = upstream_body(fakes, model)["messages"]
    if model == "oa-chat":
        assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_a", "name": "get_weather"}
    else:
        assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
        assert sent[2]["tool_name"] == "get_weather" and sent[2]["content"] == "sunny"
        assert "tools" not in upstream_body(fakes, model)  # tool_choice none: the model is not shown them


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_ollama_tools(model: str, stream: bool, oll: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    if stream:
        parts = list(oll.chat(model=model, messages=ASK, tools=[WEATHER], stream=True))
        calls = [c for p in parts for c in p.message.tool_calls or []]
        assert parts[-1].done and parts[-1].done_reason == "stop"
    else:
        reply = oll.chat(model=model, messages=ASK, tools=[WEATHER])
        calls = list(reply.message.tool_calls or [])
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments) == FAKE_ARGUMENTS
    assert sent_tool_names(upstream_body(fakes, model)) == ["get_weather"]


@pytest.mark.parametrize("model", MODELS)
def test_ollama_round_trip_history(model: str, oll: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    history: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
    ]
    reply = oll.chat(model=model, messages=history)
    assert reply.message.content
    sent = upstream_body(fakes, model)["messages"]
    if model == "oa-chat":  # ids made up and linked: OpenAI-compatible engines need tool_call_id
        call_id = sent[1]["tool_calls"][0]["id"]
        assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
        assert call_id and sent[2]["tool_call_id"] == call_id
    else:
        assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
        assert sent[2]["tool_name"] == "get_weather"


def test_ollama_think(oll: ollama.Client, fakes: dict[str, FakeUpstream]) -> None:
    reply = oll.chat(model="ol-chat", messages=ASK, think=True)
    assert reply.message.thinking == "".join(THINKING) and reply.message.content
    assert upstream_body(fakes, "ol-chat")["think"] is True
    parts = list(oll.chat(model="ol-chat", messages=ASK, think="high", stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "".join(THINKING)
    assert upstream_body(fakes, "ol-chat")["think"] == "high"
    generated = oll.generate(model="ol-chat", prompt="hi", think=True)
    assert generated.thinking == "".join(THINKING)


@pytest.mark.parametrize("model", ["oa-think", "ol-chat"])
def test_openai_reasoning(model: str, oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    reply = oai.chat.completions.create(model=model, messages=ASK, reasoning_effort="low")
    extra = reply.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == "".join(THINKING)
    stream = oai.chat.completions.create(model=model, messages=ASK, reasoning_effort="low", stream=True)
    pieces = [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in stream if c.choices]
    assert "".join(p for p in pieces if p) == "".join(THINKING)
    if model == "oa-think":  # OpenAI upstreams get the field as it came; Ollama's /api/chat gets `think`
        body = fakes["oa"].last_body(PATHS["oa-chat"][1])
        assert body["reasoning_effort"] == "low" and "think" not in body, body
    else:
        body = fakes["ol"].last_body(PATHS[model][1])
        assert body["think"] == "low" and "reasoning_effort" not in body, body


@pytest.mark.parametrize("model", MODELS)
def test_logprobs_both_surfaces(model: str, oai: openai.OpenAI, oll: ollama.Client) -> None:
    reply = oai.chat.completions.create(model=model, messages=ASK, logprobs=True, top_logprobs=2)
    content = (reply.choices[0].logprobs and reply.choices[0].logprobs.content) or []
    assert [t.token for t in content] == [f"tok{i} " for i in range(5)]
    assert content[0].logprob == -0.25 and len(content[0].top_logprobs) == 2
    answer = oll.chat(model=model, messages=ASK, logprobs=True, top_logprobs=1)
    assert [t.token for t in answer.logprobs or []] == [f"tok{i} " for i in range(5)]


def test_capability_gated_fields_are_400(
    oai: openai.OpenAI, oll: ollama.Client, fakes: dict[str, FakeUpstream]
) -> None:
    refused: list[tuple[str, dict[str, Any]]] = [
        ("tools", {"tools": [WEATHER]}),
        ("reasoning_effort", {"reasoning_effort": "high"}),
    ]
    for field, extra in refused:
        with pytest.raises(openai.BadRequestError) as err:
            oai.chat.completions.create(model="oa-plain", messages=ASK, **extra)
        body: Any = err.value.body
        assert body["param"] == field and "does not support" in body["message"]
    for name, kwargs in [("tools", {"tools": [WEATHER]}), ("thinking", {"think": True})]:
        with pytest.raises(ollama.ResponseError) as oerr:
            oll.chat(model="ol-plain", messages=ASK, **kwargs)
        assert oerr.value.status_code == 400 and f"does not support {name}" in oerr.value.error
    assert not any(r.path in ("/v1/chat/completions", "/api/chat") for f in fakes.values() for r in f.requests)


def test_token_id_embeddings_pass_through(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    data = oai.embeddings.create(model="oa-embed", input=[[1, 2, 3], [4, 5]]).data
    assert len(data) == 2
    assert fakes["oa"].last_body("/v1/embeddings")["input"] == [[1, 2, 3], [4, 5]]
    with pytest.raises(openai.BadRequestError) as err:  # Ollama takes no token ids
        oai.embeddings.create(model="ol-embed", input=[[1, 2, 3]])
    assert "token ids" in str(err.value.body)


def test_ollama_phases_come_from_the_upstream(oll: ollama.Client) -> None:
    reply = oll.chat(model="ol-chat", messages=ASK, stream=False)
    assert (reply.prompt_eval_duration, reply.eval_duration) == (10**5, 9 * 10**5)  # the fake's own figures
