"""The response object (`"object": "response"`) and the stored input items, as plain dicts.

`envelope` is what a response echoes of its request (instructions, tools, sampling, text format, ...), the same
from `response.created` to `response.completed` and in `GET /v1/responses/{id}`; `finished` adds the output,
usage and final status.
"""

from __future__ import annotations

import time
from typing import Any

from vlmserve.api.responses import codec
from vlmserve.api.responses import protocol as p
from vlmserve.domain.types import ChatResult
from vlmserve.errors import VlmServeError


def _dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True) if model is not None else None


def _tool(tool: p.FunctionTool) -> dict[str, Any]:
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters,
            "strict": tool.strict}  # fmt: skip


def _choice(choice: p.ToolChoice | None) -> Any:
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else _dump(choice)


def envelope(req: p.ResponsesRequest, rid: str, model: str, created: int | None = None) -> dict[str, Any]:
    reasoning = req.reasoning or p.Reasoning()
    fmt = _dump(req.text.format) if req.text is not None and req.text.format is not None else {"type": "text"}
    verbosity = req.text.verbosity if req.text is not None and req.text.verbosity else "medium"
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()) if created is None else created,
        "status": "in_progress",
        "background": req.background,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary or reasoning.generate_summary},
        "store": req.store,
        "temperature": req.temperature,
        "text": {"format": fmt, "verbosity": verbosity},
        "tool_choice": _choice(req.tool_choice),
        "tools": [_tool(t) for t in req.tools or []],
        "top_logprobs": req.top_logprobs,
        "top_p": req.top_p,
        "truncation": req.truncation or "disabled",
        "usage": None,
        "user": req.user,
        "metadata": req.metadata or {},
    }


def finished(base: dict[str, Any], result: ChatResult) -> dict[str, Any]:
    status, incomplete = codec.status_of(result.finish_reason)
    return {
        **base,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "incomplete_details": incomplete,
        "output": codec.output_items(result),
        "usage": codec.usage_object(result.usage),
    }


def failed(base: dict[str, Any], exc: VlmServeError, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error = {"code": exc.code or exc.type, "message": exc.message}
    return {**base, "status": "failed", "error": error, "output": output or []}


def _normal_content(role: str, content: Any) -> Any:
    if isinstance(content, str):  # as OpenAI lists them: a string content becomes one text part
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    return content


def stored_items(req: p._Context) -> list[dict[str, Any]]:
    """The request's own input items as stored and listed (`GET /v1/responses/{id}/input_items`), each with an
    id. They are read back (`history`) as items of the next request of the conversation."""
    items: list[dict[str, Any]] = []
    for item in codec.own_items(req):
        obj: dict[str, Any] = _dump(item)
        if isinstance(item, p.MessageItem):
            obj = {**obj, "content": _normal_content(item.role, obj["content"]), "status": item.status or "completed"}
            obj.setdefault("id", codec.new_id("msg"))
        elif isinstance(item, p.FunctionCallItem):
            obj.setdefault("id", codec.new_id("fc"))
            obj.setdefault("status", "completed")
        elif isinstance(item, p.FunctionCallOutputItem):
            obj.setdefault("id", codec.new_id("fco"))
            obj.setdefault("status", "completed")
        else:
            obj.setdefault("id", codec.new_id("rs"))
        items.append(obj)
    return items
