"""Client for a remote Ollama server through its native API (/api/chat, /api/generate, /api/embed)."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson

from vlmserve.backends import forced_tools
from vlmserve.backends.base import BackendStats
from vlmserve.backends.http_client import EngineHTTP, stream_event
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    ChatChunk,
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    SamplingParams,
    TokenLogprob,
    ToolCallDelta,
    Usage,
    coalesced,
)
from vlmserve.errors import EngineError
from vlmserve.wire import openai_codec as codec
from vlmserve.wire.openai_answers import new_call_id


def _options(sampling: SamplingParams) -> dict[str, Any]:
    mapping = {
        "num_predict": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "seed": sampling.seed,
        "repeat_penalty": sampling.repeat_penalty,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    options: dict[str, Any] = {key: value for key, value in mapping.items() if value is not None}
    if sampling.stop:
        options["stop"] = sampling.stop
    return options


def _format(fmt: ResponseFormat) -> Any:
    if fmt.kind == "json":
        return "json"
    if fmt.kind == "json_schema":
        return fmt.schema or {}
    return None


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    images = [p for p in message.parts if isinstance(p, ImagePart)]
    if images:
        out["images"] = [base64.b64encode(p.data).decode("ascii") for p in images]
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"index": i, "name": c.name, "arguments": _arguments_object(c.arguments)}}
            for i, c in enumerate(message.tool_calls)
        ]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    if message.thinking:
        out["thinking"] = message.thinking
    return out


def _arguments_object(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"value": text}


def _agentic(body: dict[str, Any], request: ChatRequest) -> tuple[dict[str, Any], bool]:
    """Tools, think and logprobs in Ollama's form; True when a call is forced (Ollama has no tool_choice: the
    answer is constrained by a `format` schema of the call instead, and read back as the call)."""
    tools = request.tools
    forced = tools is not None and tools.forced
    if tools is not None and tools.choice != "none":  # "none": the model is not shown the tools
        body["tools"] = [codec.tool_to_wire(t) for t in tools.specs]
    if forced and tools is not None:
        body["format"] = forced_tools.call_schema(tools)
    if request.think is not None:
        body["think"] = request.think
    if request.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = request.logprobs
    return body, forced


def _tool_deltas(raw: Any, start: int) -> list[ToolCallDelta]:
    deltas = []
    for i, call in enumerate(raw if isinstance(raw, list) else []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        text = arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode()
        call_id = call.get("id") or new_call_id()
        deltas.append(ToolCallDelta(index=start + i, id=call_id, name=str(function.get("name", "")), arguments=text))
    return deltas


def _logprobs(raw: Any) -> list[TokenLogprob] | None:
    if not isinstance(raw, list):
        return None
    return [
        TokenLogprob(
            str(item.get("token", "")),
            float(item.get("logprob") or 0.0),
            tuple((str(t.get("token", "")), float(t.get("logprob") or 0.0)) for t in item.get("top_logprobs") or []),
        )
        for item in raw
        if isinstance(item, dict)
    ]


def _keep_alive(seconds: float | None) -> Any:
    if seconds is None:
        return None
    return -1 if math.isinf(seconds) else seconds


class OllamaBackend:
    def __init__(self, spec: ModelSpec, base_url: str) -> None:
        self.spec = spec
        self._root = base_url.rstrip("/")
        self._remote_model = spec.remote_model or spec.name
        self._http = EngineHTTP(spec.name, connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout)
        self._started = False

    @property
    def loaded(self) -> bool:
        return self._started

    @property
    def memory_bytes(self) -> int | None:
        return None

    def stats(self) -> BackendStats | None:
        return None  # one engine: its health is health()

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def aclose(self) -> None:
        await self._http.aclose()

    async def health(self) -> bool:
        return await self._http.probe(f"{self._root}/api/version")

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {
            "model": self._remote_model,
            "messages": [_message(m) for m in request.messages],
            "stream": True,
            "options": _options(request.sampling),
        }
        body = self._with_extras(body, request.response_format, request.keep_alive)
        body, forced = _agentic(body, request)
        chunks = self._stream("/api/chat", body)
        return forced_tools.as_tool_call(chunks, self.spec.name) if forced else chunks

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {
            "model": self._remote_model,
            "prompt": request.prompt,
            "raw": request.suffix is None,  # with a suffix, the model's template puts the fill-in-the-middle together
            "stream": True,
            "options": _options(request.sampling),
        }
        if request.suffix is not None:
            body["suffix"] = request.suffix
        if request.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        return self._stream("/api/generate", self._with_extras(body, ResponseFormat(), request.keep_alive))

    @staticmethod
    def _with_extras(body: dict[str, Any], fmt: ResponseFormat, keep_alive: float | None) -> dict[str, Any]:
        if (wire_format := _format(fmt)) is not None:
            body["format"] = wire_format
        if (alive := _keep_alive(keep_alive)) is not None:
            body["keep_alive"] = alive
        return body

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        body: dict[str, Any] = {"model": self._remote_model, "input": request.inputs, "truncate": request.truncate}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data = await self._http.post_json(f"{self._root}/api/embed", body)
        try:
            return EmbedResult(vectors=data["embeddings"], prompt_tokens=int(data.get("prompt_eval_count", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"{self.spec.name}: Ollama sent a malformed embed answer") from exc

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[ChatChunk]:
        final: ChatChunk | None = None
        calls = 0  # tool calls seen so far: each one's index
        async for lines in self._http.stream_blocks(f"{self._root}{path}", body):
            pieces: list[ChatChunk] = []
            for line in lines:
                if final is not None:
                    continue  # read to the end so the connection returns to the keep-alive pool
                event = stream_event(line, self.spec.name, "Ollama")
                message = event.get("message") or {}
                text = message.get("content") or event.get("response") or ""
                thinking = message.get("thinking") or event.get("thinking") or ""
                tool_calls = _tool_deltas(message.get("tool_calls"), calls)
                calls += len(tool_calls)
                piece = ChatChunk(
                    text=text, reasoning=thinking, tool_calls=tool_calls, logprobs=_logprobs(event.get("logprobs"))
                )
                if piece.has_output or piece.logprobs:
                    pieces.append(piece)
                if event.get("done"):
                    reason: FinishReason = "length" if event.get("done_reason") == "length" else "stop"
                    reason = "tool_calls" if calls and reason == "stop" else reason
                    usage = Usage(int(event.get("prompt_eval_count", 0)), int(event.get("eval_count", 0)))
                    phases = (int(event.get("prompt_eval_duration") or 0), int(event.get("eval_duration") or 0))
                    final = ChatChunk(finish_reason=reason, usage=usage, engine_timings=phases if phases[1] else None)
            for piece in coalesced(pieces):
                yield piece
        if final is None:
            raise EngineError(f"{self.spec.name}: Ollama stream ended before done")
        yield final
