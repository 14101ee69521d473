"""Local engines in supervised child processes (like Ollama's runners).

The runner (`python -m vlmserve.runners`) loads one model, serves an OpenAI-compatible HTTP API on a free
loopback port and prints `VLMSERVE_RUNNER_READY <url>`; from then on the gateway talks to it with the same
client as any remote OpenAI-compatible engine. Stopping the runner frees all of its memory. A runner that
dies makes its in-flight requests fail with EngineError (502); a request that finds it dead (or whose
connection it dropped before the first byte) gets a fresh runner, once. A watchdog probes the runner's /health
while it runs and kills one that stops answering (stopped, deadlocked), so no request hangs on it. The runner
exits by itself when its stdin closes, so a killed gateway leaves no orphans. Clients never see the runner's
stderr (paths, native stack frames): it goes to the server log, with a one-word reason in the message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from vlmserve.backends.base import BackendStats
from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.errors import EngineError, VlmServeError
from vlmserve.runners.lifecycle import READY_PREFIX

log = logging.getLogger("vlmserve.runner")
WATCHDOG_EVERY = 5.0  # seconds between health probes of a running runner
WATCHDOG_PROBE_TIMEOUT = 5.0
WATCHDOG_KILL_AFTER = 20.0  # seconds without a healthy answer before the runner is killed
STOP_GRACE = 5.0  # seconds a stopping runner has to exit on EOF before it is killed
# stderr phrases that mean the runner ran out of memory (llama.cpp, torch, ONNX Runtime, Python)
_OUT_OF_MEMORY = ("bad_alloc", "out of memory", "failed to allocate", "memoryerror", "cannot allocate memory")


def runner_env(spec: ModelSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The runner's environment: its GPUs only (CUDA_VISIBLE_DEVICES; none for a CPU placement, so no CUDA
    context takes GPU memory), numbered as NVML numbers them (PCI bus order), unbuffered output."""
    env = {**base, "PYTHONUNBUFFERED": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    on_cpu = spec.gpu_layers == 0 or (spec.engine == "transformers" and spec.device == "cpu")
    if on_cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif spec.devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in spec.devices)
    return env


def _reason(stderr_tail: str, code: int | None) -> str:
    """A short, path-free reason for a runner's exit (its stderr goes to the log, never to clients)."""
    if any(phrase in stderr_tail.lower() for phrase in _OUT_OF_MEMORY) or code in (-9, 137):
        return "it ran out of memory"
    return "see the server log"


