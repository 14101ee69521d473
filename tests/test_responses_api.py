"""The Responses API (`/v1/responses`) through the official `openai` client, on the embedded models.

SmolLM2 answers greedily (its default temperature 0), so a Responses request and the chat completion of the
same messages give the same text: that is how these tests know `input` items and `instructions` reach the model
as the messages they stand for. Tool calls are forced (a grammar), as in tests/test_tools_openai.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import data_uri, text_image
from openai.types.responses import FunctionToolParam
from pydantic import BaseModel
from server_process import ServerProcess

QUESTION = "What is the capital of France?"
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
    "strict": None,
}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def _chat_text(client: openai.OpenAI, messages: Any, max_tokens: int) -> str:
    reply = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=max_tokens)
    return reply.choices[0].message.content or ""


def test_string_input_answers_as_chat_does(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=40)
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.model == "smollm2"
    assert reply.status == "completed" and reply.error is None and reply.store is True
    assert [item.type for item in reply.output] == ["message"]
    message = reply.output[0]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert reply.output_text and reply.output_text == _chat_text(client, [{"role": "user", "content": QUESTION}], 40)
    usage = reply.usage
    assert usage is not None and usage.input_tokens > 5 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_items_and_instructions_are_the_messages(client: openai.OpenAI) -> None:
    instructions = "You are a geography teacher. Answer in one short sentence."
    reply = client.responses.create(
        model="smollm2",
        instructions=instructions,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Name a large city in Japan."}]},
            {"role": "assistant", "content": "Tokyo."},
            {"type": "message", "role": "user", "content": "And one in Italy?"},
        ],
        max_output_tokens=30,
    )
    messages = [
        {"role": "system", "content": instructions},
        {"role": "user", "content": "Name a large city in Japan."},
        {"role": "assistant", "content": "Tokyo."},
        {"role": "user", "content": "And one in Italy?"},
    ]
    assert reply.instructions == instructions
    assert reply.output_text and reply.output_text == _chat_text(client, messages, 30)


def test_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    reply = client.responses.create(model="smollm2", input="Tell me a long story about a dragon.", max_output_tokens=3)
    assert reply.status == "incomplete" and reply.max_output_tokens == 3
    assert reply.incomplete_details is not None and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None and reply.usage.output_tokens == 3


def test_stream_events_in_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=40, stream=True))
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1, "the text comes in pieces"
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    final = events[-1]
    assert final.type == "response.completed" and events[0].type == "response.created"
    assert final.response.id == events[0].response.id and events[0].response.status == "in_progress"
    assert text and done.text == text == final.response.output_text
    assert final.response.usage is not None and final.response.usage.output_tokens > 0
    assert text == client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=40).output_text


def test_stream_helper_and_incomplete_stream(client: openai.OpenAI) -> None:
    with client.responses.stream(model="smollm2", input=QUESTION, max_output_tokens=40) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text
    events = list(client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=2, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


class Capital(BaseModel):
    country: str
    city: str


def test_parse_with_a_pydantic_text_format(client: openai.OpenAI) -> None:
    reply = client.responses.parse(model="smollm2", input=QUESTION, text_format=Capital, max_output_tokens=60)
    assert reply.status == "completed"
    assert isinstance(reply.output_parsed, Capital) and reply.output_parsed.city
    assert reply.text is not None and reply.text.format is not None and reply.text.format.type == "json_schema"


def test_forced_tool_call_then_its_output_reaches_the_model(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=64,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and first.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")
    arguments = json.loads(call.arguments)
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")
    answer = client.responses.create(
        model="smollm2",
        previous_response_id=first.id,
        instructions="Answer with the tool's result.",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 31 degrees celsius."}],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=40,
    )
    assert not [item for item in answer.output if item.type == "function_call"]
    assert "31" in answer.output_text, answer.output_text
    assert answer.previous_response_id == first.id


def test_required_tool_call_streams_its_arguments(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
        stream=True,
    )
    events = list(stream)
    kinds = [event.type for event in events]
    deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas > 1, "arguments come in pieces"
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == pieces and set(json.loads(pieces)) >= {"city", "unit"}
    item = events[-1].response.output[0]  # type: ignore[union-attr]
    assert item.type == "function_call" and item.name == "get_weather" and item.arguments == pieces


def test_image_input_is_read(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model="rapidocr",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "read it"},
                    {"type": "input_image", "image_url": data_uri(text_image("INVOICE 4821")), "detail": "auto"},
                ],
            }
        ],
    )
    assert "INVOICE" in reply.output_text.upper() and "4821" in reply.output_text


def test_image_on_a_text_model_is_400(client: openai.OpenAI) -> None:
    image = {"type": "input_image", "image_url": data_uri(text_image("X")), "detail": "auto"}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="smollm2", input=[{"role": "user", "content": [image]}])  # type: ignore[list-item]
    assert "does not support images" in info.value.message


def test_previous_response_id_carries_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="smollm2", input="My favourite colour is green.", max_output_tokens=20)
    second = client.responses.create(
        model="smollm2", previous_response_id=first.id, input="What is my favourite colour?", max_output_tokens=20
    )
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    messages = [
        {"role": "user", "content": "My favourite colour is green."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "What is my favourite colour?"},
    ]
    assert second.output_text == _chat_text(client, messages, 20)
    listed = client.responses.input_items.list(second.id)
    assert [item.type for item in listed.data] == ["message"] and listed.has_more is False
    assert listed.data[0].content[0].text == "What is my favourite colour?"  # type: ignore[union-attr]


def test_retrieve_and_delete(client: openai.OpenAI) -> None:
    made = client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=20)
    got = client.responses.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="smollm2", input="hi", previous_response_id=made.id)
    assert info.value.body is not None and "previous_response_id" in str(info.value.body)


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    made = client.responses.create(model="smollm2", input=QUESTION, max_output_tokens=5, store=False)
    assert made.store is False and made.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_input_tokens_match_the_answers_usage(client: openai.OpenAI) -> None:
    ask: Any = {"instructions": "Be brief.", "input": [{"role": "user", "content": QUESTION}]}
    counted = client.responses.input_tokens.count(model="smollm2", **ask)
    made = client.responses.create(model="smollm2", max_output_tokens=5, **ask)
    assert counted.object == "response.input_tokens"
    assert made.usage is not None and counted.input_tokens == made.usage.input_tokens > 5
    bare = client.responses.input_tokens.count(model="smollm2", input=QUESTION)
    assert bare.input_tokens != counted.input_tokens  # the instructions are counted
