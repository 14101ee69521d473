"""The Anthropic Messages API (`/v1/messages`) through the official `anthropic` client, on the embedded models.

SmolLM2 answers greedily (its default temperature 0), so a Messages request and the chat completion of the same
messages give the same text: that is how these tests know `system` and the content blocks reach the model as
the messages they stand for. Tool calls are forced (a grammar on llama.cpp), as in tests/test_tools_openai.py.
Keys, rate limits and the error shapes of the gateway are in tests/test_anthropic_remote.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam, ToolParam
from conftest import text_image
from server_process import ServerProcess

QUESTION = "What is the capital of France?"
COUNTING = "Count from 1 to 10, separated by commas."
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The current weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def _chat_text(oai: openai.OpenAI, messages: Any, max_tokens: int) -> str:
    reply = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=max_tokens)
    return reply.choices[0].message.content or ""


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_create_answers_as_chat_does(client: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    reply = client.messages.create(model="smollm2", max_tokens=40, messages=[{"role": "user", "content": QUESTION}])
    assert reply.type == "message" and reply.id.startswith("msg_") and reply.role == "assistant"
    assert reply.model == "smollm2" and reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert [block.type for block in reply.content] == ["text"]
    assert _text(reply) and _text(reply) == _chat_text(oai, [{"role": "user", "content": QUESTION}], 40)
    assert reply.usage.input_tokens > 5 and 0 < reply.usage.output_tokens < 40


def test_system_and_blocks_are_the_messages(client: anthropic.Anthropic, oai: openai.OpenAI) -> None:
    system = "You are a geography teacher. Answer in one short sentence."
    reply = client.messages.create(
        model="smollm2",
        max_tokens=30,
        system=[{"type": "text", "text": system}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Name a large city in Japan."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Tokyo."}]},
            {"role": "user", "content": "And one in Italy?"},
        ],
    )
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Name a large city in Japan."},
        {"role": "assistant", "content": "Tokyo."},
        {"role": "user", "content": "And one in Italy?"},
    ]
    assert _text(reply) and _text(reply) == _chat_text(oai, messages, 30)


def test_max_tokens_stops_with_max_tokens(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(
        model="smollm2", max_tokens=3, messages=[{"role": "user", "content": "Tell me a long story about a dragon."}]
    )
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3 and _text(reply)


def _events(server: ServerProcess, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of a raw SSE answer: the SDK hides `ping`."""
    with httpx.stream("POST", server.url + "/v1/messages", json={**body, "stream": True}, timeout=120) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        raw = answer.read().decode()
    out = []
    for frame in raw.strip().split("\n\n"):
        name, data = frame.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), frame
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name.removeprefix("event: ")
        out.append((payload["type"], payload))
    return out


