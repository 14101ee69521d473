"""Tool calls in a model's own text, as Hermes / Qwen 2.5 / Qwen3 chat templates ask for them:
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call.

`ToolTextSplitter` is fed the generated text piece by piece: text before the first `<tool_call>` streams on
as content (a possible start of the tag is held back); from the first tag on, the rest is kept and read at
the end. Blocks whose JSON is a call become tool calls (with fresh ids); what is left is content, so a model
that writes a broken call loses nothing (its text comes back as it was).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from vlmserve.domain.types import ToolCall
from vlmserve.wire.openai_answers import new_call_id

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


def _as_call(text: str) -> ToolCall | None:
    try:
        parsed: Any = orjson.loads(text.strip())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str) or not parsed["name"]:
        return None
    arguments = parsed.get("arguments", parsed.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as JSON text
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(id=new_call_id(), name=parsed["name"], arguments=orjson.dumps(arguments).decode())


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """(content left, calls) of a whole answer: each parsable block becomes a call, the rest stays text."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    at = 0
    for block in _BLOCK.finditer(text):
        call = _as_call(block.group(1))
        if call is None:
            continue
        kept.append(text[at : block.start()])
        calls.append(call)
        at = block.end()
    kept.append(text[at:])
    content = "".join(kept)
    return (content.strip() if calls else content), calls


@dataclass
class ToolTextSplitter:
    """Streams content until the first `<tool_call>`; holds the rest for `finish`."""

    text: str = ""
    sent: int = 0
    held_from: int | None = None  # where the first tag begins, once seen
    _out: list[str] = field(default_factory=list)

    def push(self, piece: str) -> str:
        self.text += piece
        if self.held_from is None:
            found = self.text.find(OPEN, max(0, self.sent - len(OPEN)))
            if found >= 0:
                self.held_from = found
                return self._take(found)
            return self._take(len(self.text) - _partial_tag(self.text))
        return ""

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content not yet sent, calls) at the end of the answer."""
        if self.held_from is None:
            return self._take(len(self.text)), []
        content, calls = parse_tool_calls(self.text[self.held_from :])
        return content, calls

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        out, self.sent = self.text[self.sent : end], end
        return out


def _partial_tag(text: str) -> int:
    """How many trailing characters of `text` could be the start of `<tool_call>`."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0
