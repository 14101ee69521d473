"""The Ollama surface through the official `ollama` client against a real server with the embedded models."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import ollama
import pytest
from conftest import text_image
from server_process import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as client:
        yield client


def test_root_and_version(server: ServerProcess, client: ollama.Client) -> None:
    root = httpx.get(server.url + "/")
    assert root.text == "Ollama is running" and root.headers["x-served-by"].startswith("vlmserve/")
    assert httpx.head(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/api/version").json()["version"]


def test_list_shows_catalog(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {"smollm2:latest", "rapidocr:latest", "all-minilm:latest"} <= names
    smol = next(m for m in client.list().models if m.model == "smollm2:latest")
    assert smol.size and smol.size > 50_000_000  # the real GGUF file
    assert smol.details is not None and smol.details.format == "gguf"


def test_chat_non_stream_with_stats(client: ollama.Client) -> None:
    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        options={"num_predict": 12, "temperature": 0, "seed": 3},
    )
    # a fact the 135M model gets right under its default system prompt (it talks around "2 + 2" for 12 tokens)
    assert "Paris" in reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.prompt_eval_count and reply.prompt_eval_count > 5
    assert reply.eval_count and 0 < reply.eval_count <= 12
    assert reply.total_duration and reply.eval_duration and reply.prompt_eval_duration is not None
    assert reply.total_duration >= reply.eval_duration


def test_chat_streams_ndjson(client: ollama.Client) -> None:
    parts = list(
        client.chat(
            model="smollm2:latest",
            messages=[{"role": "user", "content": "Say hello."}],
            stream=True,
            options={"num_predict": 10},
        )
    )
    assert len(parts) > 3
    assert all(not p.done for p in parts[:-1])
    final = parts[-1]
    assert final.done and final.done_reason == "length" and final.eval_count == 10
    assert "".join(p.message.content for p in parts).strip()


def test_generate_stream_and_not(client: ollama.Client) -> None:
    reply = client.generate(model="smollm2", prompt="What is 2 + 2?", options={"num_predict": 8, "temperature": 0})
    assert reply.response.strip() and reply.done
    chunks = list(client.generate(model="smollm2", prompt="Say hello.", stream=True, options={"num_predict": 6}))
    assert chunks[-1].done and chunks[-1].eval_count == 6


def test_generate_raw_and_system(client: ollama.Client) -> None:
    raw = client.generate(
        model="smollm2", prompt="The capital of France is", raw=True, options={"num_predict": 5, "temperature": 0}
    )
    assert raw.response.strip()
    with_system = client.generate(
        model="smollm2", prompt="hello", system="Answer in one word.", options={"num_predict": 5}
    )
    assert with_system.done


def test_generate_stop_option(client: ollama.Client) -> None:
    reply = client.generate(
        model="smollm2",
        prompt="List the numbers 1 to 9 separated by commas.",
        options={"num_predict": 40, "temperature": 0, "stop": ["5"]},
    )
    assert "5" not in reply.response and reply.done_reason == "stop"


def test_json_format(client: ollama.Client) -> None:
    reply = client.chat(
        model="smollm2",
        format="json",
        options={"num_predict": 40, "temperature": 0},
        messages=[{"role": "user", "content": "Give a JSON object with a key name."}],
    )
    assert reply.message.content.lstrip().startswith("{")


def test_chat_with_image_reads_text(client: ollama.Client) -> None:
    reply = client.chat(
        model="rapidocr", messages=[{"role": "user", "content": "read", "images": [text_image("PARCEL 5531")]}]
    )
    assert "5531" in reply.message.content


def test_generate_with_image_on_pipeline(client: ollama.Client) -> None:
    reply = client.generate(
        model="smollm2-ocr",
        prompt="What is the total amount?",
        images=[text_image("TOTAL 42.50 EUR")],
        options={"num_predict": 30, "temperature": 0},
    )
    assert "42.50" in reply.response


def test_embed_single_and_batch(client: ollama.Client) -> None:
    one = client.embed(model="all-minilm", input="hello world")
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 384
    many = client.embed(model="all-minilm", input=["a", "b", "c"])
    assert len(many.embeddings) == 3
    assert many.prompt_eval_count and many.prompt_eval_count >= 3


def test_legacy_embeddings(client: ollama.Client) -> None:
    assert len(client.embeddings(model="all-minilm", prompt="hello").embedding) == 384


def test_ps_shows_loaded_models(client: ollama.Client) -> None:
    client.generate(model="smollm2", prompt="hi", options={"num_predict": 1})
    running = {m.model: m for m in client.ps().models}
    assert "smollm2:latest" in running
    assert running["smollm2:latest"].size and running["smollm2:latest"].expires_at is not None


def test_show(client: ollama.Client) -> None:
    shown = client.show("smollm2")
    assert shown.details is not None and shown.details.format == "gguf"
    assert "completion" in (shown.capabilities or [])
    assert "vision" in (client.show("smollm2-ocr").capabilities or [])


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert 'model "nope" not found' in info.value.error


def test_image_to_text_model_is_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="smollm2", prompt="x", images=[text_image("X")])
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        b"{broken",
        b'{"model": "smollm2", "messages": [{"role": "user", "content": 5}]}',
        b'{"model": "smollm2", "messages": [{"role": "user", "content": "x", "images": ["%%%"]}]}',
        b'{"model": "rapidocr", "messages": [{"role": "user", "content": "x", "images": ["aGVsbG8="]}]}',
        b'{"messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "keep_alive": "soon"}',
    ],
)
def test_bad_chat_input_is_400_in_ollama_shape(server: ServerProcess, body: bytes) -> None:
    response = httpx.post(server.url + "/api/chat", content=body)  # no content-type, as curl -d sends
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_load_and_unload_with_empty_request(server: ServerProcess, client: ollama.Client) -> None:
    loaded = httpx.post(server.url + "/api/generate", json={"model": "all-minilm"}).json()
    assert loaded["done_reason"] == "load"
    assert any(m.model == "all-minilm:latest" for m in client.ps().models)
    unloaded = httpx.post(server.url + "/api/generate", json={"model": "all-minilm", "keep_alive": 0}).json()
    assert unloaded["done_reason"] == "unload"
    assert all(m.model != "all-minilm:latest" for m in client.ps().models)


def test_keep_alive_zero_unloads_after_request(client: ollama.Client) -> None:
    client.embed(model="all-minilm", input="x", keep_alive=0)
    import time

    deadline = time.monotonic() + 10
    while any(m.model == "all-minilm:latest" for m in client.ps().models):
        assert time.monotonic() < deadline, "model still loaded 10 s after keep_alive=0"
        time.sleep(0.1)


def test_base64_images_accept_str(server: ServerProcess) -> None:
    b64 = base64.b64encode(text_image("KIWI 12")).decode()
    reply = httpx.post(
        server.url + "/api/generate",
        json={"model": "rapidocr", "prompt": "read", "images": [b64], "stream": False},
        timeout=60,
    ).json()
    assert "12" in reply["response"]
