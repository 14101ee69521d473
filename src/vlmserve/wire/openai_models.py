"""OpenAI wire schemas (requests only: responses are built as plain dicts for speed). Validation lives here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.api.wire import Bool, Dimensions, KeepAlive, Seed, TokenId, Tokens, TopK


class _Lenient(BaseModel):
    # Unknown fields are accepted and ignored, as OpenAI-compatible servers do (clients send many extras).
    # Every number is bounded (api/wire.py) and no float may be NaN or infinite.
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class TextContent(_Lenient):
    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImageContent(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL | str


class InputAudioData(_Lenient):
    data: str = Field(min_length=1)  # base64
    format: Literal["wav", "mp3", "flac"] = "wav"


class InputAudio(_Lenient):
    type: Literal["input_audio"]
    input_audio: InputAudioData


class VideoURL(_Lenient):
    url: str = Field(min_length=1)


class VideoContent(_Lenient):
    """vLLM's extension: a video as a data: URI or an http(s) URL; sampled into frames for the model."""

    type: Literal["video_url"]
    video_url: VideoURL | str


ContentPart = Annotated[TextContent | ImageContent | InputAudio | VideoContent, Field(discriminator="type")]


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Lenient):
    include_usage: Bool = False


class JsonSchemaSpec(_Lenient):
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: Bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class _Sampling(_Lenient):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None
    seed: Seed | None = None  # int64; engines get it modulo 2**32 (wire.engine_seed)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    n: int | None = Field(default=None, ge=1, le=1, description="only n=1 is supported")
    stream: Bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    keep_alive: KeepAlive = None  # vlmserve extension, Ollama semantics


class ChatCompletionRequest(_Sampling):
    model: str = ""
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(_Sampling):
    model: str = ""
    prompt: str | list[str]
    max_tokens: Tokens | None = 16
    echo: Bool = False
    suffix: str | None = None


class EmbeddingRequest(_Lenient):
    model: str = ""
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None
    keep_alive: KeepAlive = None
