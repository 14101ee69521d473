"""LocalRunnerBackend.stop(): the runner's process ends whatever else fails. A real short-lived process stands in
for the runner (`cat` exits on stdin EOF as the runner does; `sleep` ignores it and must be killed), beside a
real HTTP client whose close raises: before the fix that error lost the process handle and leaked the runner."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_scheduler_gpu import until

from vlmserve.backends import runner_process
from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.backends.runner_process import LocalRunnerBackend
from vlmserve.domain.spec import ModelSpec

SPEC = ModelSpec(name="r", engine="llamacpp", path="/nonexistent.gguf", parallel=1, memory_mb=100)


class CloseFails(OpenAICompatibleBackend):
    async def aclose(self) -> None:
        await super().aclose()
        raise OSError("client close blew up")


async def with_stand_in(*argv: str) -> tuple[LocalRunnerBackend, asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    backend = LocalRunnerBackend(SPEC)
    backend._proc = proc  # what _spawn sets once the runner is ready
    backend._client = CloseFails(SPEC, "http://127.0.0.1:9")
    assert backend.loaded
    return backend, proc


@pytest.mark.parametrize(("argv", "grace", "code"), [(("cat",), 5.0, 0), (("sleep", "60"), 0.05, -9)])
async def test_a_client_close_that_raises_still_ends_the_runner(
    argv: tuple[str, ...], grace: float, code: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_process, "STOP_GRACE", grace)
    backend, proc = await with_stand_in(*argv)
    with caplog.at_level(logging.ERROR, "vlmserve.runner"):
        async with asyncio.timeout(5):
            await backend.stop()  # raises nothing: the process is gone, only the client's error is left to log
    assert proc.returncode == code  # exited on EOF (cat) or killed after the grace (sleep)
    assert not backend.loaded and backend.pid is None
    logged = [(r.getMessage(), type(r.exc_info[1]).__name__ if r.exc_info else None) for r in caplog.records]
    assert logged == [("closing the HTTP client of the runner for r failed", "OSError")]


async def test_a_cancelled_stop_kills_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_process, "STOP_GRACE", 60.0)
    backend, proc = await with_stand_in("sleep", "60")
    stopping = asyncio.create_task(backend.stop())
    assert proc.stdin is not None
    await until(proc.stdin.is_closing)  # inside the grace wait
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    async with asyncio.timeout(5):
        assert await proc.wait() == -9
    assert not backend.loaded
