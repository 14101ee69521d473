"""What the fake upstreams answer, protocol by protocol: the OpenAI routes (`/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`, `/v1/models`, `/health`) and the Ollama routes (`/api/chat`, `/api/generate`,
`/api/embed`, `/api/version`, `/api/tags`), shaped by a `Behaviour` (tokens, delays, error status, instant mode).

`ProtocolAnswers` turns one request (method, path, JSON body) into an `Answer` (a whole body, or a stream of
pieces); the HTTP/1.1 transport around it (connections, faults, streaming writes) is `fake_upstreams.FakeUpstream`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import fake_agentic
import orjson

Body = dict[str, Any]


@dataclass
class Behaviour:
    tokens: int = 5  # tokens in every answer (capped by the request's max_tokens / num_predict)
    token_delay: float = 0.0  # seconds between streamed tokens
    initial_delay: float = 0.0  # seconds before the response status is sent
    error_status: int | None = None  # answer every inference request with this status
    instant: bool = False  # no delays; whole stream bodies in one write (benchmark mode)
    embedding_dim: int = 8
    fault_rate: float = 0.0  # fraction of inference requests that get one of `faults` (at random)
    faults: tuple[str, ...] = ("reset", "500", "stall")
    stall_seconds: float = 30.0  # a "stall" keeps silent this long unless the client leaves first
    seed: int | None = None  # for the fault draws
    cut_after: int | None = None  # a streamed answer's connection is dropped after this many pieces (mid-stream)


def token_text(index: int) -> str:
    return f"tok{index} "


def expected_text(count: int) -> str:
    return "".join(token_text(i) for i in range(count))


def fake_embedding(text: str, dim: int = 8) -> list[float]:
    """Deterministic vector for `text` (what the fake answers, for assertions)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255.0, 6) for i in range(dim)]


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class ProtocolAnswers:
    """The routes of both protocols; `behaviour` (mutable) shapes every answer."""

    behaviour: Behaviour

    async def _answer(self, method: str, path: str, body: Body) -> Answer:
        get_routes: dict[str, Callable[[], Body]] = {
            "/health": lambda: {"status": "ok"},
            "/v1/models": lambda: {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]},
            "/api/version": lambda: {"version": "0.12.0"},
            "/api/tags": lambda: {"models": [{"name": "fake:latest", "model": "fake:latest", "size": 1}]},
        }
        post_routes: dict[str, Callable[[Body], Answer]] = {
            "/v1/chat/completions": lambda b: self._openai_generate(b, chat=True),
            "/v1/completions": lambda b: self._openai_generate(b, chat=False),
            "/v1/embeddings": self._openai_embed,
            "/api/chat": lambda b: self._ollama_generate(b, key="message"),
            "/api/generate": lambda b: self._ollama_generate(b, key="response"),
            "/api/embed": self._ollama_embed,
        }
        if method == "GET" and path in get_routes:
            return Answer(body=orjson.dumps(get_routes[path]()))
        if method != "POST" or path not in post_routes:
            return Answer(404, orjson.dumps({"error": f"no route {method} {path}"}))
        b = self.behaviour
        if b.initial_delay and not b.instant:
            await asyncio.sleep(b.initial_delay)
        if b.error_status is not None:
            return self._error(path, b.error_status)
        generating = path.startswith("/v1/") and "embed" not in path
        if b.token_delay and not b.instant and not body.get("stream") and generating:
            n, _ = self._count(body.get("max_tokens") or body.get("max_completion_tokens"))
            await asyncio.sleep(b.token_delay * n)  # a non-streaming answer takes as long as its tokens
        return post_routes[path](body)

    def _error(self, path: str, status: int) -> Answer:
        message = f"fake upstream error {status}"
        payload: Body = (
            {"error": message}
            if path.startswith("/api/")
            else {"error": {"message": message, "type": "server_error", "param": None, "code": str(status)}}
        )
        headers = {"Retry-After": "2"} if status == 429 else {}
        return Answer(status, orjson.dumps(payload), headers=headers)

    def _count(self, limit: Any) -> tuple[int, str]:
        n = self.behaviour.tokens
        return (limit, "length") if isinstance(limit, int) and 0 < limit < n else (n, "stop")

    async def _tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            if self.behaviour.token_delay and not self.behaviour.instant:
                await asyncio.sleep(self.behaviour.token_delay)
            yield token_text(i)

    def _stream(self, pieces: Callable[[], AsyncIterator[bytes]], content_type: str) -> Answer:
        if not self.behaviour.instant:
            return Answer(stream=pieces, content_type=content_type)

        async def one_write() -> AsyncIterator[bytes]:
            yield b"".join([piece async for piece in pieces()])

        return Answer(stream=one_write, content_type=content_type)

    def _openai_generate(self, body: Body, *, chat: bool) -> Answer:
        n, reason = self._count(body.get("max_tokens") or body.get("max_completion_tokens"))
        model, prompt_tokens = str(body.get("model", "fake")), _words(body.get("messages") or body.get("prompt"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        base: Body = {"id": "chatcmpl-fake" if chat else "cmpl-fake", "created": int(time.time()), "model": model}
        if chat and fake_agentic.applies(body):
            return self._openai_agentic(body, base, n, usage)
        if not body.get("stream"):
            text = expected_text(n)
            answer = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            choice: Body = {"index": 0, "finish_reason": reason, **answer}
            obj = "chat.completion" if chat else "text_completion"
            return Answer(body=orjson.dumps({**base, "object": obj, "choices": [choice], "usage": usage}))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(text: str | None, finish: str | None, first: bool = False) -> bytes:
            if chat:
                delta: Body = {"role": "assistant", "content": ""} if first else {}
                if text:
                    delta["content"] = text
                choice: Body = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": text or "", "finish_reason": finish}
            return b"data: " + orjson.dumps({**base, "object": obj, "choices": [choice]}) + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            if chat:
                yield chunk(None, None, first=True)
            async for text in self._tokens(n):
                yield chunk(text, None)
            yield chunk(None, reason)
            if include_usage:
                yield b"data: " + orjson.dumps({**base, "object": obj, "choices": [], "usage": usage}) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return self._stream(events, "text/event-stream")

    def _openai_agentic(self, body: Body, base: Body, n: int, usage: Body) -> Answer:
        texts = [token_text(i) for i in range(n)]
        if not body.get("stream"):
            answer, reason = fake_agentic.openai_answer(body, texts)
            choice = {"index": 0, "finish_reason": reason, **answer}
            return Answer(body=orjson.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage}))
        choices, reason = fake_agentic.openai_deltas(body, texts)
        choices.append({"index": 0, "delta": {}, "finish_reason": reason})
        events = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in choices]
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})

        async def pieces() -> AsyncIterator[bytes]:
            for event in events:
                yield b"data: " + orjson.dumps(event) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return self._stream(pieces, "text/event-stream")

    def _openai_embed(self, body: Body) -> Answer:
        inputs, vectors = self._embed(body)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": _words(inputs), "total_tokens": _words(inputs)}
        return Answer(body=orjson.dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage}))

    def _embed(self, body: Body) -> tuple[list[str], list[list[float]]]:
        raw = body.get("input", [])
        inputs = [raw] if isinstance(raw, str) else [str(t) for t in raw]
        return inputs, [fake_embedding(t, self.behaviour.embedding_dim) for t in inputs]

    def _ollama_generate(self, body: Body, *, key: str) -> Answer:
        n, reason = self._count((body.get("options") or {}).get("num_predict"))
        model, prompt_tokens = str(body.get("model", "fake")), _words(body.get("messages") or body.get("prompt"))

        def line(text: str, done: bool) -> Body:
            out: Body = {"model": model, "created_at": "2025-01-01T00:00:00Z", "done": done}
            out[key] = {"role": "assistant", "content": text} if key == "message" else text
            if done:
                out.update(
                    done_reason=reason,
                    total_duration=10**6,
                    load_duration=0,
                    prompt_eval_count=prompt_tokens,
                    prompt_eval_duration=10**5,
                    eval_count=n,
                    eval_duration=9 * 10**5,
                )
            return out

        if fake_agentic.applies(body):
            extra = fake_agentic.ollama_messages(body, [token_text(i) for i in range(n)], key)
            parts = [{**line("", False), **e} for e in extra] + [line("", True)]
            if body.get("stream") is False:  # one object: the parts put together, as Ollama does
                return Answer(body=orjson.dumps(fake_agentic.ollama_merged(parts, key)))

            async def agentic() -> AsyncIterator[bytes]:
                for item in parts:
                    yield orjson.dumps(item) + b"\n"

            return self._stream(agentic, "application/x-ndjson")
        if body.get("stream") is False:
            return Answer(body=orjson.dumps(line(expected_text(n), True)))

        async def lines() -> AsyncIterator[bytes]:
            async for text in self._tokens(n):
                yield orjson.dumps(line(text, False)) + b"\n"
            yield orjson.dumps(line("", True)) + b"\n"

        return self._stream(lines, "application/x-ndjson")

    def _ollama_embed(self, body: Body) -> Answer:
        inputs, vectors = self._embed(body)
        stats = {"total_duration": 1000, "load_duration": 0, "prompt_eval_count": _words(inputs)}
        return Answer(body=orjson.dumps({"model": body.get("model"), "embeddings": vectors, **stats}))


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0
