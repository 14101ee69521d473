"""Tools on the OpenAI surface through the official `openai` client, on the embedded SmolLM2 (llama.cpp).

SmolLM2-135M was not trained for function calling, so these tests force the call (`tool_choice` "required" or
a named function): the llama.cpp backend constrains the answer with a grammar, and what comes back must be a
valid call of the named function with JSON arguments that fit its schema, streamed as OpenAI streams calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from pydantic import BaseModel
from server_process import ServerProcess

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time of a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
}
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_named_tool_call_non_stream(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"
    arguments = json.loads(calls[0].function.arguments)
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")


def test_required_tool_call_streams_like_openai(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2", messages=ASK, tools=[WEATHER, TIME], tool_choice="required", max_tokens=64, stream=True
    )
    deltas: list[Any] = []
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
            assert not choice.delta.content
    assert finish == "tool_calls"
    first, rest = deltas[0], deltas[1:]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name in ("get_weather", "get_time") and first.function.arguments == ""
    assert len(rest) > 1, "arguments come in pieces"
    assert all(d.id is None and d.function.name is None and d.index == 0 for d in rest)
    arguments = json.loads("".join(d.function.arguments for d in rest))
    assert set(arguments) >= ({"city", "unit"} if first.function.name == "get_weather" else {"timezone"})


def test_stream_helper_assembles_the_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=64
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)


class GetWeather(BaseModel):
    """The current weather of a city."""

    city: str
    days: int


def test_parse_with_pydantic_function_tool(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Weather in Rome for the next 3 days?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        max_tokens=64,
    )
    call = (reply.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "GetWeather"
    parsed = call.function.parsed_arguments
    assert isinstance(parsed, GetWeather) and isinstance(parsed.days, int)


def test_round_trip_tool_result_reaches_the_model(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=64
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Answer with the tool's result."},
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 31 degrees celsius."},
    ]
    answer = client.chat.completions.create(
        model="smollm2", messages=history, tools=[WEATHER], tool_choice="none", max_tokens=40
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert "31" in (choice.message.content or ""), choice.message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > (first.usage.prompt_tokens if first.usage else 0)


def test_tool_choice_auto_answers(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], max_tokens=40)
    choice = reply.choices[0]
    if choice.finish_reason == "tool_calls":  # the model chose to call: a well-formed one
        assert (choice.message.tool_calls or [])[0].function.name == "get_weather"
    else:
        assert choice.message.content


def test_bad_tool_requests_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2",
            messages=ASK,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert err.value.body is not None and "nope" in str(err.value.body)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=ASK, tool_choice="required")
    with pytest.raises(openai.BadRequestError):  # a tool message must name the call it answers
        client.chat.completions.create(model="smollm2", messages=[*ASK, {"role": "tool", "content": "x"}])  # type: ignore[list-item,typeddict-item]
