"""OpenAI Responses API wire schemas of requests (`POST /v1/responses`, `/v1/responses/input_tokens`).

Input items are told apart by `type`; a message item may leave it out (`{"role", "content"}`, the SDK's
EasyInputMessage). Unknown fields are accepted and ignored; every number is bounded (wire/bounds.py).
Answers are plain dicts built by api/responses/codec.py and events.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from vlmserve.wire.bounds import MAX_TOP_LOGPROBS, Bool, KeepAlive, Tokens
from vlmserve.wire.openai_models import _Lenient

MAX_ITEMS = 4096  # input items of one request
MAX_TOOLS = 128
MAX_METADATA = 16  # OpenAI's own limits: 16 keys, 64-character keys, 512-character values
ID = Annotated[str, Field(min_length=1, max_length=200)]


class InputText(_Lenient):
    type: Literal["input_text"]
    text: str


class InputImage(_Lenient):
    type: Literal["input_image"]
    image_url: str | None = Field(default=None, min_length=1)
    file_id: str | None = None  # refused: send the image as image_url (a data URI or an http(s) URL)
    detail: Literal["auto", "low", "high", "original"] | None = None


class InputFile(_Lenient):
    type: Literal["input_file"]  # refused: no file inputs
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(_Lenient):
    type: Literal["output_text"]  # an assistant message of the history
    text: str


class Refusal(_Lenient):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]
ToolOutputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class MessageItem(_Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[ContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(_Lenient):
    type: Literal["function_call"]
    call_id: ID
    name: str = Field(min_length=1, max_length=64)
    arguments: str = "{}"
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Lenient):
    type: Literal["function_call_output"]
    call_id: ID
    output: str | list[ToolOutputPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningText(_Lenient):
    type: Literal["reasoning_text", "summary_text"]
    text: str


class ReasoningItem(_Lenient):
    """A reasoning item of the history (an earlier answer's): its text goes back as the assistant's thinking."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[ReasoningText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


def _item_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("type")
        return kind if isinstance(kind, str) else ("message" if "role" in value else None)
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]


class FunctionTool(_Lenient):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Bool | None = None


class NamedFunction(_Lenient):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTools(_Lenient):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[NamedFunction] = Field(min_length=1, max_length=MAX_TOOLS)


ToolChoice = Literal["none", "auto", "required"] | NamedFunction | AllowedTools


class TextFormatPlain(_Lenient):
    type: Literal["text"]


class TextFormatJsonObject(_Lenient):
    type: Literal["json_object"]


class TextFormatJsonSchema(_Lenient):
    type: Literal["json_schema"]
    name: str = Field(default="response", min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: Bool | None = None


TextFormat = Annotated[TextFormatPlain | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")]


class TextConfig(_Lenient):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # a hint: accepted and ignored


class Reasoning(_Lenient):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None  # the reasoning comes whole, not summarised
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Lenient):
    include_obfuscation: Bool | None = None  # accepted and ignored: no obfuscation padding is sent


class _Context(_Lenient):
    """What both `POST /v1/responses` and `POST /v1/responses/input_tokens` take to build the prompt."""

    model: str = ""
    input: str | Annotated[list[InputItem], Field(max_length=MAX_ITEMS)] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: Bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    previous_response_id: ID | None = None
    conversation: str | dict[str, Any] | None = None  # refused with a 400: no conversations objects
    truncation: Literal["auto", "disabled"] | None = None


class ResponsesRequest(_Context):
    max_output_tokens: Tokens | None = None
    max_tool_calls: Tokens | None = None  # accepted: at most one answer's calls are made per response anyway
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    include: list[str] | None = Field(default=None, max_length=16)
    store: Bool = True
    background: Bool = False
    stream: Bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=MAX_METADATA
    )
    prompt: dict[str, Any] | None = None  # refused with a 400: no stored prompt templates
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    keep_alive: KeepAlive = None  # vlmserve extension, Ollama semantics


class InputTokensRequest(_Context):
    pass
