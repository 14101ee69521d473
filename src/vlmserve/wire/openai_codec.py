"""OpenAI requests <-> domain: the one decoder (public routes, batch lines, runners) and the one encoder (what
the HTTP backend sends to runners and remote OpenAI-compatible engines)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import ValidationError

from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.types import (
    AudioInput,
    AudioPart,
    ChatRequest,
    CompletionRequest,
    ImageInput,
    ImagePart,
    ImageURL,
    Message,
    Part,
    ResponseFormat,
    SamplingParams,
    TextPart,
    ThinkLevel,
    ToolCall,
    Tools,
    ToolSpec,
    VideoInput,
    VideoURL,
)
from vlmserve.errors import BadRequest
from vlmserve.media.images import bytes_from_url, decode_base64, image_to_data_uri, is_data_uri
from vlmserve.wire import openai_models as p
from vlmserve.wire.bounds import engine_seed

# --- wire -> domain ---


def _stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if len(stops) > 4:
        raise BadRequest("at most 4 stop sequences", param="stop")
    return [s for s in stops if s]


def _sampling(req: p._Sampling, max_tokens: int | None) -> SamplingParams:
    extra = req.model_extra or {}  # the speech runner's own fields (set by /v1/audio/transcriptions only)
    language, prompt = extra.get("language"), extra.get("transcript_prompt")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        seed=engine_seed(req.seed),
        stop=_stop(req.stop),
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repeat_penalty=req.repeat_penalty,
        language=language if isinstance(language, str) else None,
        transcript_prompt=prompt if isinstance(prompt, str) else None,
    )


def _media(url: str, field: str, *, video: bool) -> Part:
    """A data URI becomes bytes here; an http(s)/file URL is fetched later by the service (no I/O here)."""
    if not is_data_uri(url) and url.lower().startswith(("http://", "https://", "file://")):
        return VideoURL(url, field=field) if video else ImageURL(url, field=field)
    data = bytes_from_url(url, field=field)
    return VideoInput(data, field=field) if video else ImageInput(data, field=field)


def _parts(index: int, content: str | list[p.ContentPart] | None) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for j, part in enumerate(content or []):
        field = f"messages[{index}].content[{j}]"
        if isinstance(part, p.TextContent):
            parts.append(TextPart(part.text))
        elif isinstance(part, p.ImageContent):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            parts.append(_media(url, f"{field}.image_url", video=False))
        elif isinstance(part, p.VideoContent):
            url = part.video_url if isinstance(part.video_url, str) else part.video_url.url
            parts.append(_media(url, f"{field}.video_url", video=True))
        else:
            audio_field = f"{field}.input_audio"
            data = decode_base64(part.input_audio.data, field=audio_field)
            parts.append(AudioInput(data, format=part.input_audio.format, field=audio_field))
    return parts


def arguments_text(arguments: str | dict[str, Any]) -> str:
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def _message(index: int, msg: p.ChatMessage) -> Message:
    role = "system" if msg.role == "developer" else msg.role
    parts = _parts(index, msg.content)
    calls = [
        ToolCall(id=c.id or f"call_{index}_{j}", name=c.function.name, arguments=arguments_text(c.function.arguments))
        for j, c in enumerate(msg.tool_calls or [])
    ]
    if role == "user" and not parts:
        raise BadRequest(f"messages[{index}] has no content", param=f"messages[{index}].content")
    if role == "tool" and not msg.tool_call_id:
        raise BadRequest(f"messages[{index}]: a tool message needs tool_call_id", param=f"messages[{index}]")
    return Message(
        role=role,
        parts=parts,
        tool_calls=calls,
        tool_call_id=msg.tool_call_id,
        name=msg.name if role == "tool" else None,
        thinking=msg.reasoning_content,
    )


def _response_format(fmt: p.ResponseFormat | None) -> ResponseFormat:
    if fmt is None or fmt.type == "text":
        return ResponseFormat()
    if fmt.type == "json_object":
        return ResponseFormat(kind="json")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise BadRequest("response_format json_schema needs json_schema.schema", param="response_format")
    return ResponseFormat(kind="json_schema", schema=fmt.json_schema.schema_)


def _tools(req: p.ChatCompletionRequest) -> Tools | None:
    choice = req.tool_choice
    if not req.tools:
        if isinstance(choice, p.NamedToolChoice) or choice == "required":
            raise BadRequest("tool_choice needs tools", param="tool_choice")
        return None
    specs = [
        ToolSpec(t.function.name, t.function.description or "", t.function.parameters, t.function.strict)
        for t in req.tools
    ]
    tools = Tools(specs=specs, parallel=req.parallel_tool_calls is not False)
    if isinstance(choice, p.NamedToolChoice):
        if choice.function.name not in {t.name for t in specs}:
            raise BadRequest(f"tool_choice names '{choice.function.name}', which is not in tools", param="tool_choice")
        tools.choice, tools.name = "required", choice.function.name
    elif choice is not None:
        tools.choice = choice
    return tools


_EFFORT: dict[str, bool | ThinkLevel] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
}


def _think(req: p.ChatCompletionRequest) -> bool | ThinkLevel | None:
    if req.reasoning_effort is not None:
        return _EFFORT[req.reasoning_effort]
    enable = (req.chat_template_kwargs or {}).get("enable_thinking")
    return enable if isinstance(enable, bool) else None


def _logprobs(req: p.ChatCompletionRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise BadRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    return (req.top_logprobs or 0) if req.logprobs else None


def _name_tool_results(messages: list[Message]) -> list[Message]:
    """A tool message names its function too (Ollama engines take `tool_name`, not the call id)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    for message in messages:
        if message.role == "tool" and message.name is None and message.tool_call_id in names:
            message.name = names[message.tool_call_id]
    return messages


