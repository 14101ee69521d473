"""Tools on the transformers engine: the chat template rendered with `tools` and the call history, the
model's `<tool_call>` read back as a call (a tiny model taught to call, tiny_tool_model.py), and the 400s
for a template without tools and for a forced call."""

from __future__ import annotations

import threading
from dataclasses import replace

import orjson
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import build_tiny_llava
from tiny_tool_model import (
    CALL_ARGUMENTS,
    CALL_TEXT,
    FINAL_ANSWER,
    TOOL_RESULT,
    build_tiny_tool_model,
    conversations,
    tools,
)

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, Message, SamplingParams, TextPart, ToolCallAssembler, Tools
from vlmserve.errors import BadRequest
from vlmserve.runners.transformers_engine import TransformersEngine

pytestmark = pytest.mark.transformers
GREEDY = SamplingParams(max_tokens=80, temperature=0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TransformersEngine:
    folder = build_tiny_tool_model(tmp_path_factory.getbasetemp() / "tiny-tools")
    return TransformersEngine(
        ModelSpec(name="tiny-tools", engine="transformers", path=str(folder), device="cpu"), threads=2
    )


def _run(engine: TransformersEngine, messages: list[Message], with_tools: Tools | None) -> list[ChatChunk]:
    return list(engine.generate(messages, GREEDY, threading.Event(), with_tools))


def _prompt(engine: TransformersEngine, messages: list[Message], with_tools: Tools | None) -> str:
    return str(engine.tokenizer.decode(engine.prompt_ids(messages, with_tools)))


def test_template_shows_the_tools_and_the_call_history(engine: TransformersEngine) -> None:
    ask, answer = conversations()[0][0], conversations()[1][0]
    plain, shown = _prompt(engine, ask, None), _prompt(engine, ask, tools())
    assert "get_weather" not in plain
    assert '"name": "get_weather"' in shown and '"description": "Weather of a city"' in shown
    assert shown.endswith("<|user|>\nWeather in Paris?</s>\n<|assistant|>\n")
    history = _prompt(engine, answer, tools())
    assert CALL_TEXT in history  # the assistant's call, its arguments given to the template as an object
    assert f"<tool_response>\n{TOOL_RESULT}\n</tool_response>" in history


def test_model_call_comes_back_as_a_tool_call(engine: TransformersEngine) -> None:
    chunks = _run(engine, conversations()[0][0], tools())
    assert "".join(c.text for c in chunks) == ""
    calls = ToolCallAssembler()
    for chunk in chunks:
        calls.add(chunk.tool_calls)
    [call] = calls.calls()
    assert call.name == "get_weather" and orjson.loads(call.arguments) == CALL_ARGUMENTS
    assert call.id.startswith("call_")
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None


def test_tool_result_gives_the_answer(engine: TransformersEngine) -> None:
    chunks = _run(engine, conversations()[1][0], tools())
    assert "".join(c.text for c in chunks) == FINAL_ANSWER
    assert not any(c.tool_calls for c in chunks) and chunks[-1].finish_reason == "stop"


def test_tool_choice_none_keeps_the_text(engine: TransformersEngine) -> None:
    chunks = _run(engine, conversations()[0][0], replace(tools(), choice="none"))
    assert "".join(c.text for c in chunks) == CALL_TEXT  # shown the tools, but its words are not read as calls
    assert chunks[-1].finish_reason == "stop"


def test_forced_call_is_refused(engine: TransformersEngine) -> None:
    for forced in (replace(tools(), choice="required"), replace(tools(), choice="required", name="get_weather")):
        with pytest.raises(BadRequest) as err:
            _run(engine, conversations()[0][0], forced)
        assert err.value.param == "tool_choice"


def test_template_without_tools_is_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = build_tiny_llava(tmp_path_factory.getbasetemp() / "tiny-llava")
    llava = TransformersEngine(
        ModelSpec(name="tiny-llava", engine="transformers", path=str(folder), device="cpu"), threads=2
    )
    assert not llava.takes_tools
    ask = [Message(role="user", parts=[TextPart("hi")])]
    with pytest.raises(BadRequest, match="chat template has no tool support") as err:
        _run(llava, ask, tools())
    assert err.value.param == "tools"
    assert _run(llava, ask, None)[-1].finish_reason in ("stop", "length")  # without tools it still answers
