"""Upload endpoints for people coming from hand-written Flask vision wrappers.

POST /process          multipart `image` + `message`           -> {"response": ...}
POST /analyze          JSON {"prompt", "image_base64", "model"?} -> {"response", "model", "usage"}
POST /analyze/upload   multipart `image` (or `file`) + `prompt`  -> same as /analyze
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from vlmserve.api.forms import multipart_file
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import MAX_TOKENS, JsonRoute, Tokens
from vlmserve.domain.types import ChatRequest, ImageInput, Message, SamplingParams, TextPart
from vlmserve.errors import BadRequest
from vlmserve.media.images import decode_base64

router = APIRouter(tags=["simple"], route_class=JsonRoute)
DEFAULT_PROMPT = "Describe this image."


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = DEFAULT_PROMPT
    image_base64: str = Field(min_length=1)
    model: str | None = None
    max_tokens: Tokens | None = None


async def _ask(
    request: Request, prompt: str, image: bytes, model: str | None, max_tokens: int | None
) -> dict[str, Any]:
    state = state_of(request)
    domain = ChatRequest(
        model=model or state.catalog.default_vision_model or "",
        messages=[Message(role="user", parts=[TextPart(prompt or DEFAULT_PROMPT), ImageInput(image, field="image")])],
        sampling=SamplingParams(max_tokens=max_tokens),
    )
    result = await state.chat.collect(await state.chat.chat(domain))
    return {
        "response": result.text,
        "model": domain.model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens},
    }


async def _form_image(request: Request, *names: str) -> tuple[bytes, dict[str, str]]:
    name, upload, fields = await multipart_file(request, names, "an image file field")
    data = await upload.read()
    if not data:
        raise BadRequest(f"the '{name}' file is empty", param=name)
    return data, fields


def _int_field(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name)
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be an integer", param=name) from None
    if not 1 <= number <= MAX_TOKENS:
        raise BadRequest(f"'{name}' must be between 1 and {MAX_TOKENS}", param=name)
    return number


@router.post("/process")
async def process(request: Request) -> Response:
    image, fields = await _form_image(request, "image", "file")
    prompt = fields.get("message") or fields.get("prompt") or DEFAULT_PROMPT
    answer = await _ask(request, prompt, image, fields.get("model"), _int_field(fields, "max_tokens"))
    return JSONBytes({"response": answer["response"]})


@router.post("/analyze")
async def analyze(body: AnalyzeRequest, request: Request) -> Response:
    image = decode_base64(body.image_base64.split(",", 1)[-1], field="image_base64")
    return JSONBytes(await _ask(request, body.prompt, image, body.model, body.max_tokens))


@router.post("/analyze/upload")
async def analyze_upload(request: Request) -> Response:
    image, fields = await _form_image(request, "image", "file")
    prompt = fields.get("prompt") or fields.get("message") or DEFAULT_PROMPT
    return JSONBytes(await _ask(request, prompt, image, fields.get("model"), _int_field(fields, "max_tokens")))
