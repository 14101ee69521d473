"""Client for OpenAI-compatible engines: local runners and remote vLLM / llama.cpp server / LM Studio / OpenAI.

Always streams from the engine (one code path; non-streaming answers are assembled above). Closing the
returned iterator closes the HTTP connection, which makes llama.cpp and vLLM abort the generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from vlmserve.backends import openai_wire as wire
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult, Usage
from vlmserve.errors import (
    BadRequest,
    EngineError,
    EngineTimeout,
    ModelNotFound,
    Overloaded,
    Unavailable,
    VlmServeError,
)


def engine_error_from_response(status: int, body: bytes, engine: str, retry_after: str | None = None) -> VlmServeError:
    """Map an engine's HTTP error to our tree, keeping its message (and the engine's Retry-After)."""
    message = body.decode("utf-8", "replace")[:500]
    try:
        parsed = orjson.loads(body)
        err = parsed.get("error", parsed)
        message = str(err.get("message", err) if isinstance(err, dict) else err)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    text = f"{engine}: {message}"
    if status == 404:
        return ModelNotFound(text)
    retry = float(retry_after) if retry_after and retry_after.isdigit() else 1.0
    if status == 429:
        return Overloaded(text, retry_after=retry)
    if status == 503:
        return Unavailable(text, retry_after=retry)
    if 400 <= status < 500:
        return BadRequest(text, code="engine_rejected")
    return EngineError(f"{text} (HTTP {status})")


def make_timeout(connect: float, read: float) -> httpx.Timeout:
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


class OpenAICompatibleBackend:
    """Talks OpenAI's HTTP API; `base_url` ends before `/v1` or includes it (both accepted)."""

    def __init__(self, spec: ModelSpec, base_url: str, *, api_key: str | None = None) -> None:
        self.spec = spec
        root = base_url.rstrip("/")
        self._v1 = root if root.endswith("/v1") else f"{root}/v1"
        self._root = self._v1[: -len("/v1")]
        self._remote_model = spec.remote_model or spec.name
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=make_timeout(spec.connect_timeout, spec.read_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        self._started = False

    @property
    def loaded(self) -> bool:
        return self._started

    @property
    def memory_bytes(self) -> int | None:
        return None

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    async def aclose(self) -> None:
        await self._client.aclose()

    async def health(self) -> bool:
        for url in (f"{self._root}/health", f"{self._v1}/models"):
            try:
                response = await self._client.get(url, timeout=2.0)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return True
        return False

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        return self._stream("/chat/completions", wire.chat_body(request, self._remote_model), chat=True)

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        return self._stream("/completions", wire.completion_body(request, self._remote_model), chat=False)

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        body: dict[str, Any] = {"model": self._remote_model, "input": request.inputs}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data = await self._post_json("/embeddings", body)
        rows = sorted(data.get("data", []), key=lambda row: row.get("index", 0))
        usage = data.get("usage") or {}
        return EmbedResult(
            vectors=[list(map(float, row["embedding"])) for row in rows],
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
        )

    async def _post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post(f"{self._v1}{path}", content=orjson.dumps(body), headers=_JSON)
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"{self.spec.name}: engine timed out") from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.spec.name}: engine unreachable ({exc.__class__.__name__})") from exc
        if response.status_code != 200:
            raise engine_error_from_response(
                response.status_code, response.content, self.spec.name, response.headers.get("retry-after")
            )
        result: dict[str, Any] = orjson.loads(response.content)
        return result

    async def _stream(self, path: str, body: dict[str, Any], *, chat: bool) -> AsyncIterator[ChatChunk]:
        usage: Usage | None = None
        finish: ChatChunk | None = None
        try:
            request = self._client.build_request("POST", f"{self._v1}{path}", content=orjson.dumps(body), headers=_JSON)
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    raise engine_error_from_response(
                        response.status_code,
                        await response.aread(),
                        self.spec.name,
                        response.headers.get("retry-after"),
                    )
                done = False
                async for line in response.aiter_lines():
                    # read to the end of the body even after [DONE]: only a fully read response goes back to
                    # the keep-alive pool (a new TCP connection per request costs more than the rest together)
                    if done or not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        continue
                    event = orjson.loads(payload)
                    if "error" in event:
                        raise EngineError(f"{self.spec.name}: {event['error']}")
                    if event.get("usage"):
                        usage = Usage(
                            event["usage"].get("prompt_tokens", 0), event["usage"].get("completion_tokens", 0)
                        )
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        reason = wire.finish_reason_from_wire(choice.get("finish_reason"))
                        if text:
                            yield ChatChunk(text=text)
                        if reason is not None:
                            finish = ChatChunk(finish_reason=reason)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"{self.spec.name}: engine timed out") from exc
        except httpx.HTTPError as exc:
            raise EngineError(f"{self.spec.name}: engine connection failed ({exc.__class__.__name__})") from exc
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"{self.spec.name}: engine sent malformed stream data") from exc
        if finish is None:
            raise EngineError(f"{self.spec.name}: engine stream ended without a finish reason")
        finish.usage = usage or Usage()
        yield finish


_JSON = {"Content-Type": "application/json"}
