"""Plain typed data shared by every layer: no web, engine or database imports here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal


class Capability(StrEnum):
    COMPLETION = "completion"
    VISION = "vision"
    EMBEDDING = "embedding"
    AUDIO = "audio"
    TOOLS = "tools"  # function calling: `tools` in a request (Ollama: "does not support tools" without it)
    THINKING = "thinking"  # reasoning text apart from the answer: Ollama `think`, OpenAI `reasoning_effort`


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImageInput:
    """An image as the client sent it (undecoded bytes); `field` names it in error messages."""

    data: bytes
    field: str = "image"


@dataclass(frozen=True, slots=True)
class ImageURL:
    """An image the server fetches itself (http(s) or file:// URL) before any engine work; `field` as above."""

    url: str
    field: str = "image"


@dataclass(frozen=True, slots=True)
class ImagePart:
    """A decoded, model-ready image: encoded bytes (JPEG/PNG) plus what the pipeline learnt about it."""

    data: bytes
    mime: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class AudioInput:
    """Audio as the client sent it (undecoded bytes); `format` is the client's claim (wav, mp3, flac)."""

    data: bytes
    format: str = ""
    field: str = "input_audio"


@dataclass(frozen=True, slots=True)
class AudioPart:
    """Checked, model-ready audio: a 16 kHz mono 16-bit PCM WAV file and its duration in seconds."""

    data: bytes
    duration: float


@dataclass(frozen=True, slots=True)
class VideoInput:
    """A video as the client sent it (undecoded bytes); the media pipeline samples it into ImageParts."""

    data: bytes
    field: str = "video_url"


@dataclass(frozen=True, slots=True)
class VideoURL:
    """A video the server fetches itself (http(s) or file:// URL) before sampling its frames."""

    url: str
    field: str = "video_url"


Part = TextPart | ImageInput | ImageURL | ImagePart | AudioInput | AudioPart | VideoInput | VideoURL
# tuples, not `A | B` unions: isinstance on a tuple is several times faster on the per-request path
_VISUAL_PARTS = (ImageInput, ImageURL, ImagePart, VideoInput, VideoURL)
_AUDIO_PARTS = (AudioInput, AudioPart)
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call: its name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model made: `arguments` is JSON text (OpenAI's form; Ollama's object is dumped to it)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A streamed piece of the `index`th tool call: id and name come first, then arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class Tools:
    """The tools of a request. `choice` "required" forces a call (of `name`, when a function was named)."""

    specs: list[ToolSpec]
    choice: Literal["auto", "none", "required"] = "auto"
    name: str | None = None
    parallel: bool = True

    @property
    def forced(self) -> bool:
        return self.choice == "required"

    def allowed(self) -> list[ToolSpec]:
        """The tools a forced call may use: the named one, or all."""
        return [t for t in self.specs if t.name == self.name] if self.name else list(self.specs)


ThinkLevel = Literal["low", "medium", "high"]


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]
    tool_calls: list[ToolCall] = field(default_factory=list)  # an assistant's calls, in the history
    tool_call_id: str | None = None  # a `tool` message: the call it answers
    name: str | None = None  # a `tool` message: the function's name (Ollama's tool_name)
    thinking: str | None = None  # an assistant's reasoning, in the history

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    @property
    def has_images(self) -> bool:
        """Images or videos (a video reaches the model as frames)."""
        return any(isinstance(p, _VISUAL_PARTS) for p in self.parts)

    @property
    def has_audio(self) -> bool:
        return any(isinstance(p, _AUDIO_PARTS) for p in self.parts)


