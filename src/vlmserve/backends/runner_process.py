"""Local engines in supervised child processes (like Ollama's runners).

The runner (`python -m vlmserve.runners`) loads one model, serves an OpenAI-compatible HTTP API on a free
loopback port and prints `VLMSERVE_RUNNER_READY <url>`; from then on the gateway talks to it with the same
client as any remote OpenAI-compatible engine. Stopping the runner frees all of its memory. A runner that
dies makes its in-flight requests fail with EngineError (502); the next request starts a fresh one. The
runner exits by itself when its stdin closes, so a killed gateway leaves no orphans.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import EngineError, VlmServeError
from vlmserve.runners.lifecycle import READY_PREFIX

log = logging.getLogger("vlmserve.runner")


class LocalRunnerBackend:
    def __init__(self, spec: ModelSpec, *, start_timeout: float = 120.0, threads: int | None = None) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._threads = threads
        self._proc: asyncio.subprocess.Process | None = None
        self._client: OpenAICompatibleBackend | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._drain_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and self._client is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def memory_bytes(self) -> int | None:
        if not self.loaded or self._proc is None:
            return None
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    async def start(self) -> None:
        async with self._lock:
            if self.loaded:
                return
            await self._stop_locked()
            await self._spawn()

    async def _spawn(self) -> None:
        spec_json = self.spec.model_dump_json()
        args = [sys.executable, "-m", "vlmserve.runners", "--spec", spec_json]
        if self._threads:
            args += ["--threads", str(self._threads)]
        self._stderr_tail.clear()
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._proc = proc
        assert proc.stderr is not None and proc.stdout is not None
        self._drain_task = asyncio.create_task(self._drain_stderr(proc.stderr))
        try:
            url = await asyncio.wait_for(self._read_ready(proc.stdout), self._start_timeout)
        except TimeoutError:
            await self._stop_locked()
            raise EngineError(f"{self.spec.name}: runner did not become ready in {self._start_timeout:.0f}s") from None
        if url is None:
            code = await proc.wait()
            tail = " | ".join(self._stderr_tail)[-600:]
            self._proc = None
            raise EngineError(f"{self.spec.name}: runner failed to load the model (exit {code}): {tail}")
        self._client = OpenAICompatibleBackend(self.spec.model_copy(update={"remote_model": self.spec.name}), url)
        log.info("runner for %s ready at %s (pid %s)", self.spec.name, url, proc.pid)

    @staticmethod
    async def _read_ready(stdout: asyncio.StreamReader) -> str | None:
        while True:
            raw = await stdout.readline()
            if not raw:
                return None
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("[%s] %s", self.spec.name, line)

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_locked()

    async def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()  # the runner exits cleanly on EOF
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain_task is not None:
            self._drain_task.cancel()
            self._drain_task = None

    async def health(self) -> bool:
        client = self._client
        return self.loaded and client is not None and await client.health()

    def _live_client(self) -> OpenAICompatibleBackend:
        if not self.loaded or self._client is None:
            raise EngineError(f"{self.spec.name}: runner is not running")
        return self._client

    def _crash_error(self, exc: EngineError) -> VlmServeError:
        proc = self._proc
        if proc is not None and proc.returncode is not None:
            tail = " | ".join(self._stderr_tail)[-300:]
            return EngineError(f"{self.spec.name}: runner crashed (exit code {proc.returncode}) {tail}".strip())
        return exc

    async def _guard(self, stream: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
        try:
            async for chunk in stream:
                yield chunk
        except EngineError as exc:
            await asyncio.sleep(0.05)  # let the exit status of a dying runner arrive
            raise self._crash_error(exc) from exc

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._guard(self._live_client().chat(request))

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        return self._guard(self._live_client().complete(request))

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        try:
            return await self._live_client().embed(request)
        except EngineError as exc:
            await asyncio.sleep(0.05)
            raise self._crash_error(exc) from exc
