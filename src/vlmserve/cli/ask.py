"""`vlmserve ask [--model M] [--image PATH|URL ...] "prompt"`: one chat turn against a running server, the answer
streamed to stdout as it is generated, timings on stderr. Image paths travel as data URIs, URLs as they are."""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer

from vlmserve.cli.common import (
    ApiKeyOption,
    JsonOption,
    ServerOption,
    auth_headers,
    err,
    error_message,
    fail,
    server_url,
    unreachable,
)

URL_PREFIXES = ("http://", "https://", "data:", "file://")


def image_part(reference: str) -> dict[str, Any]:
    """An OpenAI `image_url` part: URLs go as they are, a local file as a data URI."""
    if reference.startswith(URL_PREFIXES):
        return {"type": "image_url", "image_url": {"url": reference}}
    path = Path(reference).expanduser()
    if not path.is_file():
        fail(f"no such image file: {reference} (give a path, or an http(s):// URL)", code=2)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"  # the server sniffs the real format from the bytes
    encoded = base64.b64encode(path.read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{encoded}"}}


def chat_body(prompt: str, images: list[str], model: str | None, system: str | None,
              max_tokens: int | None, temperature: float | None) -> dict[str, Any]:  # fmt: skip
    content: str | list[dict[str, Any]] = prompt
    if images:
        content = [{"type": "text", "text": prompt}, *(image_part(i) for i in images)]
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"messages": messages}
    optional = {"model": model, "max_tokens": max_tokens, "temperature": temperature}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    last_token: float | None = None
    text_chunks: int = 0
    model: str = ""
    usage: dict[str, Any] = field(default_factory=dict)

    def saw_text(self) -> None:
        self.last_token = time.perf_counter()
        self.first_token = self.first_token or self.last_token
        self.text_chunks += 1

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        tokens = int(self.usage.get("completion_tokens") or 0)
        parts = [self.model or "?", f"{tokens} tokens in {elapsed:.2f} s"]
        if self.first_token is not None and self.last_token is not None:
            parts.append(f"first token after {self.first_token - self.started:.2f} s")
            # A rate only from text that arrived over time: a pipeline that answers in one piece (OCR) has none
            generating = self.last_token - self.first_token
            if self.text_chunks > 1 and tokens > 1 and generating > 0:
                parts.append(f"{(tokens - 1) / generating:.1f} tokens/s")
        return " · ".join(parts)


def _event(raw: bytes) -> dict[str, Any] | None:
    line = raw.strip()
    if not line.startswith(b"data:") or line == b"data: [DONE]":
        return None
    event: dict[str, Any] = json.loads(line[5:])
    return event


async def _stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Timings:
    timings = Timings()
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with http.post(url, json=body) as response:
        if response.status >= 400:
            fail(f"server answered {response.status}: {error_message(await response.json(content_type=None))}")
        async for raw in response.content:
            event = _event(raw)
            if event is None:
                continue
            if "error" in event:
                fail(f"the answer broke off: {error_message(event)}")
            timings.model = event.get("model") or timings.model
            timings.usage = event.get("usage") or timings.usage
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    timings.saw_text()
                    sys.stdout.write(text)
                    sys.stdout.flush()
    sys.stdout.write("\n")
    return timings


async def _once(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with http.post(url, json=body) as response:
        text = await response.text()
        if response.status >= 400:
            fail(f"server answered {response.status}: {error_message(json.loads(text or 'null'))}")
    sys.stdout.write(text.rstrip("\n") + "\n")


async def _ask(base: str, api_key: str | None, body: dict[str, Any], raw_json: bool, quiet: bool) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(headers=auth_headers(api_key), timeout=timeout) as http:
        url = f"{base}/v1/chat/completions"
        if raw_json:
            await _once(http, url, body)
            return
        timings = await _stream(http, url, body)
    if not quiet:
        err.print(timings.line(), style="dim")


def ask(
    prompt: Annotated[str | None, typer.Argument(help="the question (read from stdin when left out)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model name (default: the server's)")] = None,
    image: Annotated[
        list[str] | None, typer.Option("--image", "-i", metavar="PATH|URL", help="an image file or URL, repeatable")
    ] = None,
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="longest answer, in tokens")] = None,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="sampling temperature")] = None,
    host: ServerOption = "http://127.0.0.1:11434",
    api_key: ApiKeyOption = None,
    json_: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no timings on stderr")] = False,
) -> None:
    """Ask a running server one question (with images) and stream the answer."""
    if prompt is None:
        if sys.stdin.isatty():
            fail("give a prompt, or pipe one on stdin", code=2)
        prompt = sys.stdin.read().strip()
    body = chat_body(prompt, image or [], model, system, max_tokens, temperature)
    base = server_url(host)
    try:
        asyncio.run(_ask(base, api_key, body, json_, quiet))
    except aiohttp.ClientConnectorError as exc:
        unreachable(base, exc)
    except aiohttp.ClientError as exc:  # the server went away mid-answer
        fail(f"the connection to {base} broke: {exc}")
