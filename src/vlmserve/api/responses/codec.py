"""Responses API <-> ChatService: input items (with a stored conversation before them) to a domain
`ChatRequest`, and a `ChatResult` to the response object's `output` items and `usage`.

Items map onto chat messages: `instructions` is the first system message (never carried over from a previous
response, as OpenAI does), `message` items are messages (`developer` as system), consecutive `function_call`
items are one assistant message's tool calls, `function_call_output` is a `tool` message answering its call,
and a `reasoning` item is the next assistant message's thinking.
"""

from __future__ import annotations

import secrets
from typing import Any

from vlmserve.api.responses import protocol as p
from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.types import (
    ChatRequest,
    ChatResult,
    ImageInput,
    ImageURL,
    Message,
    Part,
    ResponseFormat,
    SamplingParams,
    TextPart,
    ThinkLevel,
    TokenLogprob,
    ToolCall,
    Tools,
    ToolSpec,
    Usage,
)
from vlmserve.errors import BadRequest
from vlmserve.media.images import bytes_from_url, is_data_uri

LOGPROBS_INCLUDE = "message.output_text.logprobs"
_EFFORT: dict[str, bool | ThinkLevel] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# --- wire -> domain ---


def _image(part: p.InputImage, field: str) -> Part:
    if part.image_url is None:
        raise BadRequest(
            f"{field}: input_image needs image_url (a data URI or an http(s) URL); file_id is not supported",
            param=f"{field}.image_url",
        )
    url = part.image_url
    if not is_data_uri(url) and url.lower().startswith(("http://", "https://", "file://")):
        return ImageURL(url, field=f"{field}.image_url")  # fetched by the media pipeline, under its policy
    return ImageInput(bytes_from_url(url, field=f"{field}.image_url"), field=f"{field}.image_url")


def _parts(content: str | list[p.ContentPart] | list[p.ToolOutputPart], field: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        where = f"{field}[{j}]"
        if isinstance(part, p.InputText | p.OutputText):
            parts.append(TextPart(part.text))
        elif isinstance(part, p.Refusal):
            parts.append(TextPart(part.refusal))
        elif isinstance(part, p.InputImage):
            parts.append(_image(part, where))
        else:
            raise BadRequest(f"{where}: input_file is not supported (send text or images)", param=where)
    return parts


def _reasoning_text(item: p.ReasoningItem) -> str:
    pieces = item.content if item.content else item.summary
    return "".join(piece.text for piece in pieces)


def items_to_messages(items: list[p.InputItem], instructions: str | None, first_index: int = 0) -> list[Message]:
    """`first_index`: how many items of a stored conversation come before the request's own, so that an error
    names the request's item as `input[i]`."""
    messages: list[Message] = [Message(role="system", parts=[TextPart(instructions)])] if instructions else []
    thinking: str | None = None
    for i, item in enumerate(items):
        field = f"input[{i - first_index}]" if i >= first_index else f"previous_response_id (item {i})"
        if isinstance(item, p.MessageItem):
            role = "system" if item.role == "developer" else item.role
            parts = _parts(item.content, f"{field}.content")
            if role == "user" and not parts:
                raise BadRequest(f"{field} has no content", param=f"{field}.content")
            messages.append(Message(role=role, parts=parts, thinking=thinking if role == "assistant" else None))
            thinking = None if role == "assistant" else thinking
        elif isinstance(item, p.FunctionCallItem):
            call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments or "{}")
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                last.tool_calls.append(call)  # the answer's text (if any), then its calls: one assistant turn
            else:
                messages.append(Message(role="assistant", parts=[], tool_calls=[call], thinking=thinking))
                thinking = None
        elif isinstance(item, p.FunctionCallOutputItem):
            parts = _parts(item.output, f"{field}.output")
            if any(not isinstance(part, TextPart) for part in parts):
                raise BadRequest(f"{field}.output: a function_call_output takes text only", param=f"{field}.output")
            messages.append(Message(role="tool", parts=parts, tool_call_id=item.call_id))
        else:
            thinking = (thinking or "") + _reasoning_text(item)
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    for message in messages:  # a tool message names its function too (Ollama engines take tool_name)
        if message.role == "tool" and message.tool_call_id in names:
            message.name = names[message.tool_call_id]
    return messages


