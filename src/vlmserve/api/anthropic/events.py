"""ChatChunks -> the Messages API's content blocks and stream events.

    message_start (the message, no content), ping
    per content block, in the order the engine says them (thinking, text, tool_use):
      content_block_start, content_block_delta ... (thinking_delta / text_delta / input_json_delta),
      content_block_stop
    message_delta (stop_reason, stop_sequence, usage), message_stop

A failure after the first event is one `error` event, `{"type": "error", "error": {"type", "message"}}`.
The same encoder builds the non-streamed answer (its `content`), so both give the same blocks. After a stop
sequence nothing more is shown; the engine's answer is read to its end all the same, for the usage counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from vlmserve.api.anthropic import codec, errors
from vlmserve.api.anthropic.stops import StopMatcher
from vlmserve.domain.types import ChatChunk, ToolCallDelta, Usage
from vlmserve.errors import EngineError, VlmServeError
from vlmserve.service.chat import ChatStream
from vlmserve.wire.openai_answers import new_call_id

Kind = Literal["text", "thinking", "tool_use"]
Event = dict[str, Any]


@dataclass
class _Open:
    kind: Kind
    index: int
    pieces: list[str] = field(default_factory=list)
    tool_index: int = -1
    call_id: str = ""
    name: str = ""


class MessageEvents:
    def __init__(self, msg_id: str, model: str, stops: list[str] | None = None, show_thinking: bool = True) -> None:
        self.message = codec.message_object(msg_id, model)
        self.content: list[dict[str, Any]] = []  # finished blocks
        self.stops = StopMatcher(stops)
        self.show_thinking = show_thinking
        self.bad_input = False  # a tool call whose arguments are not a JSON object
        self._open: _Open | None = None

    def start(self) -> list[Event]:
        return [{"type": "message_start", "message": self.message}, {"type": "ping"}]

    def chunk(self, chunk: ChatChunk) -> list[Event]:
        if self.stops.done:
            return []
        out: list[Event] = []
        if chunk.reasoning:
            out += self._text("thinking", chunk.reasoning if self.show_thinking else "")
        if chunk.text:
            out += self._text("text", self.stops.feed(chunk.text))
        if not self.stops.done:
            for delta in chunk.tool_calls:
                out += self._call(delta)
        return out

    def finish(self, finish_reason: str, usage: Usage) -> list[Event]:
        out = self._text("text", self.stops.flush())
        out += self._close()
        matched = self.stops.matched
        reason = codec.stop_reason(finish_reason, matched)
        self.message = {**self.message, "content": self.content, "stop_reason": reason, "stop_sequence": matched,
                        "usage": codec.usage_object(usage)}  # fmt: skip
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": matched},
                 "usage": codec.usage_object(usage)}  # fmt: skip
        return [*out, delta, {"type": "message_stop"}]

    # --- blocks

    def _start(self, kind: Kind, delta: ToolCallDelta | None = None) -> list[Event]:
        opened = _Open(kind, len(self.content))
        if kind == "tool_use":
            assert delta is not None
            opened.tool_index, opened.call_id, opened.name = delta.index, delta.id or new_call_id(), delta.name or ""
            block: dict[str, Any] = {"type": "tool_use", "id": opened.call_id, "name": opened.name, "input": {}}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            block = {"type": "text", "text": ""}
        self._open = opened
        return [{"type": "content_block_start", "index": opened.index, "content_block": block}]

    def _text(self, kind: Kind, text: str) -> list[Event]:
        if not text and (kind == "text" or (self._open is not None and self._open.kind == kind)):
            return []
        out: list[Event] = []
        if self._open is None or self._open.kind != kind:
            out += self._close()
            out += self._start(kind)
        opened = self._open
        assert opened is not None
        if text:
            opened.pieces.append(text)
            delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta",
                                                                                  "thinking": text}  # fmt: skip
            out.append({"type": "content_block_delta", "index": opened.index, "delta": delta})
        return out

    def _call(self, delta: ToolCallDelta) -> list[Event]:
        out: list[Event] = []
        opened = self._open
        if opened is None or opened.kind != "tool_use" or opened.tool_index != delta.index:
            out += self._close()
            out += self._start("tool_use", delta)
            opened = self._open
            assert opened is not None
        if delta.arguments:
            opened.pieces.append(delta.arguments)
            piece = {"type": "input_json_delta", "partial_json": delta.arguments}
            out.append({"type": "content_block_delta", "index": opened.index, "delta": piece})
        return out

    def _close(self) -> list[Event]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        text = "".join(opened.pieces)
        if opened.kind == "tool_use":
            given = codec.tool_input(text)
            self.bad_input = self.bad_input or given is None
            block = {"type": "tool_use", "id": opened.call_id, "name": opened.name, "input": given or {}}
        elif opened.kind == "thinking":
            block = {"type": "thinking", "thinking": text, "signature": ""}
        else:
            block = {"type": "text", "text": text}
        self.content.append(block)
        return [{"type": "content_block_stop", "index": opened.index}]


async def _run(encoder: MessageEvents, stream: ChatStream) -> AsyncIterator[Event]:
    finish, usage = "stop", Usage()
    for event in encoder.start():
        yield event
    async for chunk in stream.chunks:
        for event in encoder.chunk(chunk):
            yield event
        if chunk.finish_reason is not None:
            finish, usage = chunk.finish_reason, chunk.usage or Usage()
    for event in encoder.finish(finish, usage):
        yield event


async def collect(encoder: MessageEvents, stream: ChatStream) -> dict[str, Any]:
    """The whole answer as one message object (502 when a tool call's arguments are not a JSON object)."""
    async for _ in _run(encoder, stream):
        pass
    if encoder.bad_input:
        raise EngineError("the model's tool call arguments are not a JSON object")
    return encoder.message


def _sse(event: Event) -> bytes:
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def sse(encoder: MessageEvents, stream: ChatStream) -> AsyncIterator[bytes]:
    try:
        async for event in _run(encoder, stream):
            yield _sse(event)
    except VlmServeError as exc:  # the status is already sent: the failure travels in-band
        yield _sse(errors.error_body(exc))
