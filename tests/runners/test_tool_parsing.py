"""The transformers engine's reader of `<tool_call>` blocks (Hermes / Qwen form), fed whole or piece by piece."""

from __future__ import annotations

import orjson
import pytest

from vlmserve.runners.tool_parsing import ToolTextSplitter, parse_tool_calls

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>'


def test_one_call_no_content() -> None:
    content, calls = parse_tool_calls(CALL)
    assert content == ""
    assert [(c.name, orjson.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris", "days": 3})]
    assert calls[0].id.startswith("call_")


def test_two_calls_with_text_around_and_string_arguments() -> None:
    second = '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>'
    content, calls = parse_tool_calls(f"Let me look. {CALL}{second} Done.")
    assert content == "Let me look.  Done."
    assert [c.name for c in calls] == ["get_weather", "f"]
    assert orjson.loads(calls[1].arguments) == {"x": 1}
    assert calls[0].id != calls[1].id


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>not json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',  # arguments not an object
        "plain text, no call",
    ],
)
def test_what_is_no_call_stays_text(text: str) -> None:
    assert parse_tool_calls(text) == (text, [])


def test_unclosed_block_with_whole_json_is_a_call() -> None:  # max_tokens or a stop string cut the tag
    content, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": {}}')
    assert content == "" and [c.name for c in calls] == ["f"]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_splitter_streams_text_before_the_tag_and_holds_the_rest(size: int) -> None:
    text = "Sure <tool" + " thing. " + CALL + " bye"
    splitter = ToolTextSplitter()
    streamed = "".join(splitter.push(text[i : i + size]) for i in range(0, len(text), size))
    assert streamed == "Sure <tool thing. "  # a partial tag that turned out not to be one is sent on
    rest, calls = splitter.finish()
    assert rest == "bye" and [c.name for c in calls] == ["get_weather"]


def test_splitter_without_calls_gives_everything_back() -> None:
    splitter = ToolTextSplitter()
    sent = splitter.push("just an answer <tool_")
    assert sent == "just an answer "
    assert splitter.finish() == ("<tool_", [])
    broken = ToolTextSplitter()
    assert broken.push("a <tool_call>{oops") == "a "
    assert broken.finish() == ("<tool_call>{oops", [])
