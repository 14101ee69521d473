"""EmbedService: resolve an embedding model, lease its engine, embed."""

from __future__ import annotations

from dataclasses import replace

from vlmserve.context import note_model, note_tokens
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability, EmbedRequest, EmbedResult
from vlmserve.errors import BadRequest
from vlmserve.scheduler.core import Scheduler
from vlmserve.service.catalog import Catalog
from vlmserve.service.fallback import FallbackCounts, with_fallbacks
from vlmserve.service.leasing import lease_for

MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request


class EmbedService:
    def __init__(self, catalog: Catalog, scheduler: Scheduler) -> None:
        self.catalog = catalog
        self.scheduler = scheduler
        self.fallbacks: FallbackCounts = FallbackCounts()

    async def embed(self, request: EmbedRequest) -> tuple[str, EmbedResult, int]:
        """(resolved model name, result, load time in ns)."""
        if not request.inputs:
            raise BadRequest("input must not be empty", param="input")
        if len(request.inputs) > MAX_INPUTS:
            raise BadRequest(f"at most {MAX_INPUTS} inputs per request", param="input")
        spec = self.catalog.resolve(request.model, Capability.EMBEDDING)
        note_model(spec.name)
        name, result, load_ns = await with_fallbacks(
            self.catalog, spec, lambda c: c.can(Capability.EMBEDDING), lambda c: self._embed(c, request), self.fallbacks
        )
        note_tokens(result.prompt_tokens, 0)
        if request.dimensions is not None:
            if not 0 < request.dimensions <= len(result.vectors[0]):
                raise BadRequest(f"dimensions must be between 1 and {len(result.vectors[0])}", param="dimensions")
            result = EmbedResult(_truncate(result.vectors, request.dimensions), result.prompt_tokens)
        return name, result, load_ns

    async def _embed(self, spec: ModelSpec, request: EmbedRequest) -> tuple[str, EmbedResult, int]:
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
