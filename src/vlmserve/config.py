"""Settings: one typed declaration, filled from CLI flags > env vars (VLMSERVE_*) > YAML file > defaults.

The YAML file is named by `--config`, or by VLMSERVE_CONFIG. Its keys are the field names below; `models` is
the catalog (a list of ModelSpec). This is the only module that reads the environment.
"""

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from vlmserve.domain.duration import parse_duration
from vlmserve.domain.spec import ModelSpec


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VLMSERVE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 11434
    log_level: str = "info"
    # catalog
    models: list[ModelSpec] = Field(default_factory=list)
    embedded_models: bool = Field(True, description="serve the models that ship inside pip packages")
    default_model: str | None = Field(None, description="model used when a request names none")
    default_vision_model: str | None = Field(None, description="model for /process and /analyze")
    default_embedding_model: str | None = None
    # quick declarations through env vars (each adds one catalog entry)
    gguf_model: str | None = Field(None, description="path of a GGUF file to serve on llama.cpp")
    gguf_mmproj: str | None = Field(None, description="its multimodal projector: makes it a VLM")
    hf_model_dir: str | None = Field(None, description="a Hugging Face model folder to serve on transformers")
    ollama_url: str | None = Field(None, description="a remote Ollama server")
    ollama_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="models of that Ollama server to serve (comma-separated)"
    )
    openai_base_url: str | None = Field(None, description="a remote OpenAI-compatible server (…/v1)")
    openai_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    openai_api_key: str | None = None
    # engines and limits
    keep_alive: float = Field(300.0, description="seconds an idle model stays loaded (Ollama default 5m)")
    runner_start_timeout: float = 120.0
    max_request_bytes: int = 64 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    threads: int | None = Field(None, description="CPU threads per local engine (default: all cores)")

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        return 300.0 if seconds is None else seconds

    @field_validator("ollama_models", "openai_models", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build Settings; `overrides` are CLI flags (highest priority), unset ones must be left out."""
    path = config_file or os.environ.get("VLMSERVE_CONFIG")
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
