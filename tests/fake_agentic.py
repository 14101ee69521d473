"""What the fake upstreams (fake_upstreams.py) answer to tools, reasoning and logprobs, in each protocol's form.

A request with `tools` (and OpenAI `tool_choice` other than "none") is answered with one call of the named
tool (or the first) with FAKE_ARGUMENTS; OpenAI streams it as OpenAI does (id and name first, then the
arguments in pieces), Ollama as current Ollama does (the whole call in one line, arguments as an object).
Reasoning asked (`reasoning_effort`, `chat_template_kwargs.enable_thinking`, Ollama `think`) comes first as
THINKING; logprobs asked come with each answer token.
"""

from __future__ import annotations

from typing import Any

import orjson

Body = dict[str, Any]
FAKE_ARGUMENTS = {"city": "Paris", "days": 3}
THINKING = ["Let me ", "think."]
CALL_ID = "call_fake0"


def called_tool(body: Body) -> str | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        return str(choice["function"]["name"])
    return str(tools[0]["function"]["name"])


def thinks(body: Body) -> bool:
    if "think" in body:  # Ollama
        return body["think"] not in (None, False)
    kwargs = body.get("chat_template_kwargs") or {}
    return body.get("reasoning_effort") not in (None, "none") or kwargs.get("enable_thinking") is True


def applies(body: Body) -> bool:
    return called_tool(body) is not None or thinks(body) or bool(body.get("logprobs"))


def _logprob(text: str, i: int) -> Body:
    return {"token": text, "logprob": -0.25 * (i + 1), "bytes": list(text.encode())}


def _openai_logprobs(body: Body, texts: list[str], start: int = 0) -> Body | None:
    if not body.get("logprobs"):
        return None
    top = int(body.get("top_logprobs") or 0)
    content = [
        {**_logprob(t, start + i), "top_logprobs": [_logprob(f"alt{j}", 4 + j) for j in range(top)]}
        for i, t in enumerate(texts)
    ]
    return {"content": content, "refusal": None}


def openai_answer(body: Body, texts: list[str]) -> tuple[Body, str]:
    """The message (and finish_reason) of a non-streamed answer."""
    message: Body = {"role": "assistant", "content": "".join(texts)}
    if thinks(body):
        message["reasoning_content"] = "".join(THINKING)
    name = called_tool(body)
    if name is not None:
        arguments = orjson.dumps(FAKE_ARGUMENTS).decode()
        message["content"] = None
        message["tool_calls"] = [
            {"id": CALL_ID, "type": "function", "function": {"name": name, "arguments": arguments}}
        ]
        return {"message": message, "logprobs": None}, "tool_calls"
    return {"message": message, "logprobs": _openai_logprobs(body, texts)}, "stop"


def openai_deltas(body: Body, texts: list[str]) -> tuple[list[Body], str]:
    """The choices of a streamed answer, in order (the caller wraps them in chunks), and the finish_reason."""
    choices: list[Body] = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    if thinks(body):
        choices += [{"index": 0, "delta": {"reasoning_content": t}, "finish_reason": None} for t in THINKING]
    name = called_tool(body)
    if name is not None:
        arguments = orjson.dumps(FAKE_ARGUMENTS).decode()
        first = {"index": 0, "id": CALL_ID, "type": "function", "function": {"name": name, "arguments": ""}}
        choices.append({"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None})
        for piece in (arguments[:5], arguments[5:12], arguments[12:]):
            call = {"index": 0, "function": {"arguments": piece}}
            choices.append({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None})
        return choices, "tool_calls"
    for i, text in enumerate(texts):
        choice: Body = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        if (logprobs := _openai_logprobs(body, [text], i)) is not None:
            choice["logprobs"] = logprobs
        choices.append(choice)
    return choices, "stop"


def ollama_messages(body: Body, texts: list[str], key: str) -> list[Body]:
    """The not-yet-done lines of an Ollama answer (each a dict of the fields besides model/created_at/done)."""
    lines: list[Body] = []
    chat = key == "message"
    if thinks(body):
        lines += [
            {"message": {"role": "assistant", "content": "", "thinking": t}}
            if chat
            else {"response": "", "thinking": t}
            for t in THINKING
        ]
    name = called_tool(body)
    if name is not None and chat:
        call = {"id": CALL_ID, "function": {"index": 0, "name": name, "arguments": FAKE_ARGUMENTS}}
        return [*lines, {"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]
    top = int(body.get("top_logprobs") or 0)
    for i, text in enumerate(texts):
        line: Body = {"message": {"role": "assistant", "content": text}} if chat else {"response": text}
        if body.get("logprobs"):
            alts = [{"token": f"alt{j}", "logprob": -1.0 - j} for j in range(top)]
            line["logprobs"] = [{"token": text, "logprob": -0.25 * (i + 1), "top_logprobs": alts}]
        lines.append(line)
    return lines


def ollama_merged(lines: list[Body], key: str) -> Body:
    """A non-streamed Ollama answer: its lines put together, as Ollama does."""
    out = dict(lines[-1])
    text = "".join(str((ln[key]["content"] if key == "message" else ln[key]) or "") for ln in lines)
    thinking = "".join(str((ln[key] if key == "message" else ln).get("thinking") or "") for ln in lines)
    calls = [c for ln in lines if key == "message" for c in ln[key].get("tool_calls") or []]
    body: Body = {"role": "assistant", "content": text} if key == "message" else {}
    if thinking:
        body["thinking"] = thinking
    if calls:
        body["tool_calls"] = calls
    logprobs = [lp for ln in lines for lp in ln.get("logprobs") or []]
    if logprobs:
        out["logprobs"] = logprobs
    if key == "message":
        out["message"] = body
    else:
        out.update(response=text, **body)
    return out
