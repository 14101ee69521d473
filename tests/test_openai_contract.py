"""The OpenAI surface through the official `openai` client against a real server with the embedded models."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import data_uri, text_image
from server_process import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smollm2", "rapidocr", "smollm2-ocr", "all-minilm"} <= ids
    assert client.models.retrieve("smollm2").id == "smollm2"
    assert client.models.retrieve("ocr").id == "rapidocr"  # aliases resolve


def test_chat_real_answer_with_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=24,
        temperature=0,
        seed=1,
    )
    text = reply.choices[0].message.content or ""
    assert "paris" in text.lower()
    assert reply.usage is not None and reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.model == "smollm2"


def test_chat_max_tokens_gives_length(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5


def test_chat_stream_tokens_arrive_incrementally(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Count from one to ten in words."}],
        max_tokens=30,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) > 5  # token by token, not one blob
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= 5


def test_stop_sequence_cuts_output(client: openai.OpenAI) -> None:
    full = (
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "List the numbers 1 to 9 separated by commas."}],
            max_tokens=40,
            temperature=0,
        )
        .choices[0]
        .message.content
        or ""
    )
    assert "5" in full
    cut = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "List the numbers 1 to 9 separated by commas."}],
        max_tokens=40,
        temperature=0,
        stop=["5"],
    )
    assert "5" not in (cut.choices[0].message.content or "")
    assert cut.choices[0].finish_reason == "stop"


def test_json_object_response_format(client: openai.OpenAI) -> None:
    import json

    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Give a JSON object with a key name."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = reply.choices[0].message.content or ""
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: at least the grammar made it start as an object
        assert content.lstrip().startswith("{")


def test_completions_endpoint(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.completion_tokens <= 8


def test_vision_ocr_reads_drawn_text(client: openai.OpenAI) -> None:
    image = text_image("INVOICE 4821")
    reply = client.chat.completions.create(
        model="rapidocr",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "read it"},
                    {"type": "image_url", "image_url": {"url": data_uri(image)}},
                ],
            }
        ],
    )
    text = reply.choices[0].message.content or ""
    assert "INVOICE" in text.upper() and "4821" in text


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_vision_formats(client: openai.OpenAI, fmt: str, mime: str) -> None:
    image = text_image("TOTAL 77", fmt=fmt)
    reply = client.chat.completions.create(
        model="rapidocr",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(image, mime)}}]}],
    )
    assert "77" in (reply.choices[0].message.content or "")


def test_several_images_in_one_message(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="rapidocr",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(text_image("ALPHA 1"))}},
                    {"type": "image_url", "image_url": {"url": data_uri(text_image("BRAVO 2"))}},
                ],
            }
        ],
    )
    text = (reply.choices[0].message.content or "").upper()
    assert "ALPHA" in text and "BRAVO" in text
    assert reply.usage is not None and reply.usage.prompt_tokens == 2


RECEIPT = data_uri(text_image("TOTAL 42.50 EUR"))


def test_ocr_pipeline_hands_text_to_chat_model(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2-ocr",
        stream=True,
        max_tokens=40,
        temperature=0,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the total amount?"},
                    {"type": "image_url", "image_url": {"url": RECEIPT}},
                ],
            }
        ],
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "42.50" in text


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_rank_paraphrase_above_unrelated(client: openai.OpenAI) -> None:
    result = client.embeddings.create(
        model="all-minilm",
        input=[
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The stock market fell sharply on Tuesday.",
        ],
    )
    vectors = [d.embedding for d in result.data]
    assert len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert result.usage.prompt_tokens > 10


def test_embeddings_base64_and_dimensions(client: openai.OpenAI) -> None:
    # the openai client asks for base64 by default and decodes it: a 64-dim vector round-trips
    result = client.embeddings.create(model="all-minilm", input="hello", dimensions=64)
    assert len(result.data[0].embedding) == 64
    assert abs(sum(v * v for v in result.data[0].embedding) - 1.0) < 1e-3


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_empty_messages_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smollm2", messages=[])
    assert info.value.body["param"] == "messages"  # type: ignore[index]


def test_image_to_text_only_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="smollm2",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(text_image("X"))}}]}
            ],
        )
    assert "does not support images" in info.value.message


def test_embeddings_on_chat_model_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="smollm2", input="hi")


@pytest.mark.parametrize(
    "url,needle",
    [
        ("data:image/png;base64,@@@not-base64@@@", "invalid base64"),
        ("data:image/png;base64," + "aGVsbG8gd29ybGQ=", "not a supported image"),
        ("data:image/png;base64,", "empty"),
        ("ftp://example.com/a.png", "data URI"),
    ],
)
def test_bad_images_are_400(client: openai.OpenAI, url: str, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="rapidocr", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]
        )
    assert needle in info.value.message


@pytest.mark.parametrize(
    "body,param",
    [
        (b"{not json", None),
        (b'{"model": "smollm2", "messages": "hello"}', "messages"),
        (b'{"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}', "messages"),
        (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature"),
        (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "max_tokens"),
        (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "n": 3}', "n"),
        (b"[]", None),
    ],
)
def test_malformed_requests_are_400_in_openai_shape(server: ServerProcess, body: bytes, param: str | None) -> None:
    response = httpx.post(
        server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param:
        assert str(error["param"]).startswith(param)


def test_oversized_body_is_413_before_upload(server: ServerProcess) -> None:
    import http.client
    import json
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )  # no body follows: the answer must not wait for it
        reply = http.client.HTTPResponse(sock)
        reply.begin()
        assert reply.status == 413
        assert json.loads(reply.read())["error"]["code"] == "payload_too_large"
        reply.close()


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop"
    parsed = json.loads(reply.choices[0].message.content or "")
    assert list(parsed) == ["city"] and isinstance(parsed["city"], str)


def test_unknown_model_retrieve_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("does-not-exist")
