"""OpenAI /v1/audio/transcriptions: a multipart upload, transcribed by an audio-capable model.

The upload becomes one chat request whose user message holds the audio, so it takes the same path as an
`input_audio` chat part (capability check, media limits, scheduler, runner) and engines need no second
protocol. `language` (ISO-639-1, its form checked here) and `prompt` travel with the sampling options to the
engine, which checks the language against the model (runners/speech_engine.py): an unknown one is a 400.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from vlmserve.api.forms import FILE_FIELD, multipart_body, multipart_file
from vlmserve.api.state import JSONBytes, client_of, state_of
from vlmserve.api.wire import JsonRoute
from vlmserve.domain.types import ChatRequest, Message, SamplingParams
from vlmserve.errors import BadRequest
from vlmserve.media.audio import prepare_audio_async

router = APIRouter(prefix="/v1/audio", tags=["openai"], route_class=JsonRoute)
ResponseFormat = Literal["json", "text", "verbose_json"]
_FORMATS: tuple[str, ...] = ("json", "text", "verbose_json")


def _temperature(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest("temperature must be a number", param="temperature") from None
    if not 0 <= value <= 1:
        raise BadRequest("temperature must be between 0 and 1", param="temperature")
    return value


def _language(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    if not re.fullmatch(r"[A-Za-z]{2,3}", raw.strip()):  # ISO-639-1 (Whisper also has "haw" and "yue")
        raise BadRequest("language must be an ISO-639-1 code such as 'en'", param="language")
    return raw.strip().lower()


def _body(text: str, fmt: ResponseFormat, duration: float, language: str | None) -> Response:
    if fmt == "text":
        return PlainTextResponse(text)
    body: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        body = {
            "task": "transcribe",
            "language": language or "",
            "duration": round(duration, 3),
            "text": text,
            "segments": [],
        }
    return JSONBytes(body)


@router.post(
    "/transcriptions",
    openapi_extra=multipart_body({"file": FILE_FIELD, "model": {"type": "string"}, "prompt": {"type": "string"},
                                  "response_format": {"type": "string", "enum": list(_FORMATS)},
                                  "temperature": {"type": "number", "minimum": 0, "maximum": 1},
                                  "language": {"type": "string", "maxLength": 3}}),
)  # fmt: skip
async def transcriptions(request: Request) -> Response:
    _, upload, fields = await multipart_file(request, ("file",), "a 'file' field with the audio and a 'model' field")
    fmt = fields.get("response_format") or "json"
    if fmt not in _FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(_FORMATS)}", param="response_format")
    language = _language(fields.get("language"))
    state = state_of(request)
    media = state.chat.media
    data = await upload.read()
    # decoded here once: the duration is needed for verbose_json, and the pipeline passes AudioParts through
    audio = await prepare_audio_async(data, media.audio, field="file")
    sampling = SamplingParams(temperature=_temperature(fields.get("temperature")), language=language,
                              transcript_prompt=fields.get("prompt") or None)  # fmt: skip
    domain = ChatRequest(model=fields.get("model", ""), messages=[Message(role="user", parts=[audio])],
                         sampling=sampling)  # fmt: skip
    domain.client = client_of(request, fields.get("user"))
    result = await state.chat.collect(await state.chat.chat(domain))
    return _body(result.text, cast(ResponseFormat, fmt), audio.duration, language)
