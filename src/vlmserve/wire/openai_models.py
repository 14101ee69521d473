"""OpenAI wire schemas of requests: what the public routes validate, and what the runners read back.

Responses are built as plain dicts by wire/openai_answers.py (faster than models, and one place for both the
routes and the runners). Unknown fields are accepted and ignored; every number is bounded (wire/bounds.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.wire.bounds import MAX_TOP_LOGPROBS, Bool, Dimensions, KeepAlive, Seed, TokenId, Tokens, TopK


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


class FunctionCall(_Lenient):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] = "{}"  # JSON text; an object (as some clients send) is taken too


class ToolCallItem(_Lenient):
    """A call in an assistant message of the history (or of an engine's answer)."""

    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    reasoning_content: str | None = None  # assistant: its reasoning, as llama.cpp and DeepSeek send it back


class FunctionDef(_Lenient):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Bool | None = None


class Tool(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Lenient):
    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


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
    repeat_penalty: float | None = Field(default=None, ge=0, le=100)  # llama.cpp's extension
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
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: Bool | None = None
    logprobs: Bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's: `enable_thinking` is read, the rest ignored


class CompletionRequest(_Sampling):
    model: str = ""
    prompt: str | list[str]
    max_tokens: Tokens | None = 16
    echo: Bool = False
    suffix: str | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)  # legacy completions: the top n of each token


class EmbeddingRequest(_Lenient):
    model: str = ""
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Dimensions | None = None
    user: str | None = None
    keep_alive: KeepAlive = None
