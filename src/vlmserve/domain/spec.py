"""ModelSpec: one catalog entry, as declared in the YAML config or built from env vars and embedded defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlmserve.domain.types import Capability

EngineKind = Literal[
    "llamacpp",  # GGUF (+ mmproj for vision) on llama.cpp, in a runner subprocess
    "transformers",  # a Hugging Face model folder on transformers, in a runner subprocess
    "rapidocr",  # PP-OCR ONNX models: image in, the text it reads out
    "onnx-embed",  # a sentence-embedding ONNX model (MiniLM) with a tokenizer.json
    "ocr-chat",  # pipeline: OCR reads the images, a chat model answers with that text as context
    "ollama",  # a model on a remote Ollama server (native API)
    "openai",  # a model on any OpenAI-compatible server (vLLM, llama.cpp server, LM Studio, OpenAI)
]

LOCAL_ENGINES: frozenset[str] = frozenset({"llamacpp", "transformers", "rapidocr", "onnx-embed"})
REMOTE_PARALLEL = 64  # vLLM / Ollama / OpenAI batch and queue on their side; ours is the backpressure bound
_NEEDS_PATH: frozenset[str] = frozenset({"llamacpp", "transformers", "onnx-embed"})

_DEFAULT_CAPABILITIES: dict[str, list[Capability]] = {
    "llamacpp": [Capability.COMPLETION],
    "transformers": [Capability.COMPLETION, Capability.VISION],
    "rapidocr": [Capability.VISION],
    "onnx-embed": [Capability.EMBEDDING],
    "ocr-chat": [Capability.COMPLETION, Capability.VISION],
    "ollama": [Capability.COMPLETION],
    "openai": [Capability.COMPLETION],
}


class SamplingDefaults(BaseModel):
    """Per-model defaults applied where a request leaves a value unset."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    repeat_penalty: float | None = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    engine: EngineKind
    description: str = ""
    aliases: list[str] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=list)
    family: str = ""
    # local files
    path: str | None = None  # GGUF file, HF folder or ONNX file
    mmproj: str | None = None  # llama.cpp multimodal projector (GGUF): enables vision
    tokenizer: str | None = None  # tokenizer.json for onnx-embed
    chat_template: str | None = None
    # runner / engine options
    context_size: int = 4096
    parallel: int = 1  # requests at once; remote engines default to REMOTE_PARALLEL (they queue themselves)
    threads: int | None = None
    gpu_layers: int = -1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    # remote engines
    url: str | None = None
    remote_model: str | None = None  # the model's name on the remote engine (default: name)
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 300.0
    # pipelines
    ocr_model: str | None = None
    chat_model: str | None = None
    # behaviour
    defaults: SamplingDefaults = Field(default_factory=SamplingDefaults)
    keep_alive: float | None = None  # seconds; None = server default
    pin: bool = False  # evicted last, never by keep-alive
    priority: int = 0  # among unpinned models, lower priority is evicted first
    memory_mb: int | None = None  # what loading takes, when you know better than the estimate
    max_image_side: int = 1024  # images are shrunk so that their longer side is at most this
    max_image_pixels: int | None = None  # and, when set, to at most this many pixels
    max_images: int = 8

    @model_validator(mode="before")
    @classmethod
    def _remote_parallel(cls, data: Any) -> Any:
        if isinstance(data, dict) and "parallel" not in data and data.get("engine") in ("ollama", "openai"):
            return {**data, "parallel": REMOTE_PARALLEL}
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if not self.capabilities:
            caps = list(_DEFAULT_CAPABILITIES[self.engine])
            if self.engine == "llamacpp" and self.mmproj:
                caps.append(Capability.VISION)
            self.capabilities = caps
        if self.engine in _NEEDS_PATH and not self.path:
            raise ValueError(f"model {self.name!r}: engine {self.engine} needs `path`")
        if self.engine in ("ollama", "openai") and not self.url:
            raise ValueError(f"model {self.name!r}: engine {self.engine} needs `url`")
        if self.engine == "ocr-chat" and not (self.ocr_model and self.chat_model):
            raise ValueError(f"model {self.name!r}: engine ocr-chat needs `ocr_model` and `chat_model`")
        if self.parallel < 1:
            raise ValueError(f"model {self.name!r}: parallel must be >= 1")
        return self

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def is_local(self) -> bool:
        return self.engine in LOCAL_ENGINES
