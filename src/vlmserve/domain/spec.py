"""ModelSpec: one catalog entry, as declared in the YAML config or built from env vars and embedded defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, SerializationInfo, field_serializer, model_validator

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
EMBED_MAX_CONTEXT = 512  # onnx-embed: BERT-style encoders have 512 positions
OCR_MAX_ASPECT_RATIO = 50.0  # a long text line (2000x40) still reads; 1024x4 strips are refused
MAX_ASPECT_RATIO = 200.0  # other engines: Qwen2-VL's processor refuses beyond this itself
INPUT_BYTES_PER_TOKEN = 32
MAX_LAYERS = 100_000  # gpu_layers / Ollama's num_gpu
MAX_GPUS = 64
MAX_PARALLEL = 1024  # requests in flight per model (remote engines queue beyond their own batch)
LLAMACPP_MAX_PARALLEL = 64  # llama.cpp slots: each takes context_size cells of KV cache
MAX_DRAFT_TOKENS = 256  # speculative decoding: tokens drafted per step
LLAMACPP_DRAFT_MAX = 3  # llama.cpp's own default for draft_max_tokens (draft_min_tokens: 0)
# llama.cpp KV cache types (bytes per element: f32 4, f16/bf16 2, q8_0 34/32, q5_1 24/32, q5_0 22/32, q4_1 20/32,
# q4_0 and iq4_nl 18/32); the quantized ones in the V cache need flash attention
CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
QUANTIZED_CACHE_TYPES: frozenset[str] = frozenset({"q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"})
_NEEDS_PATH: frozenset[str] = frozenset({"llamacpp", "transformers", "onnx-embed"})
# serialization context of the catalog files the server writes: the one JSON dump that keeps `api_key` itself
WITH_SECRETS: dict[str, bool] = {"with_secrets": True}

_DEFAULT_CAPABILITIES: dict[str, list[Capability]] = {
    "llamacpp": [Capability.COMPLETION],
    "transformers": [Capability.COMPLETION, Capability.VISION],
    "rapidocr": [Capability.VISION],
    "onnx-embed": [Capability.EMBEDDING],
    "ocr-chat": [Capability.COMPLETION, Capability.VISION],
    # remote engines get tools passed through (and Ollama `think`): the engine answers its own 400 when its model
    # cannot; declare `capabilities` to refuse here instead
    "ollama": [Capability.COMPLETION, Capability.TOOLS, Capability.THINKING],
    "openai": [Capability.COMPLETION, Capability.TOOLS],
}
# engines that return log-probabilities (llama.cpp's server, vLLM / OpenAI, Ollama >= 0.12) and take `suffix`
_LOGPROBS_ENGINES: frozenset[str] = frozenset({"llamacpp", "ollama", "openai"})
_SUFFIX_ENGINES: frozenset[str] = frozenset({"ollama", "openai"})


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

    name: str = Field(min_length=1)  # what clients send as `model`
    engine: EngineKind  # which engine runs it (see docs/architecture.md, Runners)
    description: str = ""  # shown by /api/show
    aliases: list[str] = Field(default_factory=list)  # more names for the same model
    capabilities: list[Capability] = Field(default_factory=list)  # default: by engine
    family: str = ""  # model family reported by /api/tags and /api/show
    # local files
    path: str | None = None  # GGUF file, HF folder or ONNX file
    mmproj: str | None = None  # llama.cpp multimodal projector (GGUF): enables vision
    tokenizer: str | None = None  # tokenizer.json for onnx-embed
    chat_template: str | None = None  # Jinja chat template overriding the model's own
    # runner / engine options
    context_size: int = Field(default=4096, ge=16, le=1_048_576)  # tokens of context per request slot
    max_context_size: int | None = Field(
        default=None,
        ge=16,
        le=1_048_576,
        description="the most a request's num_ctx may ask for (default: the context the GGUF was trained with)",
    )
    max_input_bytes: int | None = Field(
        default=None,
        ge=1,
        description="text bytes one request may send (default, local engines: 32 per token of context)",
    )
    parallel: int = Field(
        default=1,
        ge=1,
        le=MAX_PARALLEL,
        description="requests at once (llama.cpp: slots, 1-64); remote engines default to 64 (they queue themselves)",
    )
    threads: int | None = None  # CPU threads (default: the server's `threads`, else all cores)
    gpu_layers: Annotated[int, Field(ge=-1, le=MAX_LAYERS)] | Literal["auto"] = Field(
        default="auto",
        description="layers offloaded to the GPU: auto (as many as fit the GPU's budget; CPU when none fits), "
        "-1 (all) or a number",
    )
    devices: list[Annotated[int, Field(ge=0, le=MAX_GPUS)]] = Field(
        default_factory=list, description="GPUs (NVML indices) it may use; several: split over them (default: any)"
    )
    tensor_split: list[Annotated[float, Field(ge=0, le=1e6)]] = Field(
        default_factory=list, description="llama.cpp: share of the layers per GPU of `devices` (default: even)"
    )
    cache_type_k: CacheType = Field(default="f16", description="llama.cpp K cache type (q8_0 halves it)")
    cache_type_v: CacheType = Field(
        default="f16", description="llama.cpp V cache type (the quantized ones need flash attention)"
    )
    flash_attention: Literal["auto", "on", "off"] = "auto"  # llama.cpp flash attention
    cont_batching: bool = Field(
        default=True, description="llama.cpp: continuous batching (slots join a running batch between tokens)"
    )
    draft_model: str | None = Field(
        default=None,
        description="llama.cpp: a small GGUF with the same vocabulary that drafts tokens (speculative decoding)",
    )
    draft_max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_DRAFT_TOKENS, description="llama.cpp: most tokens drafted per step (default: 3)"
    )
    draft_min_tokens: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DRAFT_TOKENS,
        description="llama.cpp: fewest drafted tokens worth checking (default: 0)",
    )
    device_map: str | None = Field(
        default=None, description="transformers: accelerate's device_map (auto: layers over GPU and CPU)"
    )
    max_memory: dict[str, str] | None = Field(
        default=None,
        description='transformers: max_memory per device for device_map ({"0": "6GiB", "cpu": "30GiB"})',
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"  # transformers: CUDA when present
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # transformers weights
    quantization: Literal["none", "8bit", "4bit"] = "none"  # transformers: bitsandbytes on CUDA
    # remote engines
    url: str | None = None  # remote engine address (OpenAI-compatible: the /v1 base)
    remote_model: str | None = None  # the model's name on the remote engine (default: name)
    api_key: SecretStr | None = None  # Bearer key sent to the remote engine (shown as ********** in any dump)
    connect_timeout: float = 5.0  # seconds to connect to the remote engine
    read_timeout: float = 300.0  # seconds the remote engine may go silent (504 beyond)
    # engine pools (docs/engines.md): more upstreams of the same remote model, retried and health-checked
    replicas: list[str] = Field(default_factory=list)  # URLs besides `url` (`url` may be left out)
    max_retries: int = Field(default=4, ge=0)  # attempts after the first, only before any byte was streamed
    retry_backoff: float = Field(default=0.05, ge=0)  # seconds before the first retry; doubles, with jitter
    cooldown: float = Field(default=10.0, ge=0)  # seconds a failing replica is left out
    health_interval: float = Field(default=10.0, gt=0)  # seconds between active probes of every replica
    failures_to_cooldown: int = Field(default=3, ge=1)  # consecutive failures that cool a replica down
    fallbacks: list[str] = Field(default_factory=list)  # catalog models tried in order when this one fails
    # pipelines
    ocr_model: str | None = None  # ocr-chat: the model that reads the images
    chat_model: str | None = None  # ocr-chat: the model that answers
    # behaviour
    defaults: SamplingDefaults = Field(default_factory=SamplingDefaults)  # see "sampling defaults"
    keep_alive: float | None = None  # seconds; None = server default
    pin: bool = False  # evicted last, never by keep-alive
    priority: int = 0  # among unpinned models, lower priority is evicted first
    memory_mb: int | None = None  # what loading takes, when you know better than the estimate
    max_image_side: int = 1024  # images are shrunk so that their longer side is at most this
    max_image_pixels: int | None = None  # and, when set, to at most this many pixels
    max_aspect_ratio: float | None = Field(
        default=None, ge=1, description="longer / shorter image side allowed, else a 400 (default: OCR 50, others 200)"
    )
    max_images: int = 8  # images per request for this model
    image_format: Literal["jpeg", "png"] = "jpeg"  # what resized images are re-encoded as (png: text, screenshots)
    image_pass_through: bool = True  # JPEG/PNG already within the budget reach the engine byte for byte

    @model_validator(mode="before")
    @classmethod
    def _remote_parallel(cls, data: Any) -> Any:
        if isinstance(data, dict) and "parallel" not in data and data.get("engine") in ("ollama", "openai"):
            return {**data, "parallel": REMOTE_PARALLEL}
        return data

    @field_serializer("api_key", when_used="json")
    def _api_key_json(self, key: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked in every JSON dump (runner specs, views, logs); the key itself only with `context=WITH_SECRETS`."""
        if key is None:
            return None
        return key.get_secret_value() if (info.context or {}).get("with_secrets") else str(key)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if not self.capabilities:
            caps = list(_DEFAULT_CAPABILITIES[self.engine])
            if self.engine == "llamacpp" and self.mmproj:
                caps.append(Capability.VISION)
            self.capabilities = caps
        if self.engine in _NEEDS_PATH and not self.path:
            raise ValueError(f"model {self.name!r}: engine {self.engine} needs `path`")
        if self.replicas and self.engine not in ("ollama", "openai"):
            raise ValueError(f"model {self.name!r}: `replicas` needs a remote engine (ollama or openai)")
        if self.url is None and self.replicas:
            self.url, self.replicas = self.replicas[0], self.replicas[1:]
        if self.engine in ("ollama", "openai") and not self.url:
            raise ValueError(f"model {self.name!r}: engine {self.engine} needs `url` or `replicas`")
        if self.name in self.fallbacks or len(set(self.fallbacks)) != len(self.fallbacks):
            raise ValueError(f"model {self.name!r}: `fallbacks` must name other models, each once")
        if self.engine == "ocr-chat" and not (self.ocr_model and self.chat_model):
            raise ValueError(f"model {self.name!r}: engine ocr-chat needs `ocr_model` and `chat_model`")
        self._check_llamacpp()
        if self.tensor_split and len(self.tensor_split) != len(self.devices):
            raise ValueError(f"model {self.name!r}: tensor_split needs one share per entry of `devices`")
        return self

    def _check_llamacpp(self) -> None:
        if self.engine == "llamacpp" and self.parallel > LLAMACPP_MAX_PARALLEL:
            raise ValueError(f"model {self.name!r}: llama.cpp takes parallel 1-{LLAMACPP_MAX_PARALLEL} (slots)")
        if self.cache_type_v in QUANTIZED_CACHE_TYPES and self.flash_attention == "off":
            raise ValueError(f"model {self.name!r}: cache_type_v {self.cache_type_v} needs flash_attention on or auto")
        drafting = self.draft_max_tokens is not None or self.draft_min_tokens is not None
        if (self.draft_model or drafting) and self.engine != "llamacpp":
            raise ValueError(f"model {self.name!r}: draft_model (speculative decoding) needs engine llamacpp")
        if drafting and not self.draft_model:
            raise ValueError(f"model {self.name!r}: draft_max_tokens / draft_min_tokens need `draft_model`")
        if (self.draft_min_tokens or 0) > (self.draft_max_tokens or LLAMACPP_DRAFT_MAX):
            raise ValueError(f"model {self.name!r}: draft_min_tokens must be <= draft_max_tokens")

    @property
    def engine_option_names(self) -> tuple[str, ...]:
        """The per-request engine options (Ollama's num_ctx, num_thread, num_gpu) this engine takes at load."""
        if self.engine == "llamacpp":
            return ("context_size", "threads", "gpu_layers")
        return ("threads",) if self.is_local else ()

    @property
    def input_bytes_limit(self) -> int | None:
        """Text bytes one request may send, checked before any engine work (a 50 MB prompt is refused, not
        tokenized for half a minute): 32 bytes per token of context covers any tokenizer's longest tokens."""
        if self.max_input_bytes is not None:
            return self.max_input_bytes
        return self.context_size * INPUT_BYTES_PER_TOKEN if self.is_local else None

    @property
    def embed_context(self) -> int:
        """Tokens an onnx-embed model reads of each input (longer ones are truncated, or refused with Ollama's
        `truncate: false`): context_size, at most the 512 positions of BERT-style encoders."""
        return min(self.context_size, EMBED_MAX_CONTEXT)

    @property
    def aspect_ratio_limit(self) -> float:
        """Thin strips make OCR detectors (and dynamic-resolution VLM processors) scale the short side up and
        allocate without bound: refused from the header, before any engine work. 200 is Qwen2-VL's own limit."""
        if self.max_aspect_ratio is not None:
            return self.max_aspect_ratio
        return OCR_MAX_ASPECT_RATIO if self.engine in ("rapidocr", "ocr-chat") else MAX_ASPECT_RATIO

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def gives_logprobs(self) -> bool:
        return self.engine in _LOGPROBS_ENGINES

    @property
    def takes_token_ids(self) -> bool:
        """Embeddings input as token ids: decoded here with the model's tokenizer.json, or passed on to engines
        that take them (llama.cpp, OpenAI-compatible); Ollama does not."""
        return self.tokenizer is not None or self.engine in ("llamacpp", "openai")

    @property
    def takes_suffix(self) -> bool:
        """Fill-in-the-middle (`suffix`): passed to engines that have it (llama.cpp's is /infill, not here)."""
        return self.engine in _SUFFIX_ENGINES

    @property
    def is_local(self) -> bool:
        return self.engine in LOCAL_ENGINES

    @property
    def urls(self) -> list[str]:
        """Every upstream of a remote model: `url` first, then `replicas` (duplicates dropped)."""
        return list(dict.fromkeys([self.url, *self.replicas])) if self.url else []
