"""The backend seam: lifecycle (start/stop/health) apart from inference (chat/complete/embed).

Every engine — a local runner subprocess or a remote server — implements `Backend`. Inference methods
return async iterators of typed chunks; the last chunk carries finish_reason and usage. Errors are raised
as vlmserve.errors types (EngineError, EngineTimeout, ...), never returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult


class Backend(Protocol):
    spec: ModelSpec

    @property
    def loaded(self) -> bool:
        """True once start() succeeded and the engine has not died or been stopped since."""
        ...

    async def start(self) -> None:
        """Load the model (start the runner, or check the remote is reachable)."""
        ...

    async def stop(self) -> None:
        """Unload: a local runner exits and frees its memory. The backend can start() again."""
        ...

    async def aclose(self) -> None:
        """Release what outlives stop() (a remote engine's HTTP connections) for good: called once the backend is
        replaced or the server ends, after stop(), even when stop() failed."""
        ...

    async def health(self) -> bool:
        """Cheap reachability probe; never raises."""
        ...

    def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]: ...

    async def embed(self, request: EmbedRequest) -> EmbedResult: ...

    @property
    def memory_bytes(self) -> int | None:
        """Measured memory of the loaded engine (runner RSS), None where unknown (remote)."""
        ...
