"""ChatChunks -> the Responses API's stream events, each with its `sequence_number` (0, 1, 2, ...).

    response.created, response.in_progress
    per output item, in order (reasoning, then the message, then each function call):
      response.output_item.added
      message:       response.content_part.added, response.output_text.delta ..., response.output_text.done,
                     response.content_part.done
      reasoning:     response.content_part.added, response.reasoning_text.delta ..., response.reasoning_text.done,
                     response.content_part.done
      function_call: response.function_call_arguments.delta ..., response.function_call_arguments.done
      response.output_item.done
    response.completed (response.incomplete when max_output_tokens cut the answer)

A failure after the first event is `error`, then `response.failed` with the response's `error`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from vlmserve.api.responses import codec, objects
from vlmserve.domain.types import ChatChunk, TokenLogprob, ToolCall, ToolCallDelta, Usage
from vlmserve.errors import VlmServeError
from vlmserve.wire.openai_answers import new_call_id

Kind = Literal["message", "reasoning", "function_call"]
Event = dict[str, Any]


@dataclass
class _Open:
    kind: Kind
    item_id: str
    index: int  # output_index
    pieces: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_index: int = -1
    call_id: str = ""
    name: str = ""


class ResponseEvents:
    def __init__(self, base: dict[str, Any]) -> None:
        self.base = base  # the envelope: status in_progress, no output yet
        self.output: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None  # the finished response, once completed / incomplete / failed
        self._seq = 0
        self._open: _Open | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self.base),
                self._event("response.in_progress", response=self.base)]  # fmt: skip

    def chunk(self, chunk: ChatChunk) -> list[Event]:
        out: list[Event] = []
        if chunk.reasoning:
            out += self._text("reasoning", chunk.reasoning, None)
        if chunk.text:
            out += self._text("message", chunk.text, chunk.logprobs)
        for delta in chunk.tool_calls:
            out += self._call(delta)
        return out

    def finish(self, finish_reason: str, usage: Usage) -> list[Event]:
        status, incomplete = codec.status_of(finish_reason)
        out: list[Event] = []
        if not self.output and self._open is None:  # nothing was said: still one (empty) message
            out += self._start_item("message")
        out += self._close("incomplete" if status == "incomplete" else "completed")
        self.final = {**self.base, "status": status, "incomplete_details": incomplete, "output": self.output,
                      "usage": codec.usage_object(usage),
                      "completed_at": int(time.time()) if status == "completed" else None}  # fmt: skip
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*out, self._event(kind, response=self.final)]

    def fail(self, exc: VlmServeError) -> list[Event]:
        out = self._close("incomplete")
        self.final = objects.failed(self.base, exc, self.output)
        error = self._event("error", code=exc.code or exc.type, message=exc.message, param=exc.param)
        return [*out, error, self._event("response.failed", response=self.final)]

    # --- items

    def _start_item(self, kind: Kind, delta: ToolCallDelta | None = None) -> list[Event]:
        index = len(self.output)
        if kind == "function_call":
            assert delta is not None
            opened = _Open(kind, codec.new_id("fc"), index, tool_index=delta.index, call_id=delta.id or new_call_id(),
                           name=delta.name or "")  # fmt: skip
            item = codec.call_item(opened.item_id, ToolCall(opened.call_id, opened.name, ""), "in_progress")
            self._open = opened
            return [self._event("response.output_item.added", output_index=index, item=item)]
        prefix = "msg" if kind == "message" else "rs"
        opened = _Open(kind, codec.new_id(prefix), index)
        self._open = opened
        if kind == "message":
            item, part = codec.message_item(opened.item_id, "", "in_progress"), codec.text_part("")
        else:
            item, part = codec.reasoning_item(opened.item_id, "", "in_progress"), {"type": "reasoning_text", "text": ""}
        return [
            self._event("response.output_item.added", output_index=index, item=item),
            self._event(
                "response.content_part.added", item_id=opened.item_id, output_index=index, content_index=0, part=part
            ),
        ]

    def _text(self, kind: Kind, text: str, logprobs: list[TokenLogprob] | None) -> list[Event]:
        out: list[Event] = []
        if self._open is None or self._open.kind != kind:
            out += self._close("completed")
            out += self._start_item(kind)
        opened = self._open
        assert opened is not None
        opened.pieces.append(text)
        where = {"item_id": opened.item_id, "output_index": opened.index, "content_index": 0}
        if kind == "message":
            opened.logprobs += logprobs or []
            out.append(self._event("response.output_text.delta", **where, delta=text,
                                   logprobs=codec.logprobs_list(logprobs)))  # fmt: skip
        else:
            out.append(self._event("response.reasoning_text.delta", **where, delta=text))
        return out

    def _call(self, delta: ToolCallDelta) -> list[Event]:
        out: list[Event] = []
        opened = self._open
        if opened is None or opened.kind != "function_call" or opened.tool_index != delta.index:
            out += self._close("completed")
            out += self._start_item("function_call", delta)
            opened = self._open
            assert opened is not None
        if delta.arguments:
            opened.pieces.append(delta.arguments)
            out.append(self._event("response.function_call_arguments.delta", item_id=opened.item_id,
                                   output_index=opened.index, delta=delta.arguments))  # fmt: skip
        return out

    def _close(self, status: str) -> list[Event]:
        opened, self._open = self._open, None
        if opened is None:
            return []
        text = "".join(opened.pieces)
        where = {"item_id": opened.item_id, "output_index": opened.index}
        if opened.kind == "function_call":
            arguments = text or "{}"
            item = codec.call_item(opened.item_id, ToolCall(opened.call_id, opened.name, arguments), "completed")
            events = [self._event("response.function_call_arguments.done", **where, name=opened.name,
                                  arguments=arguments)]  # fmt: skip
        elif opened.kind == "message":
            item = codec.message_item(opened.item_id, text, status, opened.logprobs or None)
            part = item["content"][0]
            events = [
                self._event(
                    "response.output_text.done", **where, content_index=0, text=text, logprobs=part["logprobs"]
                ),
                self._event("response.content_part.done", **where, content_index=0, part=part),
            ]
        else:
            item = codec.reasoning_item(opened.item_id, text, status)
            part = item["content"][0]
            events = [
                self._event("response.reasoning_text.done", **where, content_index=0, text=text),
                self._event("response.content_part.done", **where, content_index=0, part=part),
            ]
        self.output.append(item)
        return [*events, self._event("response.output_item.done", output_index=opened.index, item=item)]
