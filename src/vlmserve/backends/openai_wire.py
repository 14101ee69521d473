"""Domain <-> OpenAI JSON for talking to engines (runners and remote OpenAI-compatible servers).

This is the engine side of the wire: plain dicts, no validation models. The public API surface has its own
validated protocol in api/openai.
"""

from __future__ import annotations

import base64
from typing import Any

from vlmserve.domain.types import (
    AudioInput,
    AudioPart,
    ChatRequest,
    CompletionRequest,
    FinishReason,
    ImageInput,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    SamplingParams,
    TextPart,
)
from vlmserve.media.images import bytes_from_url, decode_base64, image_to_data_uri


def message_to_wire(message: Message) -> dict[str, Any]:
    if not message.has_images and not message.has_audio:
        return {"role": message.role, "content": message.text}
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": image_to_data_uri(part)}})
        elif isinstance(part, AudioPart):
            data = base64.b64encode(part.data).decode("ascii")
            content.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        else:
            raise TypeError("images, audio and videos must be prepared before they reach an engine")
    return {"role": message.role, "content": content}


def sampling_to_wire(sampling: SamplingParams) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("max_tokens", "temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(sampling, key)
        if value is not None:
            body[key] = value
    if sampling.repeat_penalty is not None:
        body["repeat_penalty"] = sampling.repeat_penalty
    if sampling.stop:
        body["stop"] = sampling.stop
    # set by transcriptions only: the speech runner reads them; a remote engine sees two extra fields
    if sampling.language is not None:
        body["language"] = sampling.language
    if sampling.transcript_prompt is not None:
        body["transcript_prompt"] = sampling.transcript_prompt
    return body


def response_format_to_wire(fmt: ResponseFormat) -> dict[str, Any] | None:
    if fmt.kind == "json":
        return {"type": "json_object"}
    if fmt.kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt.schema or {}}}
    return None


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_wire(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_to_wire(request.sampling),
    }
    fmt = response_format_to_wire(request.response_format)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def completion_body(request: CompletionRequest, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": request.prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_to_wire(request.sampling),
    }


def finish_reason_from_wire(value: Any) -> FinishReason | None:
    if value is None:
        return None
    return "length" if value == "length" else "stop"


# --- runner side: wire -> domain (inputs already validated by the gateway) ---


def messages_from_wire(raw: list[dict[str, Any]]) -> list[Message]:
    messages: list[Message] = []
    for item in raw:
        content = item.get("content")
        parts: list[Part] = []
        if isinstance(content, str):
            parts.append(TextPart(content))
        elif isinstance(content, list):
            for piece in content:
                if piece.get("type") == "text":
                    parts.append(TextPart(str(piece.get("text", ""))))
                elif piece.get("type") == "image_url":
                    parts.append(ImageInput(bytes_from_url(piece["image_url"]["url"])))
                elif piece.get("type") == "input_audio":
                    audio = piece["input_audio"]
                    parts.append(AudioInput(decode_base64(str(audio["data"])), format=str(audio.get("format", ""))))
        messages.append(Message(role=item.get("role", "user"), parts=parts))
    return messages


def sampling_from_wire(body: dict[str, Any]) -> SamplingParams:
    stop = body.get("stop") or []
    return SamplingParams(
        max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        top_k=body.get("top_k"),
        seed=body.get("seed"),
        stop=[stop] if isinstance(stop, str) else list(stop),
        repeat_penalty=body.get("repeat_penalty"),
        language=body.get("language"),
        transcript_prompt=body.get("transcript_prompt"),
    )
