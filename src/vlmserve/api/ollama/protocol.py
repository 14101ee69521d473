"""Ollama wire schemas (requests). Unknown fields are accepted and ignored, as Ollama does."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.api.wire import (
    MAX_CONTEXT,
    MAX_GPU_LAYERS,
    MAX_THREADS,
    MAX_TOKENS,
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


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None


class ChatRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(default_factory=list)
    stream: Bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


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