class LocalRunnerBackend:
    def __init__(self, spec: ModelSpec, *, start_timeout: float = 120.0, threads: int | None = None) -> None:
        self.spec = spec
        self._start_timeout = start_timeout
        self._threads = threads
        self._proc: asyncio.subprocess.Process | None = None
        self._client: OpenAICompatibleBackend | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._drain_task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._hung = False  # the watchdog killed it: the next error says so
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

    def stats(self) -> BackendStats | None:
        return None  # one engine: its health is health()

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
            env=runner_env(self.spec, os.environ),
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
            tail = " | ".join(self._stderr_tail)
            self._proc = None
            log.error(
                "runner for %s failed to load %s (exit %s): %s", self.spec.name, self.spec.path, code, tail[-2000:]
            )
            raise EngineError(
                f"{self.spec.name}: runner failed to load the model (exit code {code}; {_reason(tail, code)})"
            )
        self._client = OpenAICompatibleBackend(self.spec.model_copy(update={"remote_model": self.spec.name}), url)
        self._hung = False
        self._watchdog = asyncio.create_task(self._watch(proc, self._client))
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

    async def _watch(self, proc: asyncio.subprocess.Process, client: OpenAICompatibleBackend) -> None:
        """Kill a runner that stops answering its health probe for WATCHDOG_KILL_AFTER seconds: its requests
        fail at once (502) instead of hanging, and the scheduler starts a fresh one for the next."""
        healthy_at = time.monotonic()
        while proc.returncode is None:
            await asyncio.sleep(WATCHDOG_EVERY)
            try:
                ok = await asyncio.wait_for(client.health(), WATCHDOG_PROBE_TIMEOUT)
            except TimeoutError:
                ok = False
            if ok:
                healthy_at = time.monotonic()
            elif time.monotonic() - healthy_at >= WATCHDOG_KILL_AFTER and proc.returncode is None:
                log.error("runner for %s (pid %s) stopped answering: killing it", self.spec.name, proc.pid)
                self._hung = True
                proc.kill()
                return

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_locked()

    async def aclose(self) -> None:
        """Nothing outlives stop() here: the runner's process and its client end with it."""

    async def _stop_locked(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        proc, self._proc = self._proc, None
        client, self._client = self._client, None
        try:  # the process first: a client that fails to close must never leave the runner running
            if proc is not None:
                await self._end(proc)
        finally:
            if self._drain_task is not None:
                self._drain_task.cancel()
                self._drain_task = None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # the runner is gone already: only its connections are left to the collector
                log.exception("closing the HTTP client of the runner for %s failed", self.spec.name)

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        """Close its stdin (the runner exits cleanly on EOF), kill it after STOP_GRACE seconds, or at once when
        the stop itself is cancelled."""
        if proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("runner for %s (pid %s) did not exit on EOF: killing it", self.spec.name, proc.pid)
        finally:
            if proc.returncode is None:
                proc.kill()
        await proc.wait()

    async def health(self) -> bool:
        client = self._client
        return self.loaded and client is not None and await client.health()

    async def _live_client(self) -> OpenAICompatibleBackend:
        """The running runner's client; a runner found dead (it exited while idle, or the watchdog killed it)
        is replaced first, so the request does not fail for what happened before it."""
        if not self.loaded:
            proc = self._proc
            if proc is None:
                raise EngineError(f"{self.spec.name}: runner is not running")
            log.warning("runner for %s exited (code %s): starting a fresh one", self.spec.name, proc.returncode)
            await self.start()
        assert self._client is not None
        return self._client

    def _died(self) -> bool:
        proc = self._proc
        return proc is not None and proc.returncode is not None

    async def _crash_error(self, exc: EngineError) -> VlmServeError:
        await asyncio.sleep(0.05)  # let the exit status of a dying runner arrive
        proc = self._proc
        if proc is None or proc.returncode is None:
            return exc
        code = proc.returncode
        tail = " | ".join(self._stderr_tail)
        log.error("runner for %s crashed (exit %s): %s", self.spec.name, code, tail[-2000:])
        if self._hung:
            return EngineError(f"{self.spec.name}: runner stopped answering and was stopped")
        return EngineError(f"{self.spec.name}: runner crashed (exit code {code}; {_reason(tail, code)})")

    async def _guarded(
        self, call: Callable[[OpenAICompatibleBackend], AsyncIterator[ChatChunk]]
    ) -> AsyncIterator[ChatChunk]:
        for attempt in (1, 2):
            started = False
            try:
                async for chunk in call(await self._live_client()):
                    started = True
                    yield chunk
                return
            except EngineError as exc:
                error = await self._crash_error(exc)
                if started or attempt == 2 or self._hung or not self._died():
                    raise error from exc
                log.warning("runner for %s died before answering: retrying once on a fresh one", self.spec.name)

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._guarded(lambda client: client.chat(request))

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        return self._guarded(lambda client: client.complete(request))

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        for attempt in (1, 2):
            try:
                return await (await self._live_client()).embed(request)
            except EngineError as exc:
                error = await self._crash_error(exc)
                if attempt == 2 or self._hung or not self._died():
                    raise error from exc
                log.warning("runner for %s died before answering: retrying once on a fresh one", self.spec.name)
        raise AssertionError("unreachable")
