"""A forced tool call (`tool_choice` "required" or a named function) made certain by a grammar (llama.cpp) or
a JSON-schema `format` (Ollama, which has no tool_choice).

llama.cpp's own parser lets a model write prose before the call even when one is required, and a small model
(SmolLM2) then never calls. So a forced call is asked as JSON constrained by a schema, `{"name": <one of the
allowed tools>, "arguments": <its parameters>}`, with the tools still in the prompt (`tool_choice` "none"
keeps them in the chat template); the answer is read back here as a tool call, streamed as OpenAI streams
one: id and name first (as soon as the name is complete), then the arguments in pieces.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from vlmserve.domain.types import ChatChunk, FinishReason, ToolCallDelta, Tools
from vlmserve.errors import EngineError
from vlmserve.wire.openai_answers import new_call_id

_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"\s*\}?\s*$")  # what may be the end of the outer object: held back until the end


def call_schema(tools: Tools) -> dict[str, Any]:
    def one(name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
        arguments = parameters if parameters else {"type": "object"}
        return {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"],
        }

    options = [one(t.name, t.parameters) for t in tools.allowed()]
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_body(body: dict[str, Any], tools: Tools) -> dict[str, Any]:
    """llama.cpp (OpenAI form): the tools stay in the prompt, the answer follows the call's schema."""
    out = {**body, "tool_choice": "none", "json_schema": call_schema(tools)}
    out.pop("response_format", None)  # the call is the answer
    out.pop("parallel_tool_calls", None)
    return out


class _Reader:
    """Turns the streamed JSON text of one call into tool-call deltas."""

    def __init__(self) -> None:
        self.text = ""
        self.sent = 0  # characters of the arguments already sent
        self.args_at: int | None = None  # where the arguments begin in `text`
        self.call_id = new_call_id()

    def feed(self, piece: str) -> list[ToolCallDelta]:
        self.text += piece
        out: list[ToolCallDelta] = []
        if self.args_at is None:
            head = _HEAD.match(self.text)
            if head is None:
                return out
            self.args_at = head.end()
            name = orjson.loads(f'"{head.group(1)}"')
            out.append(ToolCallDelta(index=0, id=self.call_id, name=name, arguments=""))
        body = self.text[self.args_at :]
        ready = len(body) - len(_TAIL.search(body).group(0))  # type: ignore[union-attr]
        if ready > self.sent:
            out.append(ToolCallDelta(index=0, arguments=body[self.sent : ready]))
            self.sent = ready
        return out

    def finish(self, engine: str) -> None:
        try:
            parsed = orjson.loads(self.text)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"{engine}: the forced tool call is not valid JSON") from exc
        if not isinstance(parsed, dict) or "name" not in parsed:
            raise EngineError(f"{engine}: the forced tool call has no function name")


async def as_tool_call(chunks: AsyncIterator[ChatChunk], engine: str) -> AsyncIterator[ChatChunk]:
    """The engine's JSON answer as one tool call; finish_reason "tool_calls" (or "length" when cut short)."""
    reader = _Reader()
    native = False  # an engine that parsed the call itself (Ollama, for models whose call format is JSON)
    async for chunk in chunks:
        native = native or bool(chunk.tool_calls)
        if native:
            if chunk.finish_reason not in (None, "length"):
                chunk.finish_reason = "tool_calls"
            yield chunk
            continue
        deltas = reader.feed(chunk.text) if chunk.text else []
        if chunk.finish_reason is None:
            if deltas or chunk.logprobs:
                yield ChatChunk(tool_calls=deltas, logprobs=chunk.logprobs)
            continue
        if chunk.finish_reason != "length":
            reader.finish(engine)
            body = reader.text[reader.args_at or 0 :]
            end = body.rstrip().removesuffix("}")  # the outer object's end
            if len(end.rstrip()) > reader.sent:
                deltas.append(ToolCallDelta(index=0, arguments=end.rstrip()[reader.sent :]))
        finish: FinishReason = "length" if chunk.finish_reason == "length" else "tool_calls"
        yield ChatChunk(tool_calls=deltas, logprobs=chunk.logprobs, finish_reason=finish, usage=chunk.usage)
