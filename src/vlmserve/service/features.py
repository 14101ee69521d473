"""No silent drops: a request field that its model or engine cannot honour is a 400 naming the field, before
any engine work (as Ollama answers "model does not support tools"). docs/api.md lists every field's policy.

What a model can do is its spec's `capabilities` (declared, or by engine: spec.py) and what its engine gives.
"""

from __future__ import annotations

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability, ChatRequest, CompletionRequest
from vlmserve.errors import UnsupportedCapability


def missing_features(spec: ModelSpec, request: ChatRequest | CompletionRequest) -> list[tuple[str, str]]:
    """(field, what) for each asked feature the model cannot do: `what` completes "does not support ..."."""
    missing: list[tuple[str, str]] = []
    if isinstance(request, ChatRequest):
        if request.tools is not None and request.tools.specs and not spec.can(Capability.TOOLS):
            missing.append(("tools", "tools"))
        if request.think not in (None, False) and not spec.can(Capability.THINKING):
            missing.append((request.think_field, "thinking"))
    elif request.suffix is not None and not spec.takes_suffix:
        missing.append(("suffix", "insert (suffix)"))
    if request.logprobs is not None and not spec.gives_logprobs:
        missing.append(("logprobs", "logprobs"))
    return missing


def check_features(spec: ModelSpec, request: ChatRequest | CompletionRequest) -> None:
    missing = missing_features(spec, request)
    if missing:
        field, what = missing[0]
        raise UnsupportedCapability(f"model '{spec.name}' does not support {what}", param=field)
