"""Runner host for Python engines (OCR, ONNX embeddings, transformers): an OpenAI-compatible mini server.

Engines are synchronous and run in a worker thread; chunks cross to the event loop through a queue. When
the gateway hangs up, the `cancel` event is set and the engine stops at its next token.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    ChatChunk,
    ChatResult,
    Message,
    SamplingParams,
    TextPart,
    ToolCallAssembler,
    Tools,
    Usage,
)
from vlmserve.errors import BadRequest, VlmServeError
from vlmserve.runners.lifecycle import announce_ready, on_parent_exit
from vlmserve.wire import openai_answers as answers
from vlmserve.wire.openai_codec import chat_from_body, completion_from_body


class PythonEngine(Protocol):
    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event
    ) -> Iterator[ChatChunk]:
        """Yield text chunks; the last one has finish_reason and usage."""
        ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors (L2-normalised) and the number of tokens read."""
        ...


class ToolEngine(PythonEngine, Protocol):
    """An engine that shows `tools` to its model and reads its calls back (transformers)."""

    def check_tools(self, tools: Tools) -> None:
        """Raise BadRequest for what it cannot do with these tools."""
        ...

    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event, tools: Tools | None = None
    ) -> Iterator[ChatChunk]: ...


def load_engine(spec: ModelSpec, threads: int | None) -> PythonEngine:
    if spec.engine == "rapidocr":
        from vlmserve.runners.ocr import OcrEngine

        return OcrEngine(spec, threads=threads)
    if spec.engine == "onnx-embed":
        from vlmserve.runners.onnx_embed import OnnxEmbedEngine

        return OnnxEmbedEngine(spec, threads=threads)
    if spec.engine == "transformers":
        from vlmserve.runners.speech_engine import SpeechEngine, is_speech_folder
        from vlmserve.runners.transformers_engine import TransformersEngine

        if is_speech_folder(spec.path):
            return SpeechEngine(spec, threads=threads)

        return TransformersEngine(spec, threads=threads)
    raise SystemExit(f"no Python runner for engine {spec.engine}")


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)


def build_app(spec: ModelSpec, engine: PythonEngine) -> Starlette:
    lock = threading.Lock()  # one generation at a time per runner; the gateway queues the rest

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": spec.name, "object": "model", "owned_by": "vlmserve"}]})

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        try:
            domain = chat_from_body(body)
            tools = domain.tools if domain.tools is not None and domain.tools.specs else None
            if tools is not None:  # the gateway refuses first a model not declared with tools (capabilities)
                if not hasattr(engine, "check_tools"):
                    raise BadRequest(f"model '{spec.name}' does not support tools", param="tools")
                engine.check_tools(tools)
        except VlmServeError as exc:
            return _error(exc.status, exc.message, param=exc.param)
        return await _generate(domain.messages, domain.sampling, body, chat=True, tools=tools)

    async def completions(request: Request) -> Response:
        body = orjson.loads(await request.body())
        try:
            domain = completion_from_body(body)
        except VlmServeError as exc:
            return _error(exc.status, exc.message, param=exc.param)
        messages = [Message(role="user", parts=[TextPart(domain.prompt)])]
        return await _generate(messages, domain.sampling, body, chat=False)

    def _chunks(
        messages: list[Message], sampling: SamplingParams, cancel: threading.Event, tools: Tools | None
    ) -> Iterator[ChatChunk]:
        if tools is None:
            return engine.generate(messages, sampling, cancel)
        tool_engine: ToolEngine = engine  # type: ignore[assignment]  # check_tools was there (chat)
        return tool_engine.generate(messages, sampling, cancel, tools=tools)

    async def _generate(
        messages: list[Message],
        sampling: SamplingParams,
        body: dict[str, Any],
        *,
        chat: bool,
        tools: Tools | None = None,
    ) -> Response:
        cancel = threading.Event()
        began = time.perf_counter()
        stream = _run_in_thread(lambda: _locked(lock, _chunks(messages, sampling, cancel, tools)), cancel)
        try:
            first = await anext(stream, None)
        except VlmServeError as exc:  # refused before any output (a bad option): its own status, not in-band
            return _error(exc.status, exc.message, param=exc.param)
        first_at = time.perf_counter()
        stream = _chained(first, stream, cancel)
        if body.get("stream"):
            return StreamingResponse(_sse(stream, spec.name, chat), media_type="text/event-stream")
        text, final, calls = [], ChatChunk(), ToolCallAssembler()
        async for chunk in stream:
            text.append(chunk.text)
            calls.add(chunk.tool_calls)
            final = chunk
        result = ChatResult("".join(text), final.finish_reason or "stop", final.usage or Usage())
        result.tool_calls = calls.calls()
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        encode = answers.chat_completion if chat else answers.completion
        # the gateway gets the whole answer at once: it learns the phases from these (llama.cpp's form)
        timings = {"prompt_ms": (first_at - began) * 1e3, "predicted_ms": (time.perf_counter() - first_at) * 1e3}
        return JSONResponse({**encode(rid, spec.name, result), "timings": timings})

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        raw = body.get("input", [])
        texts = [raw] if isinstance(raw, str) else [str(t) for t in raw]
        vectors, tokens = await asyncio.to_thread(engine.embed, texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": spec.name, "usage": usage})

    routes = [
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
    return Starlette(routes=routes)


async def _chained(
    first: ChatChunk | None, rest: AsyncIterator[ChatChunk], cancel: threading.Event
) -> AsyncIterator[ChatChunk]:
    try:
        if first is not None:
            yield first
        async for chunk in rest:
            yield chunk
    finally:  # the client went away: the engine stops at its next token, as _run_in_thread does
        cancel.set()


def _locked(lock: threading.Lock, chunks: Iterator[ChatChunk]) -> Iterator[ChatChunk]:
    with lock:
        yield from chunks


async def _run_in_thread(make: Any, cancel: threading.Event) -> AsyncIterator[ChatChunk]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[ChatChunk | BaseException | None] = asyncio.Queue()

    def work() -> None:
        try:
            for chunk in make():
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
                if cancel.is_set():
                    break
        except BaseException as exc:  # handed to the event loop, re-raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()


async def _sse(stream: AsyncIterator[ChatChunk], model: str, chat: bool) -> AsyncIterator[bytes]:
    encoder = answers.ChunkEncoder(f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", model, chat=chat)
    try:
        async for chunk in stream:
            for event in encoder.encode(chunk):
                yield b"data: " + orjson.dumps(event) + b"\n\n"
            if chunk.usage is not None:
                yield b"data: " + orjson.dumps(encoder.usage(chunk.usage)) + b"\n\n"
    except Exception as exc:  # after the first byte, errors travel in-band
        yield b"data: " + orjson.dumps({"error": {"message": str(exc), "type": "engine_error"}}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def serve_python_engine(spec: ModelSpec, *, threads: int | None) -> int:
    engine = load_engine(spec, threads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(build_app(spec, engine), log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    async def run() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.01)
        announce_ready(f"http://127.0.0.1:{port}")
        await serving

    def request_exit() -> None:
        server.should_exit = True

    on_parent_exit(request_exit)
    asyncio.run(run())
    return 0
