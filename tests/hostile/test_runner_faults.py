"""Issue 11, engine options and runner faults against a real server on the embedded models (memory-capped):
huge num_ctx / num_thread, a 1 MB prompt, a runner that dies while idle, one that stops answering (SIGSTOP),
and a model whose file does not load. Each is refused or recovered; the next good request works."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import MEMORY_CAP_MB, text_image
from server_process import ServerProcess, runner_pids, running_server

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def faulty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    broken = tmp_path_factory.mktemp("broken") / "secret-dir" / "broken.gguf"
    broken.parent.mkdir()
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))  # a header that lies, then noise
    config = {"models": [{"name": "broken", "engine": "llamacpp", "path": str(broken), "memory_mb": 200}]}
    with running_server(config, memory_cap_mb=MEMORY_CAP_MB) as proc:
        yield proc


def _wait_for(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _chat_ok(server: ServerProcess) -> None:
    reply = httpx.post(server.url + "/v1/chat/completions", json=CHAT, timeout=120)
    assert reply.status_code == 200, reply.text


def test_a_huge_num_ctx_does_not_disable_the_model_on_any_surface(faulty_server: ServerProcess) -> None:
    url = faulty_server.url
    for num_ctx, status in ((1_000_000_000, 400), (1_048_576, 200)):  # past the wire's bound; past the model's
        asked = httpx.post(
            url + "/api/chat",
            json={**CHAT, "stream": False, "options": {"num_ctx": num_ctx, "num_predict": 2}},
            timeout=180,
        )
        assert asked.status_code == status, asked.text  # the second is served at the context the model has
    for _ in range(2):
        _chat_ok(faulty_server)
        body = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        generate = httpx.post(url + "/api/generate", json=body, timeout=120)
        assert generate.status_code == 200, generate.text
    files = {"file": ("t.png", text_image("HELLO 42"), "image/png")}
    processed = httpx.post(url + "/process", files=files, data={"max_tokens": "8"}, timeout=180)
    assert processed.status_code == 200, processed.text


def test_num_thread_past_the_cores_is_capped(faulty_server: ServerProcess) -> None:
    body = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 2, "num_thread": 100000}}
    refused = httpx.post(faulty_server.url + "/api/generate", json=body, timeout=60)
    assert refused.status_code == 400 and "num_thread" in refused.json()["error"]  # past the wire's bound
    body["options"] = {"num_predict": 2, "num_thread": 1024}  # within it, far past this machine's cores
    reply = httpx.post(faulty_server.url + "/api/generate", json=body, timeout=180)
    assert reply.status_code == 200, reply.text
    _chat_ok(faulty_server)


def test_a_prompt_past_the_context_is_refused_before_the_engine(faulty_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=faulty_server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "word " * 200_000}], max_tokens=2
        )
    assert refused.value.code == "context_length_exceeded"
    ollama_refused = httpx.post(
        faulty_server.url + "/api/generate",
        json={"model": "smollm2", "prompt": "x" * 1_000_000, "stream": False},
        timeout=60,
    )
    assert ollama_refused.status_code == 400 and "error" in ollama_refused.json()
    _chat_ok(faulty_server)


def test_a_runner_that_died_while_idle_is_replaced_for_the_next_request(faulty_server: ServerProcess) -> None:
    _chat_ok(faulty_server)
    pids = runner_pids(faulty_server, "smollm2")
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    _chat_ok(faulty_server)  # at once, before the scheduler notices: not a 502, a fresh runner answers
    _wait_for(lambda: not set(pids) & set(runner_pids(faulty_server, "smollm2")), 10)


def test_a_runner_that_stops_answering_fails_its_request_then_recovers(faulty_server: ServerProcess) -> None:
    _chat_ok(faulty_server)
    pids = runner_pids(faulty_server, "smollm2")
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        reply = httpx.post(faulty_server.url + "/v1/chat/completions", json=CHAT, timeout=90)
        assert reply.status_code == 502, reply.text  # the watchdog killed it: an engine_error, not a hang
        assert "stopped answering" in reply.json()["error"]["message"]
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    _chat_ok(faulty_server)


def test_a_model_that_does_not_load_says_so_without_paths_or_tracebacks(faulty_server: ServerProcess) -> None:
    for surface, body in (
        ("/v1/chat/completions", {**CHAT, "model": "broken"}),
        ("/api/chat", {**CHAT, "model": "broken", "stream": False}),
    ):
        reply = httpx.post(faulty_server.url + surface, json=body, timeout=120)
        assert reply.status_code == 502, reply.text  # engine_error on both surfaces
        text = reply.text
        assert "failed to load" in text
        for leak in ("secret-dir", "broken.gguf", "Traceback", 'File \\"', "/tmp", "site-packages"):
            assert leak not in text, f"{leak!r} leaked: {text}"
    assert "broken.gguf" in faulty_server.log()  # the operator still gets the details
    _chat_ok(faulty_server)
