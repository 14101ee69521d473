"""Ollama's model-management wire schemas: pull, delete, copy, create (requests and their progress lines)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vlmserve.api.wire import Bool


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class PullRequest(_Lenient):
    model: str = ""
    name: str = ""  # older clients send `name`
    insecure: Bool = False  # accepted; the Hub is always reached over its own scheme
    stream: Bool = True


class DeleteRequest(_Lenient):
    model: str = ""
    name: str = ""


class CopyRequest(_Lenient):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


class CreateRequest(_Lenient):
    model: str = ""
    name: str = ""
    from_: str | None = Field(None, alias="from", description="a catalog model, or a GGUF file's path on the server")
    files: dict[str, str] | None = Field(
        None, description="file name -> blob digest (sha256:..., uploaded with POST /api/blobs) or a path on the server"
    )
    template: str | None = Field(None, description="Jinja chat template (the model's chat_template)")
    parameters: dict[str, Any] | None = Field(
        None, description="temperature, top_p, top_k, seed, stop, repeat_penalty, num_predict, num_ctx, ..."
    )
    license: str | list[str] | None = None  # accepted, not kept
    system: str | None = None  # refused: the catalog has no per-model system prompt
    messages: list[dict[str, Any]] | None = None  # refused
    adapters: dict[str, str] | None = None  # refused: no LoRA adapters
    quantize: str | None = None  # refused: no quantisation on the server
    modelfile: str | None = None  # refused: removed in Ollama 0.5
    stream: Bool = True

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, populate_by_name=True)


class Progress(BaseModel):
    """One line of a streamed pull or create (or the whole answer with `"stream": false`)."""

    status: str
    digest: str | None = None
    total: int | None = Field(None, ge=0, le=2**53)
    completed: int | None = Field(None, ge=0, le=2**53)
