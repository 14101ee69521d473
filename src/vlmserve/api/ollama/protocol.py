"""Ollama wire schemas (requests). Unknown fields are accepted and ignored, as Ollama does."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Options(_Lenient):
    num_predict: int | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_ctx: int | None = Field(default=None, ge=256)
    num_thread: int | None = Field(default=None, ge=1)
    num_gpu: int | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None


class ChatRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(default_factory=list)
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: str | float | None = None


class GenerateRequest(_Lenient):
    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    images: list[str] | None = None
    raw: bool = False
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options | None = None
    keep_alive: str | float | None = None


class EmbedRequest(_Lenient):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    options: Options | None = None
    keep_alive: str | float | None = None


class LegacyEmbeddingsRequest(_Lenient):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: Options | None = None
    keep_alive: str | float | None = None


class ShowRequest(_Lenient):
    model: str = ""
    name: str = ""  # older clients send `name`
    verbose: bool = False
