"""Pure functions: Ollama wire <-> domain."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from vlmserve.api.ollama import agentic
from vlmserve.api.ollama import protocol as p
from vlmserve.api.wire import engine_seed
from vlmserve.backends.engines import traits_of
from vlmserve.backends.pool import public_url
from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    ImageInput,
    ImageURL,
    Message,
    Part,
    ResponseFormat,
    SamplingParams,
    TextPart,
    Timings,
    Usage,
)
from vlmserve.errors import BadRequest
from vlmserve.media.images import decode_base64

OLLAMA_API_VERSION = "0.12.0"  # the Ollama API level this server speaks


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def sampling(options: p.Options | None) -> SamplingParams:
    if options is None:
        return SamplingParams()
    stop = options.stop
    return SamplingParams(
        max_tokens=options.num_predict if options.num_predict and options.num_predict > 0 else None,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        seed=engine_seed(options.seed),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        repeat_penalty=options.repeat_penalty,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
    )


def response_format(fmt: str | dict[str, Any] | None) -> ResponseFormat:
    if fmt == "json":
        return ResponseFormat(kind="json")
    if isinstance(fmt, dict):
        return ResponseFormat(kind="json_schema", schema=fmt)
    return ResponseFormat()


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # base64 has no ':', so this prefix always means a URL


def _image(text: str, field: str) -> Part:
    """Base64 as Ollama sends it; a URL (which Ollama itself refuses) goes to the media fetcher, which decides
    on its scheme (http(s), file:// under media_file_root; any other scheme is a 400 naming it)."""
    if text[:5].lower() == "data:":
        return ImageInput(decode_base64(text.split(",", 1)[-1], field=field), field=field)
    if _SCHEME.match(text):
        return ImageURL(text, field=field)
    return ImageInput(decode_base64(text, field=field), field=field)


def _images(images: list[str] | None, field: str) -> list[Part]:
    return [_image(b64, f"{field}[{i}]") for i, b64 in enumerate(images or [])]


def chat_to_domain(req: p.ChatRequest) -> ChatRequest:
    messages = []
    for i, m in enumerate(req.messages):
        parts: list[Part] = [TextPart(m.content), *_images(m.images, f"messages[{i}].images")]
        name = (m.tool_name or m.name) if m.role == "tool" else None
        calls = agentic.calls_in(i, m)
        messages.append(Message(role=m.role, parts=parts, tool_calls=calls, name=name, thinking=m.thinking))
    agentic.link_tool_results(messages)
    return ChatRequest(
        model=req.model,
        messages=messages,
        sampling=sampling(req.options),
        response_format=response_format(req.format),
        stream=req.stream,
        keep_alive=keep_alive_seconds(req.keep_alive),
        engine_options=engine_options(req.options),
        tools=agentic.tools(req.tools),
        think=agentic.think(req.think),
        logprobs=agentic.logprobs(req.logprobs, req.top_logprobs),
    )


def generate_to_domain(req: p.GenerateRequest) -> ChatRequest | CompletionRequest:
    keep_alive = keep_alive_seconds(req.keep_alive)
    if req.context:
        raise BadRequest("context (token history) is not supported: send the history to /api/chat", param="context")
    if req.template:
        raise BadRequest(
            "a request's own template is not supported: the model's chat template is used", param="template"
        )
    if req.raw or req.suffix:  # fill-in-the-middle is a completion around the suffix (engines that take it)
        if req.images:
            raise BadRequest("raw mode and suffix do not take images", param="images")
        return CompletionRequest(
            model=req.model,
            prompt=req.prompt,
            sampling=sampling(req.options),
            stream=req.stream,
            keep_alive=keep_alive,
            engine_options=engine_options(req.options),
            logprobs=agentic.logprobs(req.logprobs, req.top_logprobs),
            suffix=req.suffix or None,
        )
    messages = []
    if req.system:
        messages.append(Message(role="system", parts=[TextPart(req.system)]))
    messages.append(Message(role="user", parts=[TextPart(req.prompt), *_images(req.images, "images")]))
    return ChatRequest(
        model=req.model,
        messages=messages,
        sampling=sampling(req.options),
        response_format=response_format(req.format),
        stream=req.stream,
        keep_alive=keep_alive,
        engine_options=engine_options(req.options),
        think=agentic.think(req.think),
        logprobs=agentic.logprobs(req.logprobs, req.top_logprobs),
    )


def embed_to_domain(req: p.EmbedRequest) -> EmbedRequest:
    inputs = [req.input] if isinstance(req.input, str) else list(req.input)
    if not inputs or any(not text for text in inputs):
        raise BadRequest("input must be a non-empty string or list of non-empty strings", param="input")
    return EmbedRequest(
        model=req.model,
        inputs=inputs,
        truncate=req.truncate,
        dimensions=req.dimensions,
        keep_alive=keep_alive_seconds(req.keep_alive),
        engine_options=engine_options(req.options),
    )


def final_stats(timings: Timings, usage: Usage) -> dict[str, Any]:
    return {
        "total_duration": timings.total_ns,
        "load_duration": timings.load_ns,
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": timings.prompt_eval_ns,
        "eval_count": usage.completion_tokens,
        "eval_duration": timings.eval_ns,
    }


def digest(spec: ModelSpec) -> str:
    """A public name of the model's content: its name, engine and files, the remote model and the engines it runs
    on (URLs without a password), a pipeline's members. Never the upstream key; options and defaults neither."""
    identity = {
        "name": spec.name,
        "engine": spec.engine,
        "files": [spec.path, spec.mmproj, spec.tokenizer, spec.draft_model],
        "remote": [spec.remote_model, *(public_url(url) for url in spec.urls)],
        "pipeline": [spec.ocr_model, spec.chat_model],
    }
    return hashlib.sha256(orjson.dumps(identity)).hexdigest()


def details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": traits_of(spec).file_format or spec.engine,  # remote engines and pipelines: the engine's name
        "family": spec.family or spec.engine,
        "families": [spec.family or spec.engine],
        "parameter_size": "",
        "quantization_level": "",
    }


def model_entry(spec: ModelSpec, size: int, modified: float) -> dict[str, Any]:
    return {
        "name": tagged(spec.name),
        "model": tagged(spec.name),
        "modified_at": datetime.fromtimestamp(modified, UTC).isoformat().replace("+00:00", "Z"),
        "size": size,
        "digest": digest(spec),
        "details": details(spec),
    }


def expires_iso(expires_in: float | None) -> str:
    """The wall-clock time `expires_in` seconds from now (the scheduler's snapshot says how many)."""
    if expires_in is None:
        return "2318-01-01T00:00:00Z"  # Ollama's way of saying "never" for a pinned/forever model
    wall = time.time() + expires_in
    try:
        return datetime.fromtimestamp(wall, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):  # infinite, or past year 9999: a keep_alive of ages
        return "2318-01-01T00:00:00Z"


def engine_options(options: p.Options | None) -> dict[str, int] | None:
    """Ollama options that need the engine restarted (num_ctx, num_thread, num_gpu); the rest are sampling."""
    if options is None:
        return None
    mapping = {"context_size": options.num_ctx, "threads": options.num_thread, "gpu_layers": options.num_gpu}
    chosen = {key: value for key, value in mapping.items() if value is not None}
    return chosen or None
