"""Pure functions: OpenAI wire <-> domain."""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

from vlmserve.api.openai import protocol as p
from vlmserve.api.wire import engine_seed
from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.types import (
    AudioInput,
    ChatRequest,
    ChatResult,
    CompletionRequest,
    EmbedRequest,
    EmbedResult,
    ImageInput,
    ImageURL,
    Message,
    Part,
    ResponseFormat,
    SamplingParams,
    TextPart,
    Usage,
    VideoInput,
    VideoURL,
)
from vlmserve.errors import BadRequest
from vlmserve.media.images import bytes_from_url, decode_base64, is_data_uri


def _stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise BadRequest("at most 4 stop sequences", param="stop")
    return [s for s in stops if s]


def _sampling(req: p._Sampling, max_tokens: int | None) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=engine_seed(req.seed),
        stop=_stop(req.stop),
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
    )


def _image(url: str, field: str) -> Part:
    """A data URI becomes bytes here; an http(s)/file URL is fetched later by the service (no I/O here)."""
    if not is_data_uri(url) and url.lower().startswith(("http://", "https://", "file://")):
        return ImageURL(url, field=field)
    return ImageInput(bytes_from_url(url, field=field), field=field)


def _video(url: str, field: str) -> Part:
    if not is_data_uri(url) and url.lower().startswith(("http://", "https://", "file://")):
        return VideoURL(url, field=field)
    return VideoInput(bytes_from_url(url, field=field), field=field)


def _message(index: int, msg: p.ChatMessage) -> Message:
    role = "system" if msg.role == "developer" else msg.role
    parts: list[Part] = []
    if isinstance(msg.content, str):
        parts.append(TextPart(msg.content))
    elif msg.content is not None:
        for j, part in enumerate(msg.content):
            field = f"messages[{index}].content[{j}]"
            if isinstance(part, p.TextContent):
                parts.append(TextPart(part.text))
            elif isinstance(part, p.ImageContent):
                url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
                parts.append(_image(url, f"{field}.image_url"))
            elif isinstance(part, p.VideoContent):
                url = part.video_url if isinstance(part.video_url, str) else part.video_url.url
                parts.append(_video(url, f"{field}.video_url"))
            else:
                audio_field = f"{field}.input_audio"
                data = decode_base64(part.input_audio.data, field=audio_field)
                parts.append(AudioInput(data, format=part.input_audio.format, field=audio_field))
    if role == "user" and not parts:
        raise BadRequest(f"messages[{index}] has no content", param=f"messages[{index}].content")
    return Message(role=role, parts=parts)


def _response_format(fmt: p.ResponseFormat | None) -> ResponseFormat:
    if fmt is None or fmt.type == "text":
        return ResponseFormat()
    if fmt.type == "json_object":
        return ResponseFormat(kind="json")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise BadRequest("response_format json_schema needs json_schema.schema", param="response_format")
    return ResponseFormat(kind="json_schema", schema=fmt.json_schema.schema_)


def chat_to_domain(req: p.ChatCompletionRequest) -> ChatRequest:
    return ChatRequest(
        model=req.model,
        messages=[_message(i, m) for i, m in enumerate(req.messages)],
        sampling=_sampling(req, req.max_completion_tokens or req.max_tokens),
        response_format=_response_format(req.response_format),
        stream=req.stream,
        keep_alive=keep_alive_seconds(req.keep_alive),
    )


def completion_to_domain(req: p.CompletionRequest) -> CompletionRequest:
    if isinstance(req.prompt, list):
        if len(req.prompt) != 1:
            raise BadRequest("only a single prompt per request is supported", param="prompt")
        prompt = req.prompt[0]
    else:
        prompt = req.prompt
    return CompletionRequest(
        model=req.model,
        prompt=prompt,
        sampling=_sampling(req, req.max_tokens),
        stream=req.stream,
        keep_alive=keep_alive_seconds(req.keep_alive),
    )


def embed_to_domain(req: p.EmbeddingRequest) -> EmbedRequest:
    raw = req.input
    if isinstance(raw, str):
        inputs = [raw]
    elif raw and all(isinstance(x, str) for x in raw):
        inputs = [str(x) for x in raw]
    elif not raw:
        raise BadRequest("input must not be empty", param="input")
    else:
        raise BadRequest("token-id inputs are not supported; send text", param="input")
    if any(not text for text in inputs):
        raise BadRequest("input must not contain empty strings", param="input")
    return EmbedRequest(
        model=req.model, inputs=inputs, dimensions=req.dimensions, keep_alive=keep_alive_seconds(req.keep_alive)
    )


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def chat_response(rid: str, model: str, result: ChatResult) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": usage_dict(result.usage),
    }


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def completion_response(rid: str, model: str, result: ChatResult) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}],
        "usage": usage_dict(result.usage),
    }


def completion_chunk(rid: str, model: str, created: int, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


def embeddings_response(model: str, result: EmbedResult, encoding: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result.vectors)],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's paginated list object (files, batches)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
