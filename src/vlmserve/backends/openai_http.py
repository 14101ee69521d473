"""Client for OpenAI-compatible engines: local runners and remote vLLM / llama.cpp server / LM Studio / OpenAI.

Streaming requests stream from the engine; non-streaming ones ask for one JSON answer (less parsing per
token). Closing the returned iterator closes the HTTP connection, which makes llama.cpp and vLLM abort.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from vlmserve.backends import forced_tools
from vlmserve.backends.affinity import prefix_keys
from vlmserve.backends.base import BackendStats
from vlmserve.backends.http_client import EngineHTTP, stream_event
from vlmserve.backends.slots import SlotChooser
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    ChatChunk,
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    TokenLogprob,
    Usage,
    coalesced,
)
from vlmserve.errors import EngineError
from vlmserve.wire import openai_codec as codec
from vlmserve.wire.openai_answers import choice_to_chunk, timings_from_wire, usage_from_wire


async def _without_rivals(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    async for chunk in chunks:
        if chunk.logprobs:
            chunk.logprobs = [TokenLogprob(item.token, item.logprob) for item in chunk.logprobs]
        yield chunk


class OpenAICompatibleBackend:
    """Talks OpenAI's HTTP API; `base_url` ends before `/v1` or includes it (both accepted)."""

    def __init__(self, spec: ModelSpec, base_url: str, *, api_key: str | None = None) -> None:
        self.spec = spec
        root = base_url.rstrip("/")
        self._v1 = root if root.endswith("/v1") else f"{root}/v1"
        self._root = self._v1[: -len("/v1")]
        self._remote_model = spec.remote_model or spec.name
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = EngineHTTP(
            spec.name, connect_timeout=spec.connect_timeout, read_timeout=spec.read_timeout, headers=headers
        )
        self._started = False
        # our llama.cpp runners with several slots: a conversation keeps its slot's KV cache (slots.py)
        self._slots = SlotChooser(spec.parallel) if spec.engine == "llamacpp" and spec.parallel > 1 else None

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
        return await self._http.probe(f"{self._root}/health") or await self._http.probe(f"{self._v1}/models")

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        body = codec.chat_body(request, self._remote_model)
        # llama.cpp lets a model write prose where a call is required: a forced call is grammar-constrained JSON
        forced = self.spec.engine == "llamacpp" and request.tools is not None and request.tools.forced
        if forced and request.tools is not None:
            body = forced_tools.forced_body(body, request.tools)
        bare = self._bare_logprobs(body, request.logprobs, "top_logprobs")
        chunks = self._answer("/chat/completions", body, request, chat=True)
        chunks = _without_rivals(chunks) if bare else chunks
        return forced_tools.as_tool_call(chunks, self.spec.name) if forced else chunks

    def _bare_logprobs(self, body: dict[str, Any], logprobs: int | None, key: str) -> bool:
        """llama.cpp gives no logprobs at all when asked for 0 rivals: ask for 1, and drop it on the way back."""
        if self.spec.engine != "llamacpp" or logprobs != 0:
            return False
        body[key] = 1
        return True

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        body = codec.completion_body(request, self._remote_model)
        bare = self._bare_logprobs(body, request.logprobs, "logprobs")
        chunks = self._answer("/completions", body, request, chat=False)
        return _without_rivals(chunks) if bare else chunks

    def _answer(
        self, path: str, body: dict[str, Any], request: ChatRequest | CompletionRequest, *, chat: bool
    ) -> AsyncIterator[ChatChunk]:
        if self._slots is None:
            return self._stream(path, body, chat=chat) if request.stream else self._once(path, body, chat=chat)
        return self._on_slot(path, body, request, chat=chat)

    async def _on_slot(
        self, path: str, body: dict[str, Any], request: ChatRequest | CompletionRequest, *, chat: bool
    ) -> AsyncIterator[ChatChunk]:
        """The answer from the llama.cpp slot that holds the longest prefix of this prompt (slots.py)."""
        assert self._slots is not None
        keys = prefix_keys(request)
        slot = self._slots.take(keys)  # taken when the answer is first read: one never read holds no slot
        if slot is not None:
            body = {**body, "id_slot": slot}
        try:
            answer = self._stream(path, body, chat=chat) if request.stream else self._once(path, body, chat=chat)
            async for chunk in answer:
                yield chunk
        finally:
            if slot is not None:
                self._slots.release(slot, keys)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        inputs: list[str] | list[list[int]] = request.inputs if request.token_ids is None else request.token_ids
        body: dict[str, Any] = {"model": self._remote_model, "input": inputs}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data = await self._http.post_json(f"{self._v1}/embeddings", body)
        try:
            rows = sorted(data["data"], key=lambda row: row.get("index", 0))
            vectors = [list(map(float, row["embedding"])) for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"{self.spec.name}: engine sent a malformed embeddings answer") from exc
        usage = usage_from_wire(data.get("usage"))
        return EmbedResult(vectors=vectors, prompt_tokens=usage.prompt_tokens if usage else 0)

    async def _once(self, path: str, body: dict[str, Any], *, chat: bool) -> AsyncIterator[ChatChunk]:
        body = {**body, "stream": False}
        body.pop("stream_options", None)
        data = await self._http.post_json(f"{self._v1}{path}", body)
        try:
            answer = choice_to_chunk(data["choices"][0], chat=chat, streamed=False)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise EngineError(f"{self.spec.name}: engine sent a malformed answer") from exc
        finish = answer.finish_reason or "stop"
        answer.finish_reason = None
        if answer.has_output or answer.logprobs:
            yield answer
        usage = usage_from_wire(data.get("usage")) or Usage()
        yield ChatChunk(finish_reason=finish, usage=usage, engine_timings=timings_from_wire(data.get("timings")))

    async def _stream(self, path: str, body: dict[str, Any], *, chat: bool) -> AsyncIterator[ChatChunk]:
        usage: Usage | None = None
        timings: tuple[int, int] | None = None
        finish: ChatChunk | None = None
        done = False
        async for lines in self._http.stream_blocks(f"{self._v1}{path}", body):
            pieces: list[ChatChunk] = []
            for line in lines:
                # keep reading after [DONE]: only a fully read response returns its connection to the pool
                if done or not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                event = stream_event(payload, self.spec.name)
                usage = usage_from_wire(event.get("usage")) or usage
                timings = timings_from_wire(event.get("timings")) or timings
                for choice in event.get("choices") or ():
                    try:
                        piece = choice_to_chunk(choice, chat=chat, streamed=True)
                    except (TypeError, AttributeError, ValueError) as exc:
                        raise EngineError(f"{self.spec.name}: engine sent a malformed stream chunk") from exc
                    reason, piece.finish_reason = piece.finish_reason, None
                    if piece.has_output or piece.logprobs:
                        pieces.append(piece)
                    if reason is not None:
                        finish = ChatChunk(finish_reason=reason)
            for piece in coalesced(pieces):
                yield piece
        if finish is None:
            raise EngineError(f"{self.spec.name}: engine stream ended without a finish reason")
        finish.usage = usage or Usage()
        finish.engine_timings = timings
        yield finish
