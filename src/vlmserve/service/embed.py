"""EmbedService: resolve an embedding model, lease its engine, embed.

Before any engine work: the inputs' count and sizes are bounded (EmbedLimits, from the embed_max_* settings),
and with Ollama's `truncate: false` an input longer than a local onnx-embed model's context is a 400. That needs
the token count, which only the tokenizer knows: the model's tokenizer.json is loaded here once (tokenizers,
a few MB) and run in a thread on inputs already bounded in size. Remote Ollama engines get `truncate` and
decide themselves.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, replace
from typing import Any

from vlmserve.backends.engines import traits_of
from vlmserve.context import check_model_visible, note_model, note_tokens
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability, EmbedRequest, EmbedResult
from vlmserve.errors import BadRequest, PayloadTooLarge
from vlmserve.scheduler.core import Scheduler
from vlmserve.service.catalog import Catalog
from vlmserve.service.fallback import FallbackCounts, with_fallbacks
from vlmserve.service.leasing import lease_for

MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request
TOO_LONG = "the input length exceeds the context length"  # Ollama's words


@dataclass(frozen=True, slots=True)
class EmbedLimits:
    max_inputs: int = MAX_INPUTS
    max_input_bytes: int = 256 * 1024
    max_total_bytes: int = 4 * 2**20


def check_sizes(inputs: list[str], limits: EmbedLimits) -> None:
    """413 for an input or a request too large to embed (a 50 MB input crashed the runner's tokenizer)."""
    if len(inputs) > limits.max_inputs:
        raise BadRequest(f"at most {limits.max_inputs} inputs per request", param="input")
    total = 0
    for i, text in enumerate(inputs):
        size = len(text) if len(text) * 4 <= limits.max_input_bytes else len(text.encode("utf-8"))
        if size > limits.max_input_bytes:
            raise PayloadTooLarge(f"input[{i}] is {size} bytes, limit is {limits.max_input_bytes} bytes per input",
                                  param="input")  # fmt: skip
        total += size
    if total > limits.max_total_bytes:
        raise PayloadTooLarge(f"the inputs are {total} bytes together, limit is {limits.max_total_bytes} bytes",
                              param="input")  # fmt: skip


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def _any_too_long(path: str, inputs: list[str], context: int) -> bool:
    # one input at a time: a batch holds every input's full token list at once (~130 bytes per input byte)
    tokenizer = _tokenizer(path)
    return any(len(tokenizer.encode(text).ids) > context for text in inputs)


async def check_context(spec: ModelSpec, request: EmbedRequest) -> None:
    """`truncate: false`: an input past the context of a local onnx-embed model is a 400 (special tokens
    counted, as the runner counts them)."""
    if request.truncate or not traits_of(spec).tokenizer_json or not spec.tokenizer:
        return
    if await asyncio.to_thread(_any_too_long, spec.tokenizer, request.inputs, spec.embed_context):
        raise BadRequest(TOO_LONG, param="input")


def check_token_ids(token_ids: list[list[int]] | None, limits: EmbedLimits) -> None:
    """Token-id inputs under the same limits as text (4 bytes an id)."""
    if token_ids is None:
        return
    if len(token_ids) > limits.max_inputs:
        raise BadRequest(f"at most {limits.max_inputs} inputs per request", param="input")
    if sum(len(ids) for ids in token_ids) * 4 > limits.max_total_bytes:
        raise PayloadTooLarge(f"the inputs are more than {limits.max_total_bytes // 4} token ids", param="input")


def _decoded(path: str, token_ids: list[list[int]]) -> list[str]:
    tokenizer = _tokenizer(path)
    size = tokenizer.get_vocab_size()
    for i, ids in enumerate(token_ids):
        if any(t >= size for t in ids):
            raise BadRequest(f"input[{i}] has a token id past the vocabulary ({size})", param="input")
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in token_ids]


class EmbedService:
    def __init__(self, catalog: Catalog, scheduler: Scheduler, limits: EmbedLimits | None = None) -> None:
        self.catalog = catalog
        self.scheduler = scheduler
        self.limits = limits or EmbedLimits()
        self.fallbacks: FallbackCounts = FallbackCounts()

    async def embed(self, request: EmbedRequest) -> tuple[str, EmbedResult, int]:
        """(resolved model name, result, load time in ns)."""
        if not request.inputs and not request.token_ids:
            raise BadRequest("input must not be empty", param="input")
        check_sizes(request.inputs, self.limits)
        check_token_ids(request.token_ids, self.limits)
        spec = self.catalog.resolve(request.model, Capability.EMBEDDING)
        check_model_visible(spec.name)  # the API key's model allowlist: 403 model_not_allowed
        note_model(spec.name)
        if request.token_ids is not None and not spec.takes_token_ids:
            raise BadRequest(f"model '{spec.name}' does not take token ids as input; send text", param="input")

        def fits(candidate: ModelSpec) -> bool:
            return candidate.can(Capability.EMBEDDING) and (request.token_ids is None or candidate.takes_token_ids)

        name, result, load_ns = await with_fallbacks(
            self.catalog, spec, fits, lambda c: self._embed(c, request), self.fallbacks
        )
        note_tokens(result.prompt_tokens, 0)
        if request.dimensions is not None:
            if not 0 < request.dimensions <= len(result.vectors[0]):
                raise BadRequest(f"dimensions must be between 1 and {len(result.vectors[0])}", param="dimensions")
            result = EmbedResult(_truncate(result.vectors, request.dimensions), result.prompt_tokens)
        return name, result, load_ns

    async def _embed(self, spec: ModelSpec, request: EmbedRequest) -> tuple[str, EmbedResult, int]:
        if request.token_ids is not None and spec.tokenizer:  # the model's own tokenizer.json is here
            request = replace(request, inputs=await asyncio.to_thread(_decoded, spec.tokenizer, request.token_ids))
            request.token_ids = None
        await check_context(spec, request)  # per candidate: a fallback model may have another context
        async with lease_for(self.scheduler, spec, request) as lease:
            return spec.name, await lease.backend.embed(replace(request, model=spec.name)), lease.load_ns


def _truncate(vectors: list[list[float]], size: int) -> list[list[float]]:
    """Matryoshka-style shortening, re-normalised (what OpenAI's `dimensions` does)."""
    out = []
    for vector in vectors:
        head = vector[:size]
        norm = sum(v * v for v in head) ** 0.5 or 1.0
        out.append([v / norm for v in head])
    return out