def chat_from_wire(req: p.ChatCompletionRequest) -> ChatRequest:
    return ChatRequest(
        model=req.model,
        messages=_name_tool_results([_message(i, m) for i, m in enumerate(req.messages)]),
        sampling=_sampling(req, req.max_completion_tokens or req.max_tokens),
        response_format=_response_format(req.response_format),
        stream=req.stream,
        keep_alive=keep_alive_seconds(req.keep_alive),
        tools=_tools(req),
        think=_think(req),
        logprobs=_logprobs(req),
        think_field="reasoning_effort" if req.reasoning_effort is not None else "chat_template_kwargs.enable_thinking",
    )


def completion_from_wire(req: p.CompletionRequest) -> CompletionRequest:
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
        logprobs=req.logprobs,
        suffix=req.suffix or None,
    )


# --- domain -> wire (what engines are sent) ---


def _content(message: Message) -> str | list[dict[str, Any]]:
    if not message.has_images and not message.has_audio:
        return message.text
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
    return content


def message_to_wire(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    if message.thinking:
        out["reasoning_content"] = message.thinking
    return out


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


def tool_to_wire(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "description": tool.description}
    function["parameters"] = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def tools_to_wire(tools: Tools) -> dict[str, Any]:
    choice: Any = tools.choice
    if tools.name:
        choice = {"type": "function", "function": {"name": tools.name}}
    body: dict[str, Any] = {"tools": [tool_to_wire(t) for t in tools.specs], "tool_choice": choice}
    if not tools.parallel:
        body["parallel_tool_calls"] = False
    return body


def think_to_wire(think: bool | ThinkLevel | None) -> dict[str, Any]:
    """Reasoning as OpenAI-compatible engines take it: a level is `reasoning_effort`; on/off is the chat
    template's `enable_thinking` (vLLM's and llama.cpp's `chat_template_kwargs`)."""
    if think is None:
        return {}
    if isinstance(think, str):
        return {"reasoning_effort": think, "chat_template_kwargs": {"enable_thinking": True}}
    return {"chat_template_kwargs": {"enable_thinking": think}}


def logprobs_to_wire(logprobs: int | None, *, chat: bool) -> dict[str, Any]:
    if logprobs is None:
        return {}
    return {"logprobs": True, "top_logprobs": logprobs} if chat else {"logprobs": logprobs}


def chat_body(request: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_wire(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_to_wire(request.sampling),
        **think_to_wire(request.think),
        **logprobs_to_wire(request.logprobs, chat=True),
    }
    fmt = response_format_to_wire(request.response_format)
    if fmt is not None:
        body["response_format"] = fmt
    if request.tools is not None:
        body.update(tools_to_wire(request.tools))
    return body


def completion_body(request: CompletionRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling_to_wire(request.sampling),
        **logprobs_to_wire(request.logprobs, chat=False),
    }
    if request.suffix is not None:
        body["suffix"] = request.suffix
    return body


def _first_error(exc: ValidationError) -> BadRequest:
    first = exc.errors()[0]
    param = ".".join(str(x) for x in first.get("loc", ())) or None
    return BadRequest(f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param)


def chat_from_body(body: dict[str, Any]) -> ChatRequest:
    """A chat body as a runner receives it (JSON already parsed): validated by the same schema as the routes."""
    try:
        return chat_from_wire(p.ChatCompletionRequest.model_validate(body))
    except ValidationError as exc:
        raise _first_error(exc) from None


def completion_from_body(body: dict[str, Any]) -> CompletionRequest:
    try:
        return completion_from_wire(p.CompletionRequest.model_validate(body))
    except ValidationError as exc:
        raise _first_error(exc) from None
