"""Build the backend for a catalog entry."""

from __future__ import annotations

from vlmserve.backends.base import Backend
from vlmserve.backends.ollama_http import OllamaBackend
from vlmserve.backends.openai_http import OpenAICompatibleBackend
from vlmserve.backends.runner_process import LocalRunnerBackend
from vlmserve.domain.spec import ModelSpec


def build_backend(spec: ModelSpec, *, start_timeout: float, threads: int | None) -> Backend:
    if spec.is_local:
        return LocalRunnerBackend(spec, start_timeout=start_timeout, threads=threads)
    if spec.engine == "ollama" and spec.url:
        return OllamaBackend(spec, spec.url)
    if spec.engine == "openai" and spec.url:
        return OpenAICompatibleBackend(spec, spec.url, api_key=spec.api_key)
    raise ValueError(f"model {spec.name!r}: engine {spec.engine} has no backend of its own")
