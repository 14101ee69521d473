"""ChatService: the one path every surface's chat/generate/completion request takes.

resolve model (capability check) -> prepare images, audio, video -> apply model defaults -> lease engine
-> stream chunks.
The `ocr-chat` pipeline reads the images with the OCR model and hands that text to the chat model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace

from vlmserve.backends.engines import traits_of
from vlmserve.context import (
    check_model_visible,
    note_error,
    note_first_token,
    note_model,
    note_queue_wait,
    note_tokens,
)
from vlmserve.domain.spec import INPUT_BYTES_PER_TOKEN, ModelSpec
from vlmserve.domain.types import (
    Capability,
    ChatChunk,
    ChatRequest,
    ChatResult,
    CompletionRequest,
    Message,
    SamplingParams,
    TextPart,
    Timings,
    TokenLogprob,
    ToolCallAssembler,
    Usage,
)
from vlmserve.errors import BadRequest, EngineError, UnsupportedCapability, VlmServeError
from vlmserve.media.pipeline import MediaPipeline
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.memory import max_context
from vlmserve.service.catalog import Catalog
from vlmserve.service.fallback import FallbackCounts, with_fallbacks
from vlmserve.service.features import check_features, missing_features
from vlmserve.service.leasing import lease_for


@dataclass
class ChatStream:
    """A started answer: `model` is the resolved catalog name; `timings` fill in as chunks are consumed."""

    model: str
    chunks: AsyncIterator[ChatChunk]
    timings: Timings = field(default_factory=Timings)
    fallback_from: str = ""  # the model asked for, when a fallback model answers instead (service/fallback.py)


def apply_defaults(sampling: SamplingParams, spec: ModelSpec) -> SamplingParams:
    defaults = spec.defaults
    return replace(
        sampling,
        max_tokens=sampling.max_tokens if sampling.max_tokens is not None else defaults.max_tokens,
        temperature=sampling.temperature if sampling.temperature is not None else defaults.temperature,
        top_p=sampling.top_p if sampling.top_p is not None else defaults.top_p,
        top_k=sampling.top_k if sampling.top_k is not None else defaults.top_k,
        seed=sampling.seed if sampling.seed is not None else defaults.seed,
        repeat_penalty=sampling.repeat_penalty if sampling.repeat_penalty is not None else defaults.repeat_penalty,
        stop=sampling.stop or list(defaults.stop),
    )


class ChatService:
    def __init__(self, catalog: Catalog, scheduler: Scheduler, media: MediaPipeline) -> None:
        self.catalog = catalog
        self.scheduler = scheduler
        self.media = media
        self.fallbacks: FallbackCounts = FallbackCounts()

    async def chat(self, request: ChatRequest) -> ChatStream:
        spec = self._chat_spec(request)
        check_model_visible(spec.name)  # the API key's model allowlist: 403 model_not_allowed
        note_model(spec.name)
        return await self._chat(spec, request)

    def _chat_spec(self, request: ChatRequest) -> ModelSpec:
        """The model asked for, refused (400) when it cannot take the request's parts or fields."""
        if not request.messages:
            raise BadRequest("messages must not be empty", param="messages")
        has_images, has_audio, wanted = _wanted(request)
        spec = self.catalog.resolve(request.model, wanted)
        if has_audio and has_images and not spec.can(Capability.VISION):
            raise UnsupportedCapability(f"model '{spec.name}' does not support images", param="model")
        check_features(spec, request)
        return spec

    async def _chat(self, spec: ModelSpec, request: ChatRequest) -> ChatStream:
        """`spec`'s answer, or that of a fallback that can take the request; the key's check is the caller's."""
        has_images, has_audio, wanted = _wanted(request)

        def fits(candidate: ModelSpec) -> bool:
            if has_audio and has_images and not candidate.can(Capability.VISION):
                return False
            return candidate.can(wanted) and not missing_features(candidate, request)  # fallbacks keep tools

        media = has_images or has_audio
        stream = await with_fallbacks(
            self.catalog, spec, fits, lambda chosen: self._start_chat(chosen, request, media), self.fallbacks
        )
        return _noting_fallback(spec, stream)

    async def _start_chat(self, spec: ModelSpec, request: ChatRequest, media: bool) -> ChatStream:
        # fetch, decode, resize every image / audio / video (counts and byte limits first), off the event loop
        messages = await self.media.prepare_messages(request.messages, spec) if media else request.messages
        request = replace(request, model=spec.name, messages=messages, sampling=apply_defaults(request.sampling, spec))
        stream = ChatStream(model=spec.name, chunks=_empty())
        if traits_of(spec).pipeline:
            stream.chunks = self._ocr_chat(spec, request, stream.timings)
        else:
            stream.chunks = self._run(spec, request, stream.timings)
        return await _primed(stream)

    async def complete(self, request: CompletionRequest) -> ChatStream:
        spec = self.catalog.resolve(request.model, Capability.COMPLETION)
        check_model_visible(spec.name)
        note_model(spec.name)
        if not traits_of(spec).takes_raw_prompts:
            raise BadRequest(f"model '{spec.name}' does not support raw completions", param="model")
        check_features(spec, request)

        def fits(candidate: ModelSpec) -> bool:
            if not traits_of(candidate).takes_raw_prompts or missing_features(candidate, request):
                return False
            return candidate.can(Capability.COMPLETION)

        stream = await with_fallbacks(
            self.catalog, spec, fits, lambda chosen: self._start_completion(chosen, request), self.fallbacks
        )
        return _noting_fallback(spec, stream)

    async def _start_completion(self, spec: ModelSpec, request: CompletionRequest) -> ChatStream:
        request = replace(request, model=spec.name, sampling=apply_defaults(request.sampling, spec))
        stream = ChatStream(model=spec.name, chunks=_empty())
        stream.chunks = self._run(spec, request, stream.timings)
        return await _primed(stream)

    async def collect(self, stream: ChatStream) -> ChatResult:
        text: list[str] = []
        reasoning: list[str] = []
        calls = ToolCallAssembler()
        logprobs: list[TokenLogprob] | None = None
        final = ChatChunk(finish_reason="stop", usage=Usage())
        async for chunk in stream.chunks:
            text.append(chunk.text)
            reasoning.append(chunk.reasoning)
            calls.add(chunk.tool_calls)
            if chunk.logprobs is not None:
                logprobs = [*(logprobs or []), *chunk.logprobs]
            if chunk.finish_reason is not None:
                final = chunk
        return ChatResult(
            "".join(text),
            final.finish_reason or "stop",
            final.usage or Usage(),
            stream.timings,
            reasoning="".join(reasoning),
            tool_calls=calls.calls(),
            logprobs=logprobs,
        )

    def _run(
        self, spec: ModelSpec, request: ChatRequest | CompletionRequest, timings: Timings
    ) -> AsyncIterator[ChatChunk]:
        """The leased stream, after the checks that need no engine (a plain function: one generator less on
        every streamed token)."""
        if traits_of(spec).ocr and isinstance(request, ChatRequest) and not any(m.images for m in request.messages):
            raise BadRequest(f"model '{spec.name}' reads text from images: send at least one image", param="messages")
        _check_input_size(spec, request)
        return self._leased(spec, request, timings)

    async def _leased(
        self, spec: ModelSpec, request: ChatRequest | CompletionRequest, timings: Timings
    ) -> AsyncIterator[ChatChunk]:
        try:
            began = time.perf_counter_ns()
            async with lease_for(self.scheduler, spec, request) as lease:
                timings.load_ns = lease.load_ns
                note_queue_wait(time.perf_counter_ns() - began - lease.load_ns)
                first_token: int | None = None
                chunks = (
                    lease.backend.chat(request) if isinstance(request, ChatRequest) else lease.backend.complete(request)
                )
                async for chunk in chunks:
                    if first_token is None and (chunk.has_output or chunk.finish_reason):
                        first_token = time.perf_counter_ns()
                        note_first_token()
                        timings.prompt_eval_ns = first_token - began - lease.load_ns
                    if chunk.finish_reason is not None:
                        _note_finish(chunk, timings, request.stream, began, first_token, lease.load_ns)
                    yield chunk
        except VlmServeError as exc:
            if exc.status >= 500:
                note_error(exc.type)
            raise

    async def _ocr_chat(self, spec: ModelSpec, request: ChatRequest, timings: Timings) -> AsyncIterator[ChatChunk]:
        assert spec.ocr_model and spec.chat_model
        ocr_spec = self.catalog.get(spec.ocr_model)
        chat_spec = self.catalog.get(spec.chat_model)
        messages: list[Message] = []
        for message in request.messages:
            if not message.images:
                messages.append(message)
                continue
            reading = ChatRequest(model=ocr_spec.name, messages=[Message(role="user", parts=list(message.images))])
            # a step of the pipeline the key may use: not checked against its allowlist, nor noted as the model
            read = await self.collect(await self._chat(self._chat_spec(reading), reading))
            # phrasing measured on SmolLM2-135M: question first, then the quoted text, answers best
            question = message.text.strip() or "What does the image say?"
            context = f'{question}\n\nThe image contains this text: "{read.text.strip()}"'
            messages.append(Message(role=message.role, parts=[TextPart(context)]))
        # the chat model's own defaults (smollm2: greedy) fill what the request and the pipeline left unset
        sampling = apply_defaults(request.sampling, chat_spec)
        inner = replace(request, model=chat_spec.name, messages=messages, sampling=sampling)
        async for chunk in self._run(chat_spec, inner, timings):
            yield chunk