def test_stream_events_in_order(client: anthropic.Anthropic, server: ServerProcess) -> None:
    body: Any = {"model": "smollm2", "max_tokens": 40, "messages": [{"role": "user", "content": QUESTION}]}
    events = _events(server, body)
    kinds = [kind for kind, _ in events]
    deltas = kinds.count("content_block_delta")
    assert deltas > 1, "the text comes in pieces"
    assert kinds == ["message_start", "ping", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    pieces = [data["delta"] for kind, data in events if kind == "content_block_delta"]
    assert {piece["type"] for piece in pieces} == {"text_delta"}
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    reply = client.messages.create(**body)  # the same text, whole
    assert "".join(piece["text"] for piece in pieces) == _text(reply)
    assert final["usage"]["input_tokens"] == reply.usage.input_tokens
    assert final["usage"]["output_tokens"] == reply.usage.output_tokens


def test_stream_helper_text_is_the_final_text(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="smollm2", max_tokens=40, messages=[{"role": "user", "content": QUESTION}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and text == _text(final) and final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 5 and final.usage.output_tokens > 0


def test_stop_sequences_cut_and_name_the_sequence(client: anthropic.Anthropic) -> None:
    ask: Any = {"model": "smollm2", "max_tokens": 60, "messages": [{"role": "user", "content": COUNTING}]}
    plain = client.messages.create(**ask)
    whole = _text(plain)
    assert len(whole) > 10, whole
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]  # three characters from the middle of the greedy answer
    cut_at = whole.index(stop)  # where it is first said
    reply = client.messages.create(**ask, stop_sequences=["never-said", stop])
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == stop
    assert _text(reply) == whole[:cut_at]
    with client.messages.stream(**ask, stop_sequences=[stop]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    assert streamed == whole[:cut_at] and final.stop_reason == "stop_sequence" and final.stop_sequence == stop
    unmet = client.messages.create(**ask, stop_sequences=["never-said"])
    assert _text(unmet) == whole and unmet.stop_reason == plain.stop_reason and unmet.stop_sequence is None
    assert reply.usage.input_tokens == plain.usage.input_tokens  # the usage of the engine's whole answer


def test_forced_tool_use_then_its_result_is_answered(client: anthropic.Anthropic) -> None:
    question: MessageParam = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(
        model="smollm2", max_tokens=64, messages=[question], tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.id and isinstance(call.input, dict)
    assert isinstance(call.input["city"], str) and call.input["unit"] in ("celsius", "fahrenheit")
    result = "Sunny, 31 degrees celsius."
    answer = client.messages.create(
        model="smollm2",
        max_tokens=40,
        system="Answer with the tool's result.",
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}]},
        ],
    )
    assert answer.stop_reason == "end_turn" and not [b for b in answer.content if b.type == "tool_use"]
    assert "31" in _text(answer), _text(answer)


def test_any_tool_streams_its_input(client: anthropic.Anthropic, server: ServerProcess) -> None:
    body = {"model": "smollm2", "max_tokens": 64, "tools": [WEATHER], "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}  # fmt: skip
    events = _events(server, body)
    kinds = [kind for kind, _ in events]
    deltas = kinds.count("content_block_delta")
    assert deltas > 1, "the input comes in pieces"
    assert kinds == ["message_start", "ping", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    block = events[2][1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_weather" and block["input"] == {}
    pieces = "".join(data["delta"]["partial_json"] for kind, data in events if kind == "content_block_delta")
    assert set(json.loads(pieces)) >= {"city", "unit"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def _image_block(text: str) -> Any:
    data = base64.b64encode(text_image(text)).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


def test_image_block_is_read(client: anthropic.Anthropic) -> None:
    reply = client.messages.create(
        model="rapidocr",
        max_tokens=64,
        messages=[{"role": "user", "content": [{"type": "text", "text": "read it"}, _image_block("INVOICE 4821")]}],
    )
    assert "INVOICE" in _text(reply).upper() and "4821" in _text(reply)


def test_what_the_model_cannot_do_is_400(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as image:
        client.messages.create(
            model="smollm2", max_tokens=5, messages=[{"role": "user", "content": [_image_block("X")]}]
        )
    assert "does not support images" in image.value.message
    with pytest.raises(anthropic.BadRequestError) as thinking:
        client.messages.create(model="smollm2", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": QUESTION}])  # fmt: skip
    assert "does not support thinking" in thinking.value.message
    body = thinking.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_count_tokens_is_the_answers_input_tokens(client: anthropic.Anthropic) -> None:
    ask: Any = {"system": "Be brief.", "messages": [{"role": "user", "content": QUESTION}]}
    counted = client.messages.count_tokens(model="smollm2", **ask)
    made = client.messages.create(model="smollm2", max_tokens=5, **ask)
    assert counted.input_tokens == made.usage.input_tokens > 5
    bare = client.messages.count_tokens(model="smollm2", messages=ask["messages"])
    assert bare.input_tokens != counted.input_tokens  # the system prompt is counted


def test_unknown_model_is_404_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert "no-such-model" in body["error"]["message"]