def _tools(req: p._Context) -> Tools | None:
    choice = req.tool_choice
    if not req.tools:
        if choice is not None and choice not in ("auto", "none"):
            raise BadRequest("tool_choice needs tools", param="tool_choice")
        return None
    specs = [ToolSpec(t.name, t.description or "", t.parameters, t.strict) for t in req.tools]
    known = {t.name for t in specs}
    tools = Tools(specs=specs, parallel=req.parallel_tool_calls is not False)
    if isinstance(choice, p.NamedFunction):
        if choice.name not in known:
            raise BadRequest(f"tool_choice names '{choice.name}', which is not in tools", param="tool_choice")
        tools.choice, tools.name = "required", choice.name
    elif isinstance(choice, p.AllowedTools):
        allowed = [t.name for t in choice.tools]
        if unknown := [name for name in allowed if name not in known]:
            raise BadRequest(f"tool_choice.tools names '{unknown[0]}', which is not in tools", param="tool_choice")
        tools.specs = [t for t in specs if t.name in allowed]  # the model sees only the tools it may call
        tools.choice = choice.mode
    elif choice is not None:
        tools.choice = choice
    return tools


def _format(req: p._Context) -> ResponseFormat:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or isinstance(fmt, p.TextFormatPlain):
        return ResponseFormat()
    if isinstance(fmt, p.TextFormatJsonObject):
        return ResponseFormat(kind="json")
    return ResponseFormat(kind="json_schema", schema=fmt.schema_)


def _check_refused(req: p._Context) -> None:
    if req.conversation is not None:
        raise BadRequest("conversation is not supported: use previous_response_id", param="conversation")
    if req.conversation is None and req.previous_response_id is None and not req.input:
        raise BadRequest("input must not be empty", param="input")
    if isinstance(req, p.ResponsesRequest) and req.prompt is not None:
        raise BadRequest("prompt (stored prompt templates) is not supported", param="prompt")


def _logprobs(req: p.ResponsesRequest) -> int | None:
    if LOGPROBS_INCLUDE in (req.include or []):
        return req.top_logprobs or 0
    if req.top_logprobs is not None:
        raise BadRequest(f"top_logprobs needs include: ['{LOGPROBS_INCLUDE}']", param="top_logprobs")
    return None


def own_items(req: p._Context) -> list[p.InputItem]:
    if isinstance(req.input, str):
        return [p.MessageItem(role="user", content=req.input)]
    return list(req.input or [])


def to_chat(req: p._Context, history: list[p.InputItem]) -> ChatRequest:
    """The chat request of a Responses request whose stored conversation (previous responses' input and output
    items, oldest first) is `history`."""
    _check_refused(req)
    items = [*history, *own_items(req)]
    effort = req.reasoning.effort if req.reasoning is not None else None
    chat = ChatRequest(
        model=req.model,
        messages=items_to_messages(items, req.instructions, first_index=len(history)),
        response_format=_format(req),
        tools=_tools(req),
        think=_EFFORT[effort] if effort is not None else None,
        think_field="reasoning.effort",
    )
    if isinstance(req, p.ResponsesRequest):
        chat.sampling = SamplingParams(max_tokens=req.max_output_tokens, temperature=req.temperature, top_p=req.top_p)
        chat.stream = req.stream
        chat.keep_alive = keep_alive_seconds(req.keep_alive)
        chat.logprobs = _logprobs(req)
    return chat


# --- domain -> wire ---


def usage_object(usage: Usage, reasoning_tokens: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def logprobs_list(items: list[TokenLogprob] | None) -> list[dict[str, Any]]:
    def token(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8", "surrogatepass"))}

    return [{**token(i.token, i.logprob), "top_logprobs": [token(t, lp) for t, lp in i.top]} for i in items or []]


def text_part(text: str, logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs_list(logprobs)}


def message_item(item_id: str, text: str, status: str, logprobs: list[TokenLogprob] | None = None) -> dict[str, Any]:
    content = [text_part(text, logprobs)] if status != "in_progress" else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def call_item(item_id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": call.arguments}  # fmt: skip


def reasoning_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if status != "in_progress" else []
    return {"id": item_id, "type": "reasoning", "summary": [], "content": content}


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    status = "incomplete" if result.finish_reason == "length" else "completed"
    items: list[dict[str, Any]] = []
    if result.reasoning:
        items.append(reasoning_item(new_id("rs"), result.reasoning, status))
    if result.text or not result.tool_calls:
        items.append(message_item(new_id("msg"), result.text, status, result.logprobs))
    items += [call_item(new_id("fc"), call, "completed") for call in result.tool_calls]
    return items


def status_of(finish_reason: str) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) of a finished answer."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None