def _wanted(request: ChatRequest) -> tuple[bool, bool, Capability]:
    """(has images, has audio, the capability the model needs)."""
    has_images = any(m.has_images for m in request.messages)
    has_audio = any(m.has_audio for m in request.messages)
    wanted = Capability.AUDIO if has_audio else Capability.VISION if has_images else Capability.COMPLETION
    return has_images, has_audio, wanted


def _check_input_size(spec: ModelSpec, request: ChatRequest | CompletionRequest) -> None:
    """Refuse text the model's context cannot hold before any engine work (tokenizing 50 MB takes the engine
    half a minute and then its memory); a request's own num_ctx raises the bound as far as the model allows."""
    limit = spec.input_bytes_limit
    if limit is None:
        return
    asked = (request.engine_options or {}).get("context_size")
    if asked and spec.max_input_bytes is None:
        limit = max(limit, min(asked, max_context(spec)) * INPUT_BYTES_PER_TOKEN)
    if isinstance(request, CompletionRequest):
        size = len(request.prompt.encode("utf-8", "surrogatepass"))
    else:
        texts = (part.text for message in request.messages for part in message.parts if isinstance(part, TextPart))
        size = sum(len(text.encode("utf-8", "surrogatepass")) for text in texts)
    if size > limit:
        raise BadRequest(
            f"the input is {size} bytes of text, more than model '{spec.name}' takes ({limit} bytes for its context "
            "of tokens); shorten it or ask for a larger num_ctx",
            param="messages" if isinstance(request, ChatRequest) else "prompt",
            code="context_length_exceeded",
        )


