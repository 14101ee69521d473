"""Upload endpoints for people coming from hand-written Flask vision wrappers and the "VLM deployment" FastAPI
service.

POST /process            multipart `image` + `message`                -> {"response": ...}
POST /analyze            JSON {"prompt", "image_base64", "model"?}      -> {"result", "response", "model", "usage"}
POST /analyze/optimized  the same body and answer (every image is resized and re-encoded for the model anyway)
POST /analyze/upload     multipart `file` (or `image`); `prompt` from the query string or the form -> as /analyze
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from vlmserve.api.forms import FILE_FIELD, multipart_body, multipart_file
from vlmserve.api.state import JSONBytes, state_of
from vlmserve.api.wire import MAX_TOKENS, JsonRoute, Tokens, check_text
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


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0, le=2**53)
    completion_tokens: int = Field(ge=0, le=2**53)


class AnalyzeResponse(BaseModel):
    result: str = Field(description="the answer (the deployment service's field)")
    response: str = Field(description="the same answer (the Flask wrapper's field)")
    model: str
    usage: Usage


class ProcessResponse(BaseModel):
    response: str


_TOKENS = {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS}


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
        "result": result.text,
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


@router.post(
    "/process",
    response_model=ProcessResponse,
    openapi_extra=multipart_body({"image": FILE_FIELD, "file": FILE_FIELD, "message": {"type": "string"},
                              "prompt": {"type": "string"}, "model": {"type": "string"}, "max_tokens": _TOKENS}),
)  # fmt: skip
async def process(request: Request) -> Response:
    image, fields = await _form_image(request, "image", "file")
    prompt = fields.get("message") or fields.get("prompt") or DEFAULT_PROMPT
    answer = await _ask(request, prompt, image, fields.get("model"), _int_field(fields, "max_tokens"))
    return JSONBytes({"response": answer["response"]})


@router.post("/analyze", response_model=AnalyzeResponse)
async def analyze(body: AnalyzeRequest, request: Request) -> Response:
    image = decode_base64(body.image_base64.split(",", 1)[-1], field="image_base64")
    return JSONBytes(await _ask(request, body.prompt, image, body.model, body.max_tokens))


@router.post("/analyze/optimized", response_model=AnalyzeResponse)
async def analyze_optimized(body: AnalyzeRequest, request: Request) -> Response:
    """The deployment service's preprocessing route: the media pipeline already converts every image to RGB,
    shrinks it to the model's `max_image_side` and re-encodes it, so this is /analyze under its name."""
    return await analyze(body, request)


@router.post(
    "/analyze/upload",
    response_model=AnalyzeResponse,
    openapi_extra=multipart_body({"file": FILE_FIELD, "image": FILE_FIELD, "prompt": {"type": "string"},
                              "model": {"type": "string"}, "max_tokens": _TOKENS}),
)  # fmt: skip
async def analyze_upload(request: Request, prompt: str | None = Query(None, max_length=1_000_000)) -> Response:
    """`prompt` as the deployment service took it (a query parameter) or as a form field; the query wins."""
    image, fields = await _form_image(request, "file", "image")
    text = (prompt and check_text(prompt, "prompt")) or fields.get("prompt") or fields.get("message") or DEFAULT_PROMPT
    return JSONBytes(await _ask(request, text, image, fields.get("model"), _int_field(fields, "max_tokens")))
