"""The multi-model AI server's generation route: `POST /generate/{model}` for every catalog model.

Body `{"prompt", "image"?, "audio"?, "video"?, "max_new_tokens"?, "temperature"?}` (media as base64); answer
`{"response", "model_type", "generation_method", "memory_optimized"}` plus the model that answered and token
usage. The parts sent decide what the model must take: an image or video needs vision, audio needs audio (400
otherwise). Errors on this route and the server's admin routes are its `{"error", "details"}`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from vlmserve.api.simple import Usage
from vlmserve.api.state import AppState, JSONBytes, client_of, state_of
from vlmserve.api.wire import JsonRoute, Tokens
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    AudioInput,
    ChatRequest,
    ImageInput,
    Message,
    Part,
    SamplingParams,
    TextPart,
    VideoInput,
)
from vlmserve.errors import ModelNotFound, VlmServeError, retry_after_of
from vlmserve.media.images import decode_base64

router = APIRouter(tags=["multi-model server"], route_class=JsonRoute)


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    image: str | None = Field(None, description="base64 image (a data: URI prefix is accepted)")
    audio: str | None = Field(None, description="base64 audio: WAV, FLAC or MP3")
    video: str | None = Field(None, description="base64 video; sampled into frames")
    max_new_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=100)


class GenerateAnswer(BaseModel):
    response: str
    model_type: str = Field(description="the model as named in the path")
    generation_method: str = Field(description="<text|vision|audio|video|multimodal>_<cpu|gpu|remote>")
    memory_optimized: Literal[True] = Field(description="the scheduler's memory budget governs loading")
    model: str = Field(description="the catalog model that answered (a fallback's name if one did)")
    usage: Usage


class MultiModelError(BaseModel):
    error: str
    details: str


def error_response(exc: VlmServeError) -> Response:
    """The error shape of this route and of the server's admin routes (api/surfaces.py names the paths)."""
    details = exc.details or (f"{exc.type} (param: {exc.param})" if exc.param else exc.type)
    retry = retry_after_of(exc)
    headers = {"Retry-After": str(int(max(1, retry)))} if retry is not None else None
    return JSONBytes({"error": exc.message, "details": details}, status_code=exc.status, headers=headers)


def _media(data: str, field: str) -> bytes:
    return decode_base64(data.split(",", 1)[-1] if data.startswith("data:") else data, field=field)


def _device(state: AppState, spec: ModelSpec) -> str:
    """Where the model ran: gpu when the scheduler placed any of it on a GPU (or the model is pinned to CUDA),
    cpu for other local models, remote for remote engines; a pipeline runs where its answering model does."""
    if spec.chat_model:
        return _device(state, state.catalog.get(spec.chat_model))
    if not spec.is_local:
        return "remote"
    on_gpu = state.scheduler.snapshot().model(spec).vram_bytes > 0
    return "gpu" if on_gpu or spec.device == "cuda" else "cpu"


@router.post(
    "/generate/{model:path}",
    response_model=GenerateAnswer,
    responses={400: {"model": MultiModelError}, 404: {"model": MultiModelError}},
)
async def generate(model: str, body: GenerateBody, request: Request) -> Response:
    state = state_of(request)
    try:
        spec = state.catalog.get(model)
    except ModelNotFound as exc:
        exc.details = "available models: " + ", ".join(s.name for s in state.catalog.all())
        raise
    parts: list[Part] = [TextPart(body.prompt)]
    kinds = []
    if body.image:
        parts.append(ImageInput(_media(body.image, "image"), field="image"))
        kinds.append("vision")
    if body.audio:
        parts.append(AudioInput(_media(body.audio, "audio"), field="audio"))
        kinds.append("audio")
    if body.video:
        parts.append(VideoInput(_media(body.video, "video"), field="video"))
        kinds.append("video")
    domain = ChatRequest(
        model=spec.name,
        messages=[Message(role="user", parts=parts)],
        sampling=SamplingParams(max_tokens=body.max_new_tokens, temperature=body.temperature),
        client=client_of(request),
    )
    stream = await state.chat.chat(domain)
    result = await state.chat.collect(stream)
    modality = "multimodal" if len(kinds) > 1 else kinds[0] if kinds else "text"
    return JSONBytes(
        {
            "response": result.text,
            "model_type": model,
            "generation_method": f"{modality}_{_device(state, state.catalog.get(stream.model))}",
            "memory_optimized": True,
            "model": stream.model,
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens},
        }
    )
