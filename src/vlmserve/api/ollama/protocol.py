"""Ollama wire schemas (requests). Unknown fields are accepted and ignored, as Ollama does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.api.wire import (
    INT32_MAX,
    MAX_CONTEXT,
    MAX_GPU_LAYERS,
    MAX_THREADS,
    MAX_TOKENS,
    MAX_TOP_LOGPROBS,
    Bool,
    Dimensions,
    KeepAlive,
    Seed,
    TopK,
)


class _Lenient(BaseModel):
    # Every number is bounded (api/wire.py) and no float may be NaN or infinite.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class Options(_Lenient):
    num_predict: int | None = Field(default=None, ge=-2, le=MAX_TOKENS)  # -1: no limit, -2: fill the context
    temperature: float | None = Field(default=None, ge=0, le=100)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None
    seed: Seed | None = None  # int64 as in Ollama; engines get it modulo 2**32 (wire.engine_seed)
    stop: list[str] | str | None = None
    repeat_penalty: float | None = Field(default=None, ge=0, le=100)
    presence_penalty: float | None = Field(default=None, ge=-100, le=100)
    frequency_penalty: float | None = Field(default=None, ge=-100, le=100)
    num_ctx: int | None = Field(default=None, ge=256, le=MAX_CONTEXT)
    num_thread: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    num_gpu: int | None = Field(default=None, ge=-1, le=MAX_GPU_LAYERS)


class ToolFunctionCall(_Lenient):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)  # an object, as Ollama sends it
    index: int | None = Field(default=None, ge=0, le=1024)


class ToolCall(_Lenient):
    id: str | None = None
    function: ToolFunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None  # an assistant's reasoning, in the history
    tool_calls: list[ToolCall] | None = None  # assistant
    tool_name: str | None = None  # tool: the function whose result this is
    name: str | None = None  # older clients' tool_name


class ToolFunction(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: ToolFunction


Think = Bool | Literal["low", "medium", "high"] | None


class ChatRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(default_factory=list)
    stream: Bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    think: Think = None
    logprobs: Bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    template: str | None = None  # a non-empty one is refused (the model's template is the engine's)
    context: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = None  # deprecated; a non-empty one is refused


class GenerateRequest(_Lenient):
    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    images: list[str] | None = None
    raw: Bool = False
    stream: Bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    think: Think = None
    logprobs: Bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    template: str | None = None  # a non-empty one is refused (the model's template is the engine's)
    context: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = None  # deprecated; a non-empty one is refused


class EmbedRequest(_Lenient):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: Bool = True
    dimensions: Dimensions | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class LegacyEmbeddingsRequest(_Lenient):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None
    keep_alive: KeepAlive = None


class ShowRequest(_Lenient):
    model: str = ""
    name: str = ""  # older clients send `name`
    verbose: Bool = False
