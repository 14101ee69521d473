"""The Responses API on remote engines (fake OpenAI-compatible and Ollama upstreams): what a request says reaches
the upstream as chat fields (instructions, items, sampling, text format, tools, tool_choice, reasoning, the
stored conversation), what the upstream answers comes back as output items; background responses through the
jobs worker, batch lines on /v1/responses, stored responses private to their API key, 400s in OpenAI's shape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from batch_helpers import jsonl, output_lines, wait_batch
from fake_agentic import CALL_ID, FAKE_ARGUMENTS, THINKING
from fake_upstreams import FakeUpstream, expected_text, remote_chat_models
from server_process import ServerProcess, running_server

KEY, OTHER_KEY = "vs-test-responses-a", "vs-test-responses-b"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}  # fmt: skip
TIME: Any = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with FakeUpstream() as oa, FakeUpstream() as ol:
        yield {"oa": oa, "ol": ol}


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeUpstream]) -> Iterator[ServerProcess]:
    oa, ol = fakes["oa"].url, fakes["ol"].url
    models = remote_chat_models(oa, ol)
    config = {"embedded_models": False, "models": models, "default_model": "oa-chat", "api_keys": [KEY, OTHER_KEY],
              "batch_poll_interval": 0.1}  # fmt: skip
    with running_server(config) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fakes: dict[str, FakeUpstream]) -> None:
    for fake in fakes.values():
        fake.reset()


@pytest.fixture(scope="module")
def oai(gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0) as client:
        yield client


def _sent(fakes: dict[str, FakeUpstream]) -> dict[str, Any]:
    return fakes["oa"].last_body("/v1/chat/completions")


def test_fields_reach_the_upstream(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    reply = oai.responses.create(
        model="oa-chat",
        instructions="Be brief.",
        input=[{"role": "developer", "content": "Use JSON."}, {"role": "user", "content": "Capital of France?"}],
        temperature=0.3,
        top_p=0.9,
        max_output_tokens=4,
        text={"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA}},
    )
    body = _sent(fakes)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use JSON."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["model"]) == (0.3, 0.9, 4, "fake-gpt")
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}}
    assert reply.output_text == expected_text(4) and reply.status == "incomplete"
    assert reply.temperature == 0.3 and reply.top_p == 0.9 and reply.text is not None
    assert reply.usage is not None and reply.usage.output_tokens == 4


def test_tools_pass_through_and_the_round_trip(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    first = oai.responses.create(model="oa-chat", input="Weather in Paris?", tools=[WEATHER, TIME],
                                 tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    body = _sent(fakes)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    assert body["tools"][0]["function"]["parameters"] == WEATHER["parameters"]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    call = first.output[-1]
    assert call.type == "function_call" and call.call_id == CALL_ID and call.name == "get_weather"
    assert orjson.loads(call.arguments) == FAKE_ARGUMENTS
    second = oai.responses.create(
        model="oa-chat",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": CALL_ID, "output": "Sunny"}],
    )
    messages = _sent(fakes)["messages"]
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[1]["role"] == "assistant" and messages[1]["tool_calls"][0]["id"] == CALL_ID
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[2] == {"role": "tool", "content": "Sunny", "tool_call_id": CALL_ID, "name": "get_weather"}
    assert len(messages) == 3 and second.output_text == expected_text(5)


def test_allowed_tools_are_the_only_tools_sent(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    choice: Any = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}
    reply = oai.responses.create(model="oa-chat", input="Time?", tools=[WEATHER, TIME], tool_choice=choice)
    body = _sent(fakes)
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"] and body["tool_choice"] == "required"
    assert reply.output[-1].type == "function_call" and reply.output[-1].name == "get_time"


def test_reasoning_comes_as_a_reasoning_item(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    reply = oai.responses.create(model="oa-think", input="Think first.", reasoning={"effort": "low"})
    assert _sent(fakes)["reasoning_effort"] == "low"
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    reasoning = reply.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert reasoning.content[0].text == "".join(THINKING) and reply.output_text == expected_text(5)
    events = list(oai.responses.create(model="oa-think", input="Think.", reasoning={"effort": "low"}, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]  # type: ignore[union-attr]
    assert "".join(deltas) == "".join(THINKING) and 1 <= len(deltas) <= len(THINKING)  # one read: one delta
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert [e.output_index for e in events if e.type == "response.output_item.done"] == [0, 1]  # type: ignore[union-attr]


def test_reasoning_on_a_model_without_thinking_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="oa-plain", input="x", reasoning={"effort": "high"})
    assert info.value.body is not None and info.value.body["param"] == "reasoning.effort"  # type: ignore[index]
    assert "thinking" in info.value.message
    reply = oai.responses.create(model="oa-plain", input="x", reasoning={"effort": "none"})  # no reasoning: fine
    assert reply.status == "completed"


def test_ollama_engine_streams_the_same_events(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    events = list(oai.responses.create(model="ol-chat", input="hi", instructions="Be kind.", stream=True))
    assert fakes["ol"].last_body("/api/chat")["messages"][0] == {"role": "system", "content": "Be kind."}
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == expected_text(5) == events[-1].response.output_text  # type: ignore[union-attr]


def test_background_response_runs_on_the_worker(oai: openai.OpenAI) -> None:
    queued = oai.responses.create(model="oa-chat", input="hi", background=True)
    assert queued.status == "queued" and queued.background is True and not queued.output
    deadline = time.monotonic() + 30
    got = oai.responses.retrieve(queued.id)
    while got.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        got = oai.responses.retrieve(queued.id)
    assert got.status == "completed" and got.output_text == expected_text(5) and got.usage is not None
    with pytest.raises(openai.BadRequestError):  # a finished background response may be cancelled: a no-op;
        oai.responses.cancel(oai.responses.create(model="oa-chat", input="x").id)  # a foreground one: 400
    assert oai.responses.cancel(queued.id).status == "completed"


def test_batch_lines_on_v1_responses(oai: openai.OpenAI) -> None:
    lines = [orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                           "body": {"model": "oa-chat", "input": f"hello {i}", "max_output_tokens": 3}})
             for i in range(2)]  # fmt: skip
    upload = oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = oai.batches.create(input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h")
    done = wait_batch(oai, batch.id)
    assert done.status == "completed", done.errors
    out = sorted(output_lines(oai, done.output_file_id), key=lambda line: line["custom_id"])
    assert [line["response"]["status_code"] for line in out] == [200, 200]
    for line in out:
        answer = line["response"]["body"]
        assert answer["object"] == "response" and answer["output"][0]["content"][0]["text"] == expected_text(3)
        assert answer["store"] is False and answer["usage"]["output_tokens"] == 3


def test_stored_responses_are_their_keys(oai: openai.OpenAI, gateway: ServerProcess) -> None:
    made = oai.responses.create(model="oa-chat", input="mine")
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=OTHER_KEY, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(made.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="oa-chat", input="x", previous_response_id=made.id)
    assert oai.responses.retrieve(made.id).id == made.id


def test_upstream_failure_is_502_in_openai_shape(oai: openai.OpenAI, fakes: dict[str, FakeUpstream]) -> None:
    fakes["oa"].behaviour.error_status = 500
    with pytest.raises(openai.APIStatusError) as info:
        oai.responses.create(model="oa-chat", input="x", stream=True)
    assert info.value.status_code == 502 and info.value.body is not None


BAD: list[tuple[dict[str, Any], str | None]] = [
    ({"input": []}, "input"),
    ({}, "input"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input"),
    ({"input": "x", "max_output_tokens": 2**40}, "max_output_tokens"),
    ({"input": "x", "temperature": 5}, "temperature"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools.0.type"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "top_logprobs": 3}, "top_logprobs"),
    ({"input": "x", "background": True, "stream": True}, "stream"),
    ({"input": "x", "background": True, "store": False}, "background"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.json_schema.schema"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input[0].content[0].image_url",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}]},
        "input[0].content[0].image_url",
    ),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 7}]}, "input"),
    ({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_are_400_in_openai_shape(gateway: ServerProcess, body: dict[str, Any], param: str) -> None:
    answer = httpx.post(gateway.url + "/v1/responses", json={"model": "oa-chat", **body},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param, error


def test_unknown_previous_response_and_bad_json(gateway: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    missing = httpx.post(gateway.url + "/v1/responses", headers=headers,
                         json={"input": "x", "previous_response_id": "resp_nope"})  # fmt: skip
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "previous_response_not_found"
    broken = httpx.post(gateway.url + "/v1/responses", headers=headers, content=b'{"input": ')
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    count = httpx.post(gateway.url + "/v1/responses/input_tokens", headers=headers, json={"input": []})
    assert count.status_code == 400 and count.json()["error"]["param"] == "input"
