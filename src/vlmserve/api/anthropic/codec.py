"""Anthropic Messages API <-> ChatService: a request's `system` and `messages` to a domain `ChatRequest`, and an
answer's parts to content blocks, `stop_reason` and `usage`.

Blocks map onto chat messages: `system` is the first system message (text blocks joined by newlines); a user
message's `tool_result` blocks become `tool` messages answering their calls (first, as the chat protocols
want them right after the calls), its `text` and `image` blocks one user message after them; an assistant
message's `text` blocks are its text, `thinking` blocks its reasoning, `tool_use` blocks its tool calls
(`input` dumped to JSON arguments). `redacted_thinking` (another server's encrypted reasoning) is left out.

Stop sequences are found here in the text (api/anthropic/stops.py), not by the engine: engines cut the text at
a stop sequence without saying which one, or whether one was met at all, and the answer must name it.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from vlmserve.api.anthropic import protocol as p
from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.types import (
    ChatRequest,
    ImageInput,
    ImageURL,
    Message,
    Part,
    SamplingParams,
    TextPart,
    ToolCall,
    Tools,
    ToolSpec,
    Usage,
)
from vlmserve.errors import BadRequest
from vlmserve.media.images import decode_base64


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --- wire -> domain ---


def _image(block: p.ImageBlock, field: str) -> Part:
    source = block.source
    where = f"{field}.source"
    if isinstance(source, p.Base64Source):
        return ImageInput(decode_base64(source.data, field=f"{where}.data"), field=f"{where}.data")
    if isinstance(source, p.URLSource):
        if not source.url.lower().startswith(("http://", "https://")):
            raise BadRequest(f"{where}.url: expected an http(s) URL", param=f"{where}.url")
        return ImageURL(source.url, field=f"{where}.url")  # fetched by the media pipeline, under its policy
    raise BadRequest(f"{where}.type: file sources are not supported (send base64 or url)", param=f"{where}.type")


def _tool_result(block: p.ToolResultBlock, field: str) -> Message:
    content = block.content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, p.TextBlock):
                where = f"{field}.content[{j}]"
                raise BadRequest(f"{where}: a tool_result takes text blocks only", param=where)
            texts.append(part.text)
        text = "\n".join(texts)
    if block.is_error:  # the chat protocols have no error flag on a tool message: the model reads it
        text = f"Error: {text}"
    return Message(role="tool", parts=[TextPart(text)], tool_call_id=block.tool_use_id)


def _user(index: int, blocks: list[p.Block]) -> list[Message]:
    results: list[Message] = []
    parts: list[Part] = []
    for j, block in enumerate(blocks):
        field = f"messages[{index}].content[{j}]"
        if isinstance(block, p.TextBlock):
            parts.append(TextPart(block.text))
        elif isinstance(block, p.ImageBlock):
            parts.append(_image(block, field))
        elif isinstance(block, p.ToolResultBlock):
            results.append(_tool_result(block, field))
        elif isinstance(block, p.DocumentBlock):
            raise BadRequest(f"{field}: document blocks are not supported (send text or images)", param=field)
        elif not isinstance(block, p.RedactedThinkingBlock):
            raise BadRequest(f"{field}.type: a user message cannot hold {block.type} blocks", param=f"{field}.type")
    if not parts and not results:
        raise BadRequest(f"messages[{index}].content must not be empty", param=f"messages[{index}].content")
    return [*results, Message(role="user", parts=parts)] if parts else results


def _assistant(index: int, blocks: list[p.Block]) -> Message:
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(blocks):
        field = f"messages[{index}].content[{j}]"
        if isinstance(block, p.TextBlock):
            texts.append(block.text)
        elif isinstance(block, p.ThinkingBlock):
            thinking.append(block.thinking)
        elif isinstance(block, p.ToolUseBlock):
            calls.append(ToolCall(id=block.id, name=block.name, arguments=orjson.dumps(block.input).decode()))
        elif not isinstance(block, p.RedactedThinkingBlock):
            raise BadRequest(
                f"{field}.type: an assistant message cannot hold {block.type} blocks", param=f"{field}.type"
            )
    parts: list[Part] = [TextPart("".join(texts))] if texts else []
    return Message(role="assistant", parts=parts, tool_calls=calls, thinking="".join(thinking) or None)


def system_text(system: str | list[p.TextBlock] | None) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    return "\n".join(block.text for block in system) or None


def to_messages(req: p._Context) -> list[Message]:
    system = system_text(req.system)
    messages: list[Message] = [Message(role="system", parts=[TextPart(system)])] if system else []
    for i, message in enumerate(req.messages):
        if isinstance(message.content, str):
            messages.append(Message(role=message.role, parts=[TextPart(message.content)]))
        elif message.role == "user":
            messages += _user(i, message.content)
        else:
            messages.append(_assistant(i, message.content))
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    for chat in messages:  # a tool message names its function too (Ollama engines take tool_name)
        if chat.role == "tool" and chat.tool_call_id in names:
            chat.name = names[chat.tool_call_id]
    return messages


def _tools(req: p._Context) -> Tools | None:
    choice = req.tool_choice
    if not req.tools:
        if choice is not None and not isinstance(choice, p.ToolChoiceAuto | p.ToolChoiceNone):
            raise BadRequest("tool_choice: needs tools", param="tool_choice")
        return None
    specs = [ToolSpec(t.name, t.description or "", t.input_schema) for t in req.tools]
    tools = Tools(specs=specs)
    if isinstance(choice, p.ToolChoiceNone):
        tools.choice = "none"
        return tools
    if choice is not None and choice.disable_parallel_tool_use:
        tools.parallel = False
    if isinstance(choice, p.ToolChoiceAny):
        tools.choice = "required"
    elif isinstance(choice, p.ToolChoiceTool):
        if choice.name not in {t.name for t in specs}:
            raise BadRequest(f"tool_choice.name: '{choice.name}' is not in tools", param="tool_choice.name")
        tools.choice, tools.name = "required", choice.name
    return tools


def _think(req: p._Context) -> bool | None:
    thinking = req.thinking
    if thinking is None or isinstance(thinking, p.ThinkingAdaptive):
        return None  # the model's default
    if isinstance(thinking, p.ThinkingDisabled):
        return False
    if isinstance(req, p.MessagesRequest) and thinking.budget_tokens >= req.max_tokens:
        raise BadRequest("thinking.budget_tokens: must be less than max_tokens", param="thinking.budget_tokens")
    return True  # engines take thinking on or off (or a level): the budget is checked, not sent


def shows_thinking(req: p._Context) -> bool:
    thinking = req.thinking
    return not isinstance(thinking, p.ThinkingEnabled | p.ThinkingAdaptive) or thinking.display != "omitted"


def to_chat(req: p._Context) -> ChatRequest:
    chat = ChatRequest(
        model=req.model, messages=to_messages(req), tools=_tools(req), think=_think(req), think_field="thinking"
    )
    if isinstance(req, p.MessagesRequest):
        # stop_sequences stay here (the answer names the one met); the model's own stops still apply
        chat.sampling = SamplingParams(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                                       top_k=req.top_k)  # fmt: skip
        chat.stream = req.stream
        chat.keep_alive = keep_alive_seconds(req.keep_alive)
    return chat


# --- domain -> wire ---


def usage_object(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}  # fmt: skip


def stop_reason(finish_reason: str, stop_sequence: str | None) -> str:
    if stop_sequence is not None:
        return "stop_sequence"
    if finish_reason == "length":
        return "max_tokens"
    return "tool_use" if finish_reason == "tool_calls" else "end_turn"


def message_object(msg_id: str, model: str) -> dict[str, Any]:
    """The message as `message_start` shows it: no content, no stop_reason yet."""
    return {"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage_object(Usage())}  # fmt: skip


def tool_input(arguments: str) -> dict[str, Any] | None:
    """A call's JSON arguments as the `input` object, or None when they are not a JSON object."""
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
