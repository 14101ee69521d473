"""Small, real HTTP servers speaking the OpenAI and Ollama protocols, for tests and benchmarks.

`FakeUpstream`: an asyncio HTTP/1.1 server (keep-alive, chunked streaming) on a free loopback port, in a
background thread (`with FakeUpstream() as fake:`) or its own process (`python tests/fake_upstreams.py
--instant` prints `READY <url>`, serves until SIGTERM). Every instance serves both protocols:
OpenAI `POST /v1/chat/completions|completions|embeddings` (SSE or JSON), `GET /v1/models`, `GET /health`;
Ollama `POST /api/chat|generate` (NDJSON or JSON), `POST /api/embed`, `GET /api/version`, `GET /api/tags`.
`behaviour` (mutable) sets token count, delays, an error status, a stream cut mid-way (`cut_after`) and `instant`
mode; request bodies are recorded (`last_body(path)`) and streams counted (started / completed / cancelled
because the client went away).
Flaky mode (`fault_rate`, `--fault-rate`): that fraction of inference requests, drawn at random, gets one of
`faults`: "reset" (the connection is dropped unanswered), "500", or "stall" (silence until the client leaves).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn

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


@dataclass
class Recorded:
    method: str
    path: str
    body: Body


def token_text(index: int) -> str:
    return f"tok{index} "


def expected_text(count: int) -> str:
    return "".join(token_text(i) for i in range(count))


def fake_embedding(text: str, dim: int = 8) -> list[float]:
    """Deterministic vector for `text` (what the fake answers, for assertions)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(digest[i % len(digest)] / 255.0, 6) for i in range(dim)]


class _Disconnected(Exception):
    """The client closed the connection."""


