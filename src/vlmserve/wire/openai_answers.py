"""OpenAI answers and stream chunks <-> domain: the one encoder (public routes and runners) and the one decoder
(what the HTTP backend reads from runners and remote OpenAI-compatible engines).

Streamed tool calls go as OpenAI sends them: the first delta of a call carries its `index`, `id`, `type` and
`function.name` (arguments ""), later deltas carry `function.arguments` in pieces; the last chunk has
`finish_reason: "tool_calls"`. Reasoning goes as `reasoning_content` (llama.cpp, DeepSeek) and `reasoning`
(vLLM), in answers and deltas alike.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from vlmserve.domain.types import (
    ChatChunk,
    ChatResult,
    FinishReason,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

# --- domain -> wire ---


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _token(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", "surrogatepass"))}


def chat_logprobs(items: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if items is None:
        return None
    content = [
        {**_token(item.token, item.logprob), "top_logprobs": [_token(t, lp) for t, lp in item.top]} for item in items
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(items: list[TokenLogprob] | None, offset: int = 0) -> dict[str, Any] | None:
    """The legacy /v1/completions shape: parallel lists of tokens, logprobs, top maps and text offsets."""
    if items is None:
        return None
    offsets, at = [], offset
    for item in items:
        offsets.append(at)
        at += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [dict(item.top) for item in items],
        "text_offset": offsets,
    }


def tool_calls_to_wire(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def chat_completion(rid: str, model: str, result: ChatResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.tool_calls:
        message["content"] = result.text or None
        message["tool_calls"] = tool_calls_to_wire(result.tool_calls)
    if result.reasoning:
        message["reasoning_content"] = message["reasoning"] = result.reasoning
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": chat_logprobs(result.logprobs),
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_dict(result.usage),
    }


def completion(rid: str, model: str, result: ChatResult) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": result.text,
        "logprobs": completion_logprobs(result.logprobs),
        "finish_reason": result.finish_reason,
    }
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage_dict(result.usage),
    }


class ChunkEncoder:
    """ChatChunks -> OpenAI stream chunk objects (`chat.completion.chunk`, or `text_completion` when not chat)."""

    def __init__(self, rid: str, model: str, *, chat: bool = True) -> None:
        self.rid, self.model, self.chat = rid, model, chat
        self.created = int(time.time())
        self._first = True
        self._offset = 0

    def _object(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def _delta(self, chunk: ChatChunk) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if self._first:
            delta["role"] = "assistant"
            delta["content"] = chunk.text or (None if chunk.tool_calls else "")
            self._first = False
        elif chunk.text:
            delta["content"] = chunk.text
        if chunk.reasoning:
            delta["reasoning_content"] = delta["reasoning"] = chunk.reasoning
        if chunk.tool_calls:
            delta["tool_calls"] = [_call_delta(d) for d in chunk.tool_calls]
        return delta

    def encode(self, chunk: ChatChunk) -> list[dict[str, Any]]:
        """The stream objects for one chunk: its output (if any), then its finish (if any)."""
        out: list[dict[str, Any]] = []
        if chunk.has_output or (self.chat and self._first and chunk.finish_reason is None):
            out.append(self._object([self._choice(chunk, output=True)]))
        if chunk.finish_reason is not None:
            if self.chat and self._first:  # nothing was said at all: the role still comes first
                out.append(self._object([self._choice(ChatChunk(), output=True)]))
            out.append(self._object([self._choice(chunk, output=False)]))
        return out

    def _choice(self, chunk: ChatChunk, *, output: bool) -> dict[str, Any]:
        finish = None if output else chunk.finish_reason
        logprobs = chunk.logprobs if output else None
        if not self.chat:
            text = chunk.text if output else ""
            choice = {"index": 0, "text": text, "logprobs": completion_logprobs(logprobs, self._offset)}
            self._offset += len(text)
            return {**choice, "finish_reason": finish}
        delta = self._delta(chunk) if output else {}
        return {"index": 0, "delta": delta, "logprobs": chat_logprobs(logprobs), "finish_reason": finish}

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {**self._object([]), "usage": usage_dict(usage)}


def _call_delta(delta: ToolCallDelta) -> dict[str, Any]:
    out: dict[str, Any] = {"index": delta.index}
    function: dict[str, Any] = {"arguments": delta.arguments}
    if delta.id is not None or delta.name is not None:
        out["id"] = delta.id or new_call_id()
        out["type"] = "function"
        function = {"name": delta.name or "", "arguments": delta.arguments}
    out["function"] = function
    return out


# --- wire -> domain ---


def finish_reason_from_wire(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if value in ("tool_calls", "function_call"):
        return "tool_calls"
    return "length" if value == "length" else "stop"


def usage_from_wire(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def timings_from_wire(raw: Any) -> tuple[int, int] | None:
    """llama.cpp's (and our runners') `timings`: prompt and generation phases in ms, as ns."""
    if not isinstance(raw, dict) or "predicted_ms" not in raw:
        return None
    try:
        return int(float(raw.get("prompt_ms") or 0) * 1e6), int(float(raw["predicted_ms"]) * 1e6)
    except (TypeError, ValueError):
        return None


def logprobs_from_wire(raw: Any) -> list[TokenLogprob] | None:
    """Chat (`{"content": [...]}`) or legacy completions (`{"tokens", "token_logprobs", "top_logprobs"}`)."""
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("content"), list):
        return [
            TokenLogprob(
                str(item.get("token", "")),
                float(item.get("logprob") or 0.0),
                tuple(
                    (str(t.get("token", "")), float(t.get("logprob") or 0.0)) for t in item.get("top_logprobs") or []
                ),
            )
            for item in raw["content"]
            if isinstance(item, dict)
        ]
    tokens, values = raw.get("tokens") or [], raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    return [
        TokenLogprob(str(tok), float(lp or 0.0), tuple((str(k), float(v)) for k, v in (top or {}).items()))
        for tok, lp, top in zip(tokens, values, tops, strict=False)
    ]


def tool_call_deltas(raw: Any) -> list[ToolCallDelta]:
    """Streamed deltas (with `index`) or an answer's whole calls (without: their position is the index)."""
    deltas: list[ToolCallDelta] = []
    for position, item in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(item, dict):
            continue
        function = item.get("function") or {}
        arguments = function.get("arguments") or ""
        deltas.append(
            ToolCallDelta(
                index=int(item.get("index", position)),
                id=item.get("id") or None,
                name=function.get("name") or None,
                arguments=arguments if isinstance(arguments, str) else _dumps(arguments),
            )
        )
    return deltas


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def choice_to_chunk(choice: dict[str, Any], *, chat: bool, streamed: bool) -> ChatChunk:
    """One choice of a stream chunk (`delta`) or of an answer (`message`; `text` when not chat)."""
    finish = finish_reason_from_wire(choice.get("finish_reason"))
    logprobs = logprobs_from_wire(choice.get("logprobs"))
    if not chat:
        return ChatChunk(text=str(choice.get("text") or ""), finish_reason=finish, logprobs=logprobs)
    body = choice.get("delta" if streamed else "message") or {}
    return ChatChunk(
        text=str(body.get("content") or ""),
        reasoning=str(body.get("reasoning_content") or body.get("reasoning") or ""),
        tool_calls=tool_call_deltas(body.get("tool_calls")),
        finish_reason=finish,
        logprobs=logprobs,
    )
