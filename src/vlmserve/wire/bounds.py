"""The bounds of wire numbers (docs/api.md, "Limits on input"): every number a client sends is bounded above,
so no value reaches an engine that would overflow its native integer or float types."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_TOKENS = 2**20  # max_tokens / num_predict: far beyond any context, far below int32
MAX_TOP_K = 1_000_000
MAX_CONTEXT = 1_048_576  # num_ctx at the wire; the scheduler checks it against the model
MAX_THREADS = 1024  # num_thread at the wire; the scheduler clamps it to the machine's cores
MAX_GPU_LAYERS = 100_000
MAX_DIMENSIONS = 65_536
MAX_TOKEN_ID = INT32_MAX  # token ids as embeddings input
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit (chat); legacy completions take up to 5

# strict: only JSON true/false; lax pydantic would take "yes", "on", 1 ... as true
Bool = Annotated[bool, Field(strict=True)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
TopK = Annotated[int, Field(ge=0, le=MAX_TOP_K)]
Dimensions = Annotated[int, Field(ge=1, le=MAX_DIMENSIONS)]
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
# keep_alive as a number of seconds (negative: forever); its strings are parsed by domain/duration.py
KeepAlive = str | Annotated[float, Field(allow_inf_nan=False, ge=-1e18, le=1e18)] | None


def engine_seed(seed: int | None) -> int | None:
    """The seed engines get: reduced modulo 2**32, as Ollama does (llama.cpp takes a uint32 seed). -1 becomes
    0xFFFFFFFF, llama.cpp's "random seed", as with Ollama; any other value stays a fixed, reproducible seed."""
    return None if seed is None else seed % 2**32
