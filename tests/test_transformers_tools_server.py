"""Tools through the server on the transformers engine, with the official clients: a tiny model taught to call
get_weather (tiny_tool_model.py) answers with a tool call (OpenAI non-streamed and streamed, Ollama), then
with its answer once the tool's result is in the history; a template without tools, or a forced call, is a
400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from server_process import ServerProcess, running_server

pytestmark = pytest.mark.transformers
pytest.importorskip("torch")
pytest.importorskip("transformers")
tiny_models = pytest.importorskip("tiny_models")
tiny_tool_model = pytest.importorskip("tiny_tool_model")

TOOL: Any = {
    "type": "function",
    "function": {
        "name": tiny_tool_model.WEATHER_TOOL.name,
        "description": tiny_tool_model.WEATHER_TOOL.description,
        "parameters": tiny_tool_model.WEATHER_TOOL.parameters,
    },
}
ASK: Any = [{"role": "user", "content": tiny_tool_model.WEATHER_ASK}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tools_dir = tiny_tool_model.build_tiny_tool_model(tmp_path_factory.getbasetemp() / "tiny-tools")
    llava_dir = tiny_models.build_tiny_llava(tmp_path_factory.getbasetemp() / "tiny-llava")
    models = [
        {
            "name": "tiny-tools",
            "engine": "transformers",
            "path": str(tools_dir),
            "capabilities": ["completion", "tools"],
        },
        {
            "name": "tiny-llava",
            "engine": "transformers",
            "path": str(llava_dir),
            "capabilities": ["completion", "tools"],
        },
    ]
    with running_server({"embedded_models": False, "models": models}) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


def test_openai_call_then_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny-tools", messages=ASK, tools=[TOOL], temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.content
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == tiny_tool_model.CALL_ARGUMENTS
    history: Any = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": tiny_tool_model.TOOL_RESULT},
    ]
    answer = client.chat.completions.create(model="tiny-tools", messages=history, tools=[TOOL], temperature=0)
    assert answer.choices[0].message.content == tiny_tool_model.FINAL_ANSWER
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls


def test_openai_streamed_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="tiny-tools", messages=ASK, tools=[TOOL], temperature=0, stream=True)
    chunks = [c for c in stream if c.choices]
    calls = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert calls and calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    arguments = "".join((d.function and d.function.arguments) or "" for d in calls)
    assert json.loads(arguments) == tiny_tool_model.CALL_ARGUMENTS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_call(server: ServerProcess, stream: bool) -> None:
    oll = ollama.Client(host=server.url)
    try:
        options = {"temperature": 0}
        if stream:
            replies = list(oll.chat(model="tiny-tools", messages=ASK, tools=[TOOL], options=options, stream=True))
        else:
            replies = [oll.chat(model="tiny-tools", messages=ASK, tools=[TOOL], options=options)]
    finally:
        oll.close()  # type: ignore[no-untyped-call]
    calls = [c for r in replies for c in r.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", tiny_tool_model.CALL_ARGUMENTS)
    ]


def test_template_without_tools_and_forced_calls_are_400(server: ServerProcess) -> None:
    url = server.url + "/v1/chat/completions"
    body: Any = {"model": "tiny-llava", "messages": ASK, "tools": [TOOL], "max_tokens": 2}
    reply = httpx.post(url, json=body, timeout=120)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "tools" and "no tool support" in reply.json()["error"]["message"]
    native = httpx.post(server.url + "/api/chat", json={**body, "stream": False}, timeout=120)
    assert native.status_code == 400 and "no tool support" in native.json()["error"]
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        forced = httpx.post(url, json={**body, "model": "tiny-tools", "tool_choice": choice}, timeout=120)
        assert forced.status_code == 400, forced.text
        assert forced.json()["error"]["param"] == "tool_choice"
