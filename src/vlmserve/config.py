"""Settings: one typed declaration, filled from CLI flags > env vars (VLMSERVE_*) > YAML file > defaults.

The YAML file is named by `--config`, or by VLMSERVE_CONFIG. Its keys are the field names below; `models` is
the catalog (a list of ModelSpec). This is the only module that reads the environment.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from vlmserve.domain.duration import parse_duration
from vlmserve.domain.spec import ModelSpec

Scope = Literal["inference", "batch", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("inference", "batch", "admin")


class StaticApiKey(BaseModel):
    """An API key declared in the config file (hashed at start, never stored)."""

    model_config = ConfigDict(extra="forbid")
    key: str  # the secret clients send as `Authorization: Bearer ...`
    id: str | None = None  # the name in logs and metrics (default: derived from the key's hash)
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES))  # routes it may use
    models: list[str] | None = None  # models it may use (default: all)
    rpm: int | None = None  # requests per minute (default: rate_limit_rpm)
    tpm: int | None = None  # tokens per minute (default: rate_limit_tpm)
    concurrency: int | None = None  # requests in flight (default: rate_limit_concurrency)


class ScriptedGpu(BaseModel):
    """FOR TESTS: a GPU that exists only in settings (`gpu_probe: scripted`); nothing runs on it."""

    model_config = ConfigDict(extra="forbid")
    name: str = "scripted GPU"  # what reports call it
    total_mb: int = Field(ge=1, le=2**24)  # its memory
    used_mb: int = Field(0, ge=0, le=2**24)  # what other programs hold on it


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLMSERVE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"  # address to listen on; a non-loopback one needs api_keys or allow_unauthenticated
    port: int = 11434  # Ollama's port, so Ollama clients find it
    log_level: str = "info"  # debug, info, warning, error
    log_format: Literal["text", "json"] = Field("text", description="log lines: text, or json (one object a line)")
    access_log: bool = Field(True, description="one log record per request (off saves ~40 µs of CPU per request)")
    # catalog
    models: list[ModelSpec] = Field(default_factory=list)  # the catalog (YAML only): see "Catalog entries"
    embedded_models: bool = Field(True, description="serve the models that ship inside pip packages")
    default_model: str | None = Field(None, description="model used when a request names none")
    default_vision_model: str | None = Field(None, description="model for /process and /analyze")
    default_embedding_model: str | None = None  # model for embedding requests that name none
    # quick declarations through env vars (each adds one catalog entry)
    gguf_model: str | None = Field(None, description="path of a GGUF file to serve on llama.cpp")
    gguf_mmproj: str | None = Field(None, description="its multimodal projector: makes it a VLM")
    hf_model_dir: str | None = Field(None, description="a Hugging Face model folder to serve on transformers")
    ollama_url: str | None = Field(None, description="a remote Ollama server")
    ollama_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="models of that Ollama server to serve (comma-separated)"
    )
    openai_base_url: str | None = Field(None, description="a remote OpenAI-compatible server (…/v1)")
    openai_models: Annotated[list[str], NoDecode] = Field(default_factory=list)  # its models (comma-separated)
    openai_api_key: SecretStr | None = None  # Bearer key for that server
    # engines and limits
    keep_alive: float = Field(300.0, description="seconds an idle model stays loaded (Ollama default 5m)")
    runner_start_timeout: float = 120.0  # seconds a runner subprocess may take to load its model
    max_request_bytes: int = 64 * 1024 * 1024  # largest request body (413 beyond)
    max_image_bytes: int = 20 * 1024 * 1024  # largest single image, encoded (413 beyond)
    max_image_pixels: int = Field(50_000_000, description="images with more pixels are refused (from the header)")
    max_image_decoded_mb: int = Field(
        256, ge=1, description="memory one image may take to decode, convert and resize (from the header; 413 beyond)"
    )
    media_decode_memory_mb: int = Field(
        512, ge=1, description="memory all image decodes in flight may take together; more wait their turn"
    )
    media_decode_wait: float = Field(30.0, gt=0, description="seconds an image may wait for decode memory (503 beyond)")
    # media pipeline (image URLs, per-request limits, prepared-image cache)
    media_fetch_enabled: bool = Field(True, description="fetch http(s) image URLs sent by clients")
    media_fetch_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs/hosts, each optionally with :port, that image URLs may reach although private "
        "(comma-separated; an entry that can never match is a startup error)",
    )
    media_fetch_timeout: float = Field(10.0, gt=0, description="seconds one image URL fetch may take in all")
    media_fetch_max_redirects: int = Field(3, ge=0)  # redirects followed per image URL
    media_file_root: str | None = Field(None, description="folder that file:// image URLs may read from")
    media_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="prepared-image cache size (bytes)")
    media_resize_filter: Literal["bicubic", "lanczos", "hamming", "bilinear"] = "bicubic"  # final resize filter
    max_images_per_message: int = Field(8, ge=1)  # images in one message (400 beyond)
    max_request_image_bytes: int = Field(64 * 1024 * 1024, description="all images of one request together")
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1, description="largest audio input (input_audio, uploads)")
    embed_max_input_bytes: int = Field(256 * 1024, ge=1, description="largest embeddings input in bytes (413 beyond)")
    embed_max_total_bytes: int = Field(4 * 2**20, ge=1, description="all inputs of one embeddings request (413 beyond)")
    embed_max_inputs: int = Field(2048, ge=1, description="inputs in one embeddings request (OpenAI's limit)")
    max_audio_seconds: float = Field(600.0, gt=0, description="longest audio input, in seconds")
    max_video_bytes: int = Field(100 * 1024 * 1024, ge=1, description="largest video input (video_url parts)")
    max_video_seconds: float = Field(600.0, gt=0, description="longest video input, in seconds")
    video_frames: int = Field(8, ge=1, description="frames sampled evenly from each video, sent as images")
    threads: int | None = Field(None, description="CPU threads per local engine (default: all cores)")
    # scheduler
    memory_budget_mb: int | None = Field(
        None, description="memory local models may use together (default 80% of RAM; like MAX_VRAM_USAGE_MB)"
    )
    max_queue: int = Field(64, ge=0, description="requests that may wait per model before 429/503")
    queue_timeout: float = Field(600.0, gt=0, description="seconds a request may wait in a queue before 503")
    max_swap_wait: float = Field(
        10.0, ge=0, description="seconds a request for an unloaded model waits while another model's run goes on"
    )
    scheduler_ordering: Literal["swap-aware", "fifo"] = "swap-aware"  # queue order across models
    # GPUs (docs/scheduler.md, "GPUs")
    gpu_probe: Literal["auto", "nvml", "none", "scripted"] = Field(
        "auto", description="how GPUs are found: auto (NVML if it starts, else none), nvml, none, scripted (tests)"
    )
    scripted_gpus: list[ScriptedGpu] = Field(
        default_factory=list, description="FOR TESTS: the GPUs that gpu_probe scripted reports (nothing runs there)"
    )
    gpu_memory_budget_mb: int | None = Field(
        None, ge=1, le=2**24, description="memory local models may use on each GPU (default: gpu_memory_fraction)"
    )
    gpu_memory_fraction: float = Field(
        0.9, gt=0, le=1, description="share of each GPU's memory local models may use (like --gpu-memory-utilization)"
    )
    # durable batches (OpenAI Files + Batches) and async jobs
    data_dir: str | None = Field(None, description="folder of the SQLite database and uploaded files (~/.vlmserve)")
    pulled_models_file: str | None = Field(
        None, description="catalog file that `vlmserve pull` appends to and the server loads (<data_dir>/pulled.yaml)"
    )
    database_url: str | None = Field(
        None, description="postgresql://... to share batches between replicas (default: SQLite in data_dir)"
    )
    database_schema: str | None = Field(None, description="PostgreSQL schema of vlmserve's tables")
    batch_workers: bool = Field(True, description="run batch lines and async jobs in this process")
    batch_concurrency: int = Field(8, ge=1, description="lines of one batch in flight per server process")
    batch_lease: float = Field(30.0, gt=0, description="seconds a claimed batch line stays claimed unrenewed")
    batch_poll_interval: float = Field(0.5, gt=0, description="seconds between looks for batch work")
    batch_max_attempts: int = Field(4, ge=1, description="tries of a batch line on 429/502/503/504")
    batch_max_file_bytes: int = Field(200 * 1024 * 1024, description="largest file upload (/v1/files)")
    batch_max_lines: int = Field(50_000, ge=1, description="most requests in one batch input file")

    # security: API keys, rate limits (0 = unlimited), shared limiter state
    api_keys: Annotated[list[str | StaticApiKey], NoDecode] = Field(
        default_factory=list, description="static API keys (comma-separated secrets; YAML may give scopes/limits)"
    )
    allow_unauthenticated: bool = Field(False, description="serve a non-loopback host without API keys")
    rate_limit_rpm: int = Field(0, ge=0, description="default requests per minute per API key (0: unlimited)")
    rate_limit_tpm: int = Field(0, ge=0, description="default tokens per minute per API key (0: unlimited)")
    rate_limit_concurrency: int = Field(0, ge=0, description="default requests in flight per API key (0: unlimited)")
    redis_url: str | None = Field(None, description="redis://... to share rate limits between replicas")
    key_refresh_interval: float = Field(5.0, gt=0, description="seconds between reloads of the API key table")
    # HTTP edge: CORS, connection and header/body limits (see docs/security.md)
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="browser origins allowed by CORS (comma-separated; empty: CORS off)"
    )
    cors_allow_credentials: bool = Field(False, description="CORS: allow cookies/Authorization from those origins")
    timeout_keep_alive: float = Field(5.0, gt=0, description="seconds an idle keep-alive connection stays open")
    request_header_timeout: float = Field(
        10.0, gt=0, description="seconds a client may take to send a request's headers before it is dropped"
    )
    request_body_timeout: float = Field(
        300.0, gt=0, description="seconds a client may take to send a request's body before 408"
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="largest request line + headers (431 beyond)")
    limit_concurrency: int | None = Field(
        None, ge=1, description="open connections + requests before 503 + Retry-After (default: unlimited)"
    )

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        return 300.0 if seconds is None else seconds

    @field_validator("ollama_models", "openai_models", "media_fetch_allow", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("media_fetch_allow")
    @classmethod
    def _fetch_allow(cls, value: list[str]) -> list[str]:
        from vlmserve.media.fetch import parse_allow_entry  # imported here: reading settings needs no aiohttp

        for entry in value:
            parse_allow_entry(entry)  # ValueError: an entry that can never match
        return value


def data_dir_path(settings: Settings) -> Path:
    """Where the database, uploads and pulled models live: `data_dir`, or ~/.vlmserve."""
    return Path(settings.data_dir).expanduser() if settings.data_dir else Path.home() / ".vlmserve"


def pulled_models_path(settings: Settings) -> Path:
    """The catalog file of the models `vlmserve pull` downloaded (a YAML `models:` list)."""
    configured = settings.pulled_models_file
    return Path(configured).expanduser() if configured else data_dir_path(settings) / "pulled.yaml"


def config_path(config_file: str | Path | None = None) -> str | Path | None:
    """The YAML config file: the one named (--config), or VLMSERVE_CONFIG."""
    return config_file or os.environ.get("VLMSERVE_CONFIG") or None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings; `overrides` are CLI flags (highest priority), unset ones must be left out."""
    path = config_path(config_file)
    if path and not Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {path}")

    class _FromSources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            return tuple(sources)

    return _FromSources(**{k: v for k, v in overrides.items() if v is not None})
