"""Client for a remote Ollama server through its native API (/api/chat, /api/generate, /api/embed)."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from typing import Any

import orjson

from vlmserve.backends.http_client import EngineHTTP
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
    Usage,
)
from vlmserve.errors import EngineError


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
    return out


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
        return self._stream("/api/chat", self._with_extras(body, request.response_format, request.keep_alive))

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        body: dict[str, Any] = {
            "model": self._remote_model,
            "prompt": request.prompt,
            "raw": True,
            "stream": True,
            "options": _options(request.sampling),
        }
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
        async for line in self._http.stream_lines(f"{self._root}{path}", body):
            if final is not None:
                continue  # read to the end so the connection returns to the keep-alive pool
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise EngineError(f"{self.spec.name}: Ollama sent malformed stream data") from exc
            if "error" in event:
                raise EngineError(f"{self.spec.name}: {event['error']}")
            text = (event.get("message") or {}).get("content") or event.get("response") or ""
            if text:
                yield ChatChunk(text=text)
            if event.get("done"):
                reason: FinishReason = "length" if event.get("done_reason") == "length" else "stop"
                usage = Usage(int(event.get("prompt_eval_count", 0)), int(event.get("eval_count", 0)))
                final = ChatChunk(finish_reason=reason, usage=usage)
        if final is None:
            raise EngineError(f"{self.spec.name}: Ollama stream ended before done")
        yield final