def _note_finish(
    chunk: ChatChunk, timings: Timings, stream: bool, began: int, first_token: int | None, load_ns: int
) -> None:
    end = time.perf_counter_ns()
    timings.eval_ns = end - (first_token or end)
    timings.total_ns = end - began
    if chunk.engine_timings is not None:  # the engine's own phases (a non-streamed answer came whole: one chunk)
        timings.prompt_eval_ns, timings.eval_ns = chunk.engine_timings
    elif not stream:  # unknown phases: the generation time is all of the engine's time
        timings.prompt_eval_ns, timings.eval_ns = 0, end - began - load_ns
    if chunk.usage is not None:
        note_tokens(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)


def _noting_fallback(asked: ModelSpec, stream: ChatStream) -> ChatStream:
    if stream.model != asked.name:
        stream.fallback_from = asked.name
    return stream


async def _empty() -> AsyncIterator[ChatChunk]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _primed(stream: ChatStream) -> ChatStream:
    """Run the stream up to its first chunk, so load and engine errors surface before any byte is sent."""
    iterator = stream.chunks
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        raise EngineError(f"{stream.model}: engine returned no answer") from None
    stream.chunks = _FirstThen(first, iterator)
    return stream


class _FirstThen:
    """`first`, then the rest of `rest`: after the first chunk each step is the inner stream's own (no
    generator of its own to resume on every token)."""

    def __init__(self, first: ChatChunk, rest: AsyncIterator[ChatChunk]) -> None:
        self._first: ChatChunk | None = first
        self._rest = rest

    def __aiter__(self) -> _FirstThen:
        return self

    def __anext__(self) -> Awaitable[ChatChunk]:
        if self._first is None:
            return self._rest.__anext__()
        first, self._first = self._first, None
        return _now(first)

    async def aclose(self) -> None:
        """Close the inner stream now (as an async generator's aclose would): its engine request ends."""
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()


async def _now(chunk: ChatChunk) -> ChatChunk:
    return chunk
