"""Small, real HTTP servers speaking the OpenAI and Ollama protocols, for tests and benchmarks.

`FakeUpstream`: an asyncio HTTP/1.1 server (keep-alive, chunked streaming) on a free loopback port, in a
background thread (`with FakeUpstream() as fake:`) or its own process (`python tests/fake_upstreams.py
--instant` prints `READY <url>`, serves until SIGTERM). Every instance serves both protocols:
OpenAI `POST /v1/chat/completions|completions|embeddings` (SSE or JSON), `GET /v1/models`, `GET /health`;
Ollama `POST /api/chat|generate` (NDJSON or JSON), `POST /api/embed`, `GET /api/version`, `GET /api/tags`
(the answers of both protocols live in fake_protocols.py; this module is the transport).
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
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, NoReturn

import orjson
from fake_protocols import Answer, Behaviour, Body, ProtocolAnswers, expected_text, fake_embedding, token_text

__all__ = [
    "Behaviour",
    "FakeUpstream",
    "Recorded",
    "expected_text",
    "fake_embedding",
    "remote_chat_models",
    "token_text",
    "upstream_process",
]  # fmt: skip


@dataclass
class Recorded:
    method: str
    path: str
    body: Body


class _Disconnected(Exception):
    """The client closed the connection."""


class FakeUpstream(ProtocolAnswers):
    """The transport: connections, keep-alive, faults and streaming writes around `ProtocolAnswers`."""

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
        answer_task: asyncio.Future[Answer] | None = None
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


def _head(answer: Answer, keep_alive: bool, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", f"Content-Type: {answer.content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    lines += [f"{k}: {v}" for k, v in answer.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def remote_chat_models(openai_url: str, ollama_url: str) -> list[dict[str, Any]]:
    """Catalog entries on two fakes: an OpenAI-compatible one (at its /v1) and an Ollama one; `oa-think` declares
    thinking, `oa-plain` only completion (for the capability 400s)."""
    oa = f"{openai_url}/v1"
    return [
        {"name": "oa-chat", "engine": "openai", "url": oa, "remote_model": "fake-gpt"},
        {"name": "oa-think", "engine": "openai", "url": oa, "capabilities": ["completion", "thinking"]},
        {"name": "oa-plain", "engine": "openai", "url": oa, "capabilities": ["completion"]},
        {"name": "ol-chat", "engine": "ollama", "url": ollama_url, "remote_model": "fake-qwen3"},
    ]


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