@dataclass(slots=True)
class ResponseFormat:
    """Structured output request: `json` for any JSON object, or a JSON schema to follow."""

    kind: Literal["text", "json", "json_schema"] = "text"
    schema: dict[str, Any] | None = None


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    # speech-to-text only (POST /v1/audio/transcriptions): the spoken language (ISO-639-1) and a text that
    # conditions the transcript (spellings, previous words); other engines ignore them
    language: str | None = None
    transcript_prompt: str | None = None


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    stream: bool = False
    keep_alive: float | None = None  # seconds; None = model default, 0 = unload after, <0 = forever
    client: str = ""  # who asked (API key or X-Client-Id): clients take turns in a model's queue
    background: bool = False  # batch work: queued behind live requests
    engine_options: dict[str, int] | None = None  # context_size / threads / gpu_layers: restart the engine
    tools: Tools | None = None
    think: bool | ThinkLevel | None = None  # None: the model's default; False: no reasoning
    logprobs: int | None = None  # None: not asked; n >= 0: log-probabilities of each token and its n best rivals
    think_field: str = "think"  # the surface's name for `think`, for the 400 of a model that cannot think


@dataclass(slots=True)
class CompletionRequest:
    """A raw prompt, no chat template (OpenAI /v1/completions, Ollama /api/generate with raw=true)."""

    model: str
    prompt: str
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    keep_alive: float | None = None
    client: str = ""
    background: bool = False
    engine_options: dict[str, int] | None = None
    logprobs: int | None = None  # as ChatRequest.logprobs
    suffix: str | None = None  # fill-in-the-middle: the text after the completion


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length", "tool_calls", "error"]


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log-probability, and its most likely rivals (`top`: token, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class ChatChunk:
    """One streamed piece of an answer; the final chunk carries finish_reason and usage."""

    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    reasoning: str = ""  # reasoning text, apart from the answer
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    engine_timings: tuple[int, int] | None = None  # final chunk: the engine's own (prompt_eval_ns, eval_ns)

    @property
    def has_output(self) -> bool:
        return bool(self.text or self.reasoning or self.tool_calls)

    def absorb(self, later: ChatChunk) -> bool:
        """Append `later` to this piece when both are plain output of one kind (answer text, or reasoning text,
        with logprobs on both or neither); False (and nothing changed) otherwise."""
        if self.tool_calls or later.tool_calls or self.finish_reason or later.finish_reason:
            return False
        if bool(self.text) == bool(self.reasoning) or bool(later.text) == bool(later.reasoning):
            return False  # empty, or both kinds in one piece: merging could reorder them
        if bool(self.text) != bool(later.text) or (self.logprobs is None) != (later.logprobs is None):
            return False
        self.text += later.text
        self.reasoning += later.reasoning
        if self.logprobs is not None and later.logprobs is not None:
            self.logprobs = [*self.logprobs, *later.logprobs]
        return True


def coalesced(pieces: list[ChatChunk]) -> list[ChatChunk]:
    """Pieces that arrived together (one network read), consecutive ones of one kind merged: relayed as one
    event instead of one per token, which is what lets a busy gateway keep up with many streams."""
    if len(pieces) < 2:
        return pieces
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if not merged[-1].absorb(piece):
            merged.append(piece)
    return merged


@dataclass(slots=True)
class Timings:
    """Wall-clock phases of one request, in nanoseconds (Ollama reports these)."""

    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0


@dataclass(slots=True)
class ChatResult:
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings = field(default_factory=Timings)
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None


class ToolCallAssembler:
    """Puts streamed tool-call deltas back together into whole calls (by index, in order)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, deltas: list[ToolCallDelta]) -> None:
        for delta in deltas:
            call = self._calls.setdefault(delta.index, ["", "", ""])
            call[0] = delta.id or call[0]
            call[1] = delta.name or call[1]
            call[2] += delta.arguments

    @property
    def indexes(self) -> list[int]:
        return sorted(self._calls)

    def call(self, index: int) -> ToolCall:
        call_id, name, arguments = self._calls[index]
        return ToolCall(id=call_id or f"call_{index}", name=name, arguments=arguments or "{}")

    def calls(self) -> list[ToolCall]:
        return [self.call(i) for i in self.indexes]


@dataclass(slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    token_ids: list[list[int]] | None = None  # OpenAI's token-id inputs (of the model's tokenizer), not `inputs`
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: float | None = None
    client: str = ""
    background: bool = False
    engine_options: dict[str, int] | None = None


@dataclass(slots=True)
class EmbedResult:
    vectors: list[list[float]]
    prompt_tokens: int
