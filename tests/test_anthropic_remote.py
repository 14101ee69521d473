"""The Anthropic Messages API on remote engines (fake OpenAI-compatible and Ollama upstreams): what a request
says reaches the upstream as chat fields (system, blocks of the history, sampling, tools, tool_choice,
thinking), what the upstream answers comes back as content blocks; the x-api-key header; errors of the gateway,
the routes and the engines in Anthropic's shape (401, 403, 404, 413, 429, 502, 503, bad bodies 400, an `error`
event when the engine fails mid-stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from fake_agentic import CALL_ID, FAKE_ARGUMENTS, THINKING
from fake_upstreams import Behaviour, FakeUpstream, expected_text, remote_chat_models
from server_process import ServerProcess, running_server

KEY, LIMITED, ONE_MODEL = "vs-test-anthropic-a", "vs-test-anthropic-rpm", "vs-test-anthropic-model"
MAX_BODY = 64 * 1024
WEATHER: Any = {"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}  # fmt: skip
TIME: Any = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as oa, FakeUpstream() as ol:
        yield {"oa": oa, "ol": ol}


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream]) -> Iterator[ServerProcess]:
    oa, ol = fakes["oa"].url, fakes["ol"].url
    models = remote_chat_models(oa, ol)
    keys = [KEY, {"key": LIMITED, "rpm": 1}, {"key": ONE_MODEL, "models": ["oa-plain"]}]
    config = {"embedded_models": False, "models": models, "default_model": "oa-chat", "api_keys": keys,
              "max_request_bytes": MAX_BODY}  # fmt: skip
    with running_server(config) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as client:
        yield client


def _sent(fakes: dict[str, FakeUpstream]) -> dict[str, Any]:
    return fakes["oa"].last_body("/v1/chat/completions")


def test_fields_and_history_reach_the_upstream(client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    reply = client.messages.create(
        model="oa-chat",
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
        max_tokens=4,
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 20},  # not in this client's signature any more
        metadata={"user_id": "user-7"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "A tool knows.", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "Sunny"}]},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
        tools=[WEATHER],
    )  # fmt: skip
    body = _sent(fakes)
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\nUse metric units."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call], "reasoning_content": "A tool knows."},
        {"role": "tool", "content": "Sunny", "tool_call_id": "toolu_1", "name": "get_weather"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_tokens"]) == (0.3, 0.9, 20, 4)
    assert body["model"] == "fake-gpt" and body["tool_choice"] == "auto" and "stop" not in body
    assert reply.content[-1].type == "tool_use" and reply.stop_reason == "tool_use"


def test_tool_choice_maps_and_the_call_comes_back(client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    named = client.messages.create(
        model="oa-chat",
        max_tokens=50,
        messages=HI,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
    )
    body = _sent(fakes)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert body["parallel_tool_calls"] is False
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    call = named.content[-1]
    assert call.type == "tool_use" and call.id == CALL_ID and call.name == "get_time"
    assert call.input == FAKE_ARGUMENTS and named.stop_reason == "tool_use"
    client.messages.create(model="oa-chat", max_tokens=50, messages=HI, tools=[WEATHER], tool_choice={"type": "any"})
    assert _sent(fakes)["tool_choice"] == "required"
    none = client.messages.create(model="oa-chat", max_tokens=50, messages=HI, tools=[WEATHER],
                                  tool_choice={"type": "none"})  # fmt: skip
    assert _sent(fakes)["tool_choice"] == "none" and none.stop_reason == "end_turn"
    assert [b.type for b in none.content] == ["text"] and none.content[0].text == expected_text(5)  # type: ignore[union-attr]


def test_streamed_tool_use_gives_input_json_deltas(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="oa-chat", max_tokens=50, messages=HI, tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta"
              and e.delta.type == "input_json_delta"]  # fmt: skip
    assert len(pieces) == 3 and orjson.loads("".join(pieces)) == FAKE_ARGUMENTS
    block = final.content[-1]
    assert block.type == "tool_use" and block.input == FAKE_ARGUMENTS and final.stop_reason == "tool_use"


def test_thinking_maps_to_the_engines_reasoning(client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    reply = client.messages.create(model="oa-think", max_tokens=2048, messages=HI,
                                   thinking={"type": "enabled", "budget_tokens": 1024})  # fmt: skip
    assert _sent(fakes)["chat_template_kwargs"] == {"enable_thinking": True}
    assert [b.type for b in reply.content] == ["thinking", "text"]
    assert reply.content[0].thinking == "".join(THINKING)  # type: ignore[union-attr]
    assert reply.content[1].text == expected_text(5)  # type: ignore[union-attr]
    with client.messages.stream(model="oa-think", max_tokens=2048, messages=HI,
                                thinking={"type": "enabled", "budget_tokens": 1024}) as stream:  # fmt: skip
        events = list(stream)
    thinking = [
        e.delta.thinking for e in events if e.type == "content_block_delta" and e.delta.type == "thinking_delta"
    ]
    # an instant engine's pieces can arrive in one read and go on as one delta (paced tokens stay one delta
    # each: test_remote_backends.test_stream_*_surface)
    assert "".join(thinking) == "".join(THINKING) and 1 <= len(thinking) <= len(THINKING)
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    off = client.messages.create(model="oa-think", max_tokens=20, messages=HI, thinking={"type": "disabled"})
    assert _sent(fakes)["chat_template_kwargs"] == {"enable_thinking": False} and off.content[0].type == "text"
    omitted: Any = {"type": "enabled", "budget_tokens": 1024, "display": "omitted"}
    hidden = client.messages.create(model="oa-think", max_tokens=2048, messages=HI, thinking=omitted)
    assert hidden.content[0].type == "thinking" and hidden.content[0].thinking == ""


def test_thinking_on_a_model_without_it_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="oa-plain", max_tokens=2048, messages=HI,
                               thinking={"type": "enabled", "budget_tokens": 1024})  # fmt: skip
    assert "does not support thinking" in info.value.message
    assert client.messages.create(model="oa-plain", max_tokens=5, messages=HI, thinking={"type": "disabled"}).content


def test_ollama_engine_tools_thinking_and_stream(client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    called = client.messages.create(model="ol-chat", max_tokens=50, messages=HI, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "get_weather"})  # fmt: skip
    body = fakes["ol"].last_body("/api/chat")
    assert body["model"] == "fake-qwen3" and body["tools"][0]["function"]["name"] == "get_weather"
    call = called.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == FAKE_ARGUMENTS
    thought = client.messages.create(model="ol-chat", max_tokens=2048, messages=HI, system="Be kind.",
                                     thinking={"type": "enabled", "budget_tokens": 1024})  # fmt: skip
    body = fakes["ol"].last_body("/api/chat")
    assert body["think"] is True and body["messages"][0] == {"role": "system", "content": "Be kind."}
    assert [b.type for b in thought.content] == ["thinking", "text"]
    with client.messages.stream(model="ol-chat", max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == expected_text(5) and final.usage.output_tokens == 5 and final.stop_reason == "end_turn"


def test_x_api_key_and_bearer_are_keys(gateway: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0) as by_header:  # x-api-key
        assert by_header.messages.create(model="oa-chat", max_tokens=5, messages=HI).content
    with anthropic.Anthropic(base_url=gateway.url, auth_token=KEY, max_retries=0) as by_bearer:
        assert by_bearer.messages.create(model="oa-chat", max_tokens=5, messages=HI).content
    wrong = anthropic.Anthropic(base_url=gateway.url, api_key="vs-wrong", max_retries=0)
    with wrong, pytest.raises(anthropic.AuthenticationError) as info:
        wrong.messages.create(model="oa-chat", max_tokens=5, messages=HI)
    assert _anthropic_error(info.value.body, "authentication_error")
    missing = httpx.post(gateway.url + "/v1/messages/count_tokens", json={"messages": HI})
    assert missing.status_code == 401 and _anthropic_error(missing.json(), "authentication_error")
    assert httpx.get(gateway.url + "/v1/models", headers={"x-api-key": KEY}).status_code == 200  # any route


def _anthropic_error(body: object, kind: str) -> bool:
    assert isinstance(body, dict) and set(body) == {"type", "error", "request_id"}, body
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == kind and body["error"]["message"], body
    return True


def test_gateway_refusals_are_in_anthropic_shape(gateway: ServerProcess) -> None:
    url = gateway.url + "/v1/messages"
    body = {"model": "oa-chat", "max_tokens": 5, "messages": HI}
    first = httpx.post(url, json=body, headers={"x-api-key": LIMITED})
    limited = httpx.post(url, json=body, headers={"x-api-key": LIMITED})
    assert first.status_code == 200 and limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert _anthropic_error(limited.json(), "rate_limit_error")
    denied = httpx.post(url, json=body, headers={"x-api-key": ONE_MODEL})
    assert denied.status_code == 403 and _anthropic_error(denied.json(), "permission_error")
    big = {**body, "system": "x" * MAX_BODY}
    too_large = httpx.post(url, json=big, headers={"x-api-key": KEY})
    assert too_large.status_code == 413 and _anthropic_error(too_large.json(), "request_too_large")
    no_route = httpx.post(url + "/batches", json=body, headers={"x-api-key": KEY})
    assert no_route.status_code == 404 and _anthropic_error(no_route.json(), "not_found_error")


def test_engine_failures_are_in_anthropic_shape(client: anthropic.Anthropic, fakes: dict[str, FakeUpstream]) -> None:
    for status, kind in ((500, "api_error"), (503, "overloaded_error"), (429, "rate_limit_error")):
        fakes["oa"].reset(Behaviour(error_status=status))
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(model="oa-chat", max_tokens=5, messages=HI, stream=True)
        assert info.value.status_code == {500: 502}.get(status, status)
        assert _anthropic_error(info.value.body, kind)


def test_failure_mid_stream_is_an_error_event(gateway: ServerProcess, fakes: dict[str, FakeUpstream]) -> None:
    fakes["oa"].reset(Behaviour(cut_after=3))  # the role chunk and two tokens, then the connection drops
    body = {"model": "oa-chat", "max_tokens": 5, "messages": HI, "stream": True}
    answer = httpx.post(gateway.url + "/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=30)
    assert answer.status_code == 200
    frames = [frame.split("\n", 1) for frame in answer.text.strip().split("\n\n")]
    kinds = [name.removeprefix("event: ") for name, _ in frames]
    # the two tokens before the cut arrive as one or two deltas (one when a single read held both)
    assert kinds[:3] == ["message_start", "ping", "content_block_start"] and kinds[-1] == "error", answer.text
    deltas = [orjson.loads(data.removeprefix("data: ")) for name, data in frames if name.endswith("_delta")]
    assert kinds[3:-1] == ["content_block_delta"] * len(deltas) and 1 <= len(deltas) <= 2, answer.text
    assert "".join(d["delta"]["text"] for d in deltas) == expected_text(2)
    error = orjson.loads(frames[-1][1].removeprefix("data: "))
    assert _anthropic_error(error, "api_error")


BAD: list[tuple[dict[str, Any], str]] = [
    ({"max_tokens": 5, "messages": []}, "messages"),
    ({"messages": HI}, "max_tokens"),
    ({"max_tokens": 2**40, "messages": HI}, "max_tokens"),
    ({"max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
    ({"max_tokens": 5, "messages": HI, "top_k": 2**40}, "top_k"),
    ({"max_tokens": 5, "messages": HI, "stop_sequences": ["x"] * 17}, "stop_sequences"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 5, "messages": HI, "tool_choice": {"type": "any"}}, "tool_choice"),
    ({"max_tokens": 5, "messages": HI, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}},
     "tool_choice.name"),
    ({"max_tokens": 5, "messages": HI, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "tools.0.type"),
    ({"max_tokens": 1024, "messages": HI, "thinking": {"type": "enabled", "budget_tokens": 1024}},
     "thinking.budget_tokens"),
    ({"max_tokens": 5000, "messages": HI, "thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0]"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}]}, "messages[0].content[0].content[0]"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "file", "file_id": "f"}}]}]}, "messages[0].content[0].source.type"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "@@"}}]}]}, "messages[0].content[0].source.data"),
    ({"max_tokens": 5, "messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]}, "messages[0].content[0].type"),
    ({"max_tokens": 5, "messages": HI, "stream": "yes"}, "stream"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_are_400_in_anthropic_shape(gateway: ServerProcess, body: dict[str, Any], field: str) -> None:
    answer = httpx.post(gateway.url + "/v1/messages", json={"model": "oa-chat", **body},
                        headers={"x-api-key": KEY}, timeout=30)  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert _anthropic_error(answer.json(), "invalid_request_error")
    assert answer.json()["error"]["message"].startswith(field), answer.json()


def test_bad_json_and_count_tokens_errors(gateway: ServerProcess) -> None:
    headers = {"x-api-key": KEY}
    broken = httpx.post(gateway.url + "/v1/messages", headers=headers, content=b'{"messages": ')
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    assert _anthropic_error(broken.json(), "invalid_request_error")
    count = httpx.post(gateway.url + "/v1/messages/count_tokens", headers=headers, json={"messages": []})
    assert count.status_code == 400 and _anthropic_error(count.json(), "invalid_request_error")
    unknown = httpx.post(gateway.url + "/v1/messages/count_tokens", headers=headers,
                         json={"model": "nope", "messages": HI})  # fmt: skip
    assert unknown.status_code == 404 and _anthropic_error(unknown.json(), "not_found_error")
