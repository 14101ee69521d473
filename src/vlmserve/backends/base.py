"""The backend seam: lifecycle (start/stop/health) apart from inference (chat/complete/embed).

Every engine — a local runner subprocess or a remote server — implements `Backend`. Inference methods
return async iterators of typed chunks; the last chunk carries finish_reason and usage. Errors are raised
as vlmserve.errors types (EngineError, EngineTimeout, ...), never returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult

UpstreamStatus = Literal["healthy", "on_probation", "cooling_down"]


@dataclass(frozen=True)
class ReplicaState:
    """A read-only snapshot of one upstream for operators (GET /health, GET /admin/models, /metrics)."""

    url: str  # without user:password
    status: UpstreamStatus  # on_probation: its cooldown ended, its next request decides
    cooldown_left_seconds: float
    in_flight: int
    consecutive_failures: int
    answered: int
    failed: int
    cooldowns: int

    @property
    def up(self) -> bool:
        """Takes traffic (healthy or on probation); False while it cools down."""
        return self.status != "cooling_down"


@dataclass(frozen=True)
class BackendStats:
    """Per-upstream health and load of a backend over several upstreams (an engine pool), read at one instant."""

    upstreams: tuple[ReplicaState, ...]
    retries: Mapping[str, int] = field(default_factory=dict)  # retries by the error type that caused them


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

    def stats(self) -> BackendStats | None:
        """Each upstream's health and load, for a backend over several (an engine pool); None for one engine.
        Reads only: probes nothing, changes nothing."""
        ...
