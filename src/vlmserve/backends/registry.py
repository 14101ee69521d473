"""Build the backend for a catalog entry."""

from __future__ import annotations

from vlmserve.backends.base import Backend
from vlmserve.backends.ollama_http import OllamaBackend
from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.backends.pool import MemberBackend, PoolBackend
from vlmserve.backends.runner_process import LocalRunnerBackend
from vlmserve.domain.spec import ModelSpec


def build_backend(spec: ModelSpec, *, start_timeout: float, threads: int | None) -> Backend:
    if spec.is_local:
        return LocalRunnerBackend(spec, start_timeout=start_timeout, threads=threads)
    if spec.engine in ("ollama", "openai") and spec.url:
        # a pool when there are replicas, or when retries were asked for explicitly on one URL
        if len(spec.urls) > 1 or "max_retries" in spec.model_fields_set:
            return PoolBackend(spec, [(url, remote_backend(spec, url)) for url in spec.urls])
        return remote_backend(spec, spec.url)
    raise ValueError(f"model {spec.name!r}: engine {spec.engine} has no backend of its own")


def remote_backend(spec: ModelSpec, url: str) -> MemberBackend:
    if spec.engine == "ollama":
        return OllamaBackend(spec, url)
    key = spec.api_key.get_secret_value() if spec.api_key is not None else None
    return OpenAICompatibleBackend(spec, url, api_key=key)
