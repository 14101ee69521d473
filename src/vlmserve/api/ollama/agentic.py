"""Ollama's tools, thinking and logprobs <-> domain (pure functions used by the Ollama adapter and routes).

Ollama's tool calls carry arguments as an object and a tool result names its function (`tool_name`), not a
call id: ids are made here (`call_<message>_<n>`) and each tool message is linked to the earliest unanswered
call of its function (else the next unanswered call), so OpenAI-compatible engines get `tool_call_id`s.
"""

from __future__ import annotations

from typing import Any

import orjson

from vlmserve.api.ollama import protocol as p
from vlmserve.domain.types import Message, ThinkLevel, TokenLogprob, ToolCall, Tools, ToolSpec


def tools(raw: list[p.Tool] | None) -> Tools | None:
    if not raw:
        return None
    return Tools(specs=[ToolSpec(t.function.name, t.function.description or "", t.function.parameters) for t in raw])


_LEVELS: dict[str, ThinkLevel] = {"low": "low", "medium": "medium", "high": "high"}


def think(raw: bool | str | None) -> bool | ThinkLevel | None:
    return raw if isinstance(raw, bool) else _LEVELS.get(raw or "")


def logprobs(asked: bool | None, top: int | None) -> int | None:
    return (top or 0) if asked else None


def _arguments(raw: dict[str, Any] | str) -> str:
    return raw if isinstance(raw, str) else orjson.dumps(raw).decode()


def calls_in(index: int, message: p.ChatMessage) -> list[ToolCall]:
    return [
        ToolCall(id=c.id or f"call_{index}_{j}", name=c.function.name, arguments=_arguments(c.function.arguments))
        for j, c in enumerate(message.tool_calls or [])
    ]


def link_tool_results(messages: list[Message]) -> None:
    """Give each tool message the id of the call it answers (by function name, else in order)."""
    pending: list[ToolCall] = []
    for message in messages:
        if message.role == "assistant":
            pending = list(message.tool_calls)
        elif message.role == "tool" and message.tool_call_id is None and pending:
            match = next((c for c in pending if c.name == message.name), pending[0])
            pending.remove(match)
            message.tool_call_id = match.id
            message.name = message.name or match.name


def arguments_object(text: str) -> dict[str, Any]:
    """An engine's JSON arguments as the object Ollama sends (text that is no object is kept under `value`)."""
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"value": text}
    return value if isinstance(value, dict) else {"value": value}


def calls_out(calls: list[ToolCall], start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "function": {"index": start + i, "name": c.name, "arguments": arguments_object(c.arguments)}}
        for i, c in enumerate(calls)
    ]


def logprobs_out(items: list[TokenLogprob] | None) -> list[dict[str, Any]] | None:
    if items is None:
        return None
    return [
        {
            "token": item.token,
            "logprob": item.logprob,
            "top_logprobs": [{"token": t, "logprob": lp} for t, lp in item.top],
        }
        for item in items
    ]
