"""Anthropic Messages API wire schemas of requests (`POST /v1/messages`, `/v1/messages/count_tokens`).

Content blocks are told apart by `type`; a message's content may be a plain string. Unknown fields (such as
`cache_control`, `citations`) are accepted and ignored; every number and list is bounded (wire/bounds.py).
Answers are plain dicts built by api/anthropic/codec.py and events.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from vlmserve.wire.bounds import MAX_TOKENS, Bool, KeepAlive, Tokens, TopK
from vlmserve.wire.openai_models import _Lenient

MAX_MESSAGES = 4096
MAX_BLOCKS = 4096  # content blocks of one message
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 1000  # characters of one stop sequence
MIN_THINKING_BUDGET = 1024  # Anthropic's own minimum
ID = Annotated[str, Field(min_length=1, max_length=200)]
ToolName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")]


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class Base64Source(_Lenient):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class URLSource(_Lenient):
    type: Literal["url"]
    url: str = Field(min_length=1)


class FileSource(_Lenient):
    type: Literal["file"]  # refused: no Files API for images here
    file_id: str


ImageSource = Annotated[Base64Source | URLSource | FileSource, Field(discriminator="type")]


class ImageBlock(_Lenient):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(_Lenient):
    type: Literal["document"]  # refused: no document (PDF, plain-text source) inputs
    source: dict[str, Any] | None = None


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: ID
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any] = Field(default_factory=dict)


ToolResultPart = Annotated[TextBlock | ImageBlock | DocumentBlock, Field(discriminator="type")]


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: ID
    content: str | Annotated[list[ToolResultPart], Field(max_length=MAX_BLOCKS)] | None = None
    is_error: Bool | None = None


class ThinkingBlock(_Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None  # accepted and ignored: answers carry an empty signature


class RedactedThinkingBlock(_Lenient):
    type: Literal["redacted_thinking"]  # encrypted by another server: nothing to read, left out of the prompt
    data: str = ""


Block = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Lenient):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(max_length=MAX_BLOCKS)]


class Tool(_Lenient):
    """A client tool. Anthropic's server tools (web_search, bash, ...) have their own `type`: refused."""

    type: Literal["custom"] | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any]


class _ChoiceBase(_Lenient):
    disable_parallel_tool_use: Bool | None = None


class ToolChoiceAuto(_ChoiceBase):
    type: Literal["auto"]


class ToolChoiceAny(_ChoiceBase):
    type: Literal["any"]


class ToolChoiceTool(_ChoiceBase):
    type: Literal["tool"]
    name: str = Field(min_length=1, max_length=128)


class ToolChoiceNone(_Lenient):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingEnabled(_Lenient):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=MIN_THINKING_BUDGET, le=MAX_TOKENS)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(_Lenient):
    type: Literal["disabled"]


class ThinkingAdaptive(_Lenient):
    type: Literal["adaptive"]  # the model decides: its default
    display: Literal["summarized", "omitted"] | None = None


ThinkingConfig = Annotated[ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")]


class Metadata(_Lenient):
    user_id: str | None = Field(default=None, max_length=256)  # the client's turn in the queue


class _Context(_Lenient):
    """What both `POST /v1/messages` and `POST /v1/messages/count_tokens` take to build the prompt."""

    model: str = ""
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | Annotated[list[TextBlock], Field(max_length=MAX_BLOCKS)] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(_Context):
    max_tokens: Tokens
    stop_sequences: list[Annotated[str, Field(max_length=MAX_STOP_LENGTH)]] | None = Field(
        default=None, max_length=MAX_STOP_SEQUENCES
    )
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None
    metadata: Metadata | None = None
    stream: Bool = False
    service_tier: str | None = None  # accepted and ignored
    keep_alive: KeepAlive = None  # vlmserve extension, Ollama semantics


class CountTokensRequest(_Context):
    pass