@dataclass
class _Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    stream: Callable[[], AsyncIterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeUpstream:
    def __init__(self, behaviour: Behaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self.host, self.port = host, port
        self.requests: list[Recorded] = []
        self.streams_started = self.streams_completed = self.streams_cancelled = 0
        self.connections = 0  # TCP connections accepted (keep-alive reuse shows as fewer than requests)
        self.faults_injected: Counter[str] = Counter()
        self._rng = random.Random(self.behaviour.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests.clear()
        self.streams_started = self.streams_completed = self.streams_cancelled = self.connections = 0
        self.faults_injected.clear()
        self._rng = random.Random(self.behaviour.seed)

    def last_body(self, path: str) -> Body:
        for rec in reversed(self.requests):
            if rec.path == path:
                return rec.body
        raise AssertionError(f"no request to {path}; got {[r.path for r in self.requests]}")

    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self.request_stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the running loop until `stop()` (or `request_stop()` from the same loop)."""
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        server = await asyncio.start_server(self._connection, self.host, self.port, backlog=1024)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        if on_ready is not None:
            on_ready()
        try:
            await self._stop
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):  # aborted connections end at once; cancel any still sleeping
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    def request_stop(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(None)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            while await self._one_request(reader, writer):
                continue
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Disconnected):
            pass
        except asyncio.CancelledError:  # server shutdown: nobody reads this task's result, so end quietly
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")  # IncompleteReadError (client gone) ends the connection
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        length = int(headers.get("content-length") or 0)  # the clients in use never send chunked bodies
        raw = await reader.readexactly(length) if length else b""
        keep_alive = headers.get("connection", "").lower() != "close"
        body: Body = orjson.loads(raw) if raw.strip() else {}
        path = path.split("?")[0]
        self.requests.append(Recorded(method, path, body))
        watch: asyncio.Future[bytes] | None = None
        answer_task: asyncio.Future[_Answer] | None = None
        try:
            fault = self._fault(method, path)
            if fault in ("reset", "stall"):
                await self._break(fault, reader, writer)
            if fault == "500":
                answer = self._error(path, 500)
            elif self.behaviour.initial_delay and not self.behaviour.instant:
                answer_task = asyncio.ensure_future(self._answer(method, path, body))
                watch = asyncio.ensure_future(reader.read(1))  # EOF here = the client went away
                await asyncio.wait({answer_task, watch}, return_when=asyncio.FIRST_COMPLETED)
                if not answer_task.done():
                    raise _Disconnected
                answer = answer_task.result()
            else:
                answer = await self._answer(method, path, body)
            if answer.stream is None:
                writer.write(_head(answer, keep_alive, len(answer.body)) + answer.body)
                await writer.drain()
                return keep_alive and not (watch is not None and watch.done())
            writer.write(_head(answer, keep_alive, None))
            watch = watch or asyncio.ensure_future(reader.read(1))
            await self._write_stream(answer.stream(), writer, watch)
            return keep_alive and not watch.done()
        finally:
            for pending in (answer_task, watch):
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await pending

    def _fault(self, method: str, path: str) -> str | None:
        b = self.behaviour
        if method != "POST" or not b.fault_rate or self._rng.random() >= b.fault_rate:
            return None
        fault = self._rng.choice(b.faults)
        self.faults_injected[fault] += 1
        return fault

    async def _break(self, fault: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> NoReturn:
        if fault == "stall":  # the client's read timeout ends it: it closes the connection
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1), self.behaviour.stall_seconds)
        writer.transport.abort()
        raise _Disconnected

    async def _write_stream(
        self, pieces: AsyncIterator[bytes], writer: asyncio.StreamWriter, watch: asyncio.Future[bytes]
    ) -> None:
        self.streams_started += 1
        finished = False
        cut_after = self.behaviour.cut_after
        try:
            async for piece in pieces:
                if watch.done() or writer.transport.is_closing():
                    raise _Disconnected
                if cut_after is not None and cut_after <= 0:
                    writer.transport.abort()  # the engine dies mid-answer: no last chunk, no end of the body
                    raise _Disconnected
                cut_after = None if cut_after is None else cut_after - 1
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            finished = True
        finally:
            self.streams_completed += finished
            self.streams_cancelled += not finished

    async def _answer(self, method: str, path: str, body: Body) -> _Answer:
        get_routes: dict[str, Callable[[], Body]] = {
            "/health": lambda: {"status": "ok"},
            "/v1/models": lambda: {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]},
            "/api/version": lambda: {"version": "0.12.0"},
            "/api/tags": lambda: {"models": [{"name": "fake:latest", "model": "fake:latest", "size": 1}]},
        }
        post_routes: dict[str, Callable[[Body], _Answer]] = {
            "/v1/chat/completions": lambda b: self._openai_generate(b, chat=True),
            "/v1/completions": lambda b: self._openai_generate(b, chat=False),
            "/v1/embeddings": self._openai_embed,
            "/api/chat": lambda b: self._ollama_generate(b, key="message"),
            "/api/generate": lambda b: self._ollama_generate(b, key="response"),
            "/api/embed": self._ollama_embed,
        }
        if method == "GET" and path in get_routes:
            return _Answer(body=orjson.dumps(get_routes[path]()))
        if method != "POST" or path not in post_routes:
            return _Answer(404, orjson.dumps({"error": f"no route {method} {path}"}))
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

    def _error(self, path: str, status: int) -> _Answer:
        message = f"fake upstream error {status}"
        payload: Body = (
            {"error": message}
            if path.startswith("/api/")
            else {"error": {"message": message, "type": "server_error", "param": None, "code": str(status)}}
        )
        headers = {"Retry-After": "2"} if status == 429 else {}
        return _Answer(status, orjson.dumps(payload), headers=headers)

    def _count(self, limit: Any) -> tuple[int, str]:
        n = self.behaviour.tokens
        return (limit, "length") if isinstance(limit, int) and 0 < limit < n else (n, "stop")

    async def _tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            if self.behaviour.token_delay and not self.behaviour.instant:
                await asyncio.sleep(self.behaviour.token_delay)
            yield token_text(i)

    def _stream(self, pieces: Callable[[], AsyncIterator[bytes]], content_type: str) -> _Answer:
        if not self.behaviour.instant:
            return _Answer(stream=pieces, content_type=content_type)

        async def one_write() -> AsyncIterator[bytes]:
            yield b"".join([piece async for piece in pieces()])

        return _Answer(stream=one_write, content_type=content_type)

    def _openai_generate(self, body: Body, *, chat: bool) -> _Answer:
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
            return _Answer(body=orjson.dumps({**base, "object": obj, "choices": [choice], "usage": usage}))
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

    def _openai_agentic(self, body: Body, base: Body, n: int, usage: Body) -> _Answer:
        texts = [token_text(i) for i in range(n)]
        if not body.get("stream"):
            answer, reason = fake_agentic.openai_answer(body, texts)
            choice = {"index": 0, "finish_reason": reason, **answer}
            return _Answer(
                body=orjson.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            )
        choices, reason = fake_agentic.openai_deltas(body, texts)
        choices.append({"index": 0, "delta": {}, "finish_reason": reason})
        events = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in choices]
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})

        async def pieces() -> AsyncIterator[bytes]:
            for event in events:
                yield b"data: " + orjson.dumps(event) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return self._stream(pieces, "text/event-stream")

    def _openai_embed(self, body: Body) -> _Answer:
        inputs, vectors = self._embed(body)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": _words(inputs), "total_tokens": _words(inputs)}
        return _Answer(body=orjson.dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage}))

    def _embed(self, body: Body) -> tuple[list[str], list[list[float]]]:
        raw = body.get("input", [])
        inputs = [raw] if isinstance(raw, str) else [str(t) for t in raw]
        return inputs, [fake_embedding(t, self.behaviour.embedding_dim) for t in inputs]

    def _ollama_generate(self, body: Body, *, key: str) -> _Answer:
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
            lines = [{**line("", False), **e} for e in extra] + [line("", True)]
            if body.get("stream") is False:  # one object: the parts put together, as Ollama does
                return _Answer(body=orjson.dumps(fake_agentic.ollama_merged(lines, key)))

            async def agentic() -> AsyncIterator[bytes]:
                for item in lines:
                    yield orjson.dumps(item) + b"\n"

            return self._stream(agentic, "application/x-ndjson")
        if body.get("stream") is False:
            return _Answer(body=orjson.dumps(line(expected_text(n), True)))

        async def lines() -> AsyncIterator[bytes]:
            async for text in self._tokens(n):
                yield orjson.dumps(line(text, False)) + b"\n"
            yield orjson.dumps(line("", True)) + b"\n"

        return self._stream(lines, "application/x-ndjson")

    def _ollama_embed(self, body: Body) -> _Answer:
        inputs, vectors = self._embed(body)
        stats = {"total_duration": 1000, "load_duration": 0, "prompt_eval_count": _words(inputs)}
        return _Answer(body=orjson.dumps({"model": body.get("model"), "embeddings": vectors, **stats}))


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


def _head(answer: _Answer, keep_alive: bool, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", f"Content-Type: {answer.content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines += [f"{k}: {v}" for k, v in answer.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@contextlib.contextmanager
def upstream_process(*args: str) -> Iterator[str]:
    """This module run as its own process (`args` are its CLI flags); yields its URL, stops it on exit."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """Serve in this process: prints `READY <url>` once listening; stops on SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=5)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--initial-delay", type=float, default=0.0, help="seconds before every inference answer")
    parser.add_argument("--instant", action="store_true")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of inference requests that fail")
    parser.add_argument("--faults", default="reset,500,stall", help="comma-separated: reset, 500, stall")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    behaviour = Behaviour(
        tokens=args.tokens, token_delay=args.token_delay, initial_delay=args.initial_delay, instant=args.instant,
        fault_rate=args.fault_rate, faults=tuple(args.faults.split(",")), seed=args.seed,
    )  # fmt: skip
    fake = FakeUpstream(behaviour, port=args.port)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, fake.request_stop)
        await fake.serve(on_ready=lambda: print(f"READY {fake.url}", flush=True))

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
