"""The model catalog: embedded defaults + env-declared models + the YAML `models` list, resolved by name/alias."""

from __future__ import annotations

import importlib.util
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vlmserve.config import Settings, pulled_models_path
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability
from vlmserve.errors import BadRequest, ModelNotFound, UnsupportedCapability

log = logging.getLogger("vlmserve.catalog")
TEMPLATES = Path(__file__).parent / "templates"
EMBEDDED = "embedded.yaml"  # beside this module: the embedded entries, as data


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def embedded_specs() -> list[ModelSpec]:
    """The real models that ship inside pip packages (the data: service/embedded.yaml), with their paths found in
    the installed packages; each is skipped (with a log line) if its package is absent."""
    specs: list[ModelSpec] = []
    entries = yaml.safe_load(resources.files(__package__).joinpath(EMBEDDED).read_text())["models"]
    for entry in entries:
        fields = _installed(entry, {spec.name for spec in specs})
        if fields is not None:
            specs.append(ModelSpec.model_validate(fields))
    return specs


def _installed(entry: dict[str, Any], added: set[str]) -> dict[str, Any] | None:
    """An embedded entry's ModelSpec fields, its `files` found in the installed packages and its template read;
    None when an entry it builds on was not added, or a package or file it needs is missing (logged)."""
    fields = dict(entry)
    required: list[str] = fields.pop("requires", [])
    files: dict[str, str] = fields.pop("files", {})
    unavailable = fields.pop("unavailable", None)
    if not set(fields.pop("after", [])) <= added:
        return None
    folders = {name: folder for name in required if (folder := _package_dir(name)) is not None}
    for key, ref in files.items():
        package, _, inside = ref.partition("/")
        fields[key] = str(folders[package] / inside) if package in folders else ""
    if len(folders) < len(required) or not all(Path(fields[key]).is_file() for key in files):
        log.warning("%s", unavailable)
        return None
    if template := fields.pop("chat_template_file", None):
        fields["chat_template"] = (TEMPLATES / template).read_text()
    return fields


def env_specs(settings: Settings) -> list[ModelSpec]:
    """Catalog entries declared with the quick env vars / flags (VLMSERVE_GGUF_MODEL, VLMSERVE_OLLAMA_URL, ...)."""
    specs: list[ModelSpec] = []
    if settings.gguf_model:
        specs.append(
            ModelSpec(
                name=Path(settings.gguf_model).stem.lower(),
                engine="llamacpp",
                path=settings.gguf_model,
                mmproj=settings.gguf_mmproj,
            )
        )
    if settings.hf_model_dir:
        specs.append(
            ModelSpec(name=Path(settings.hf_model_dir).name.lower(), engine="transformers", path=settings.hf_model_dir)
        )
    if settings.ollama_url:
        specs += [ModelSpec(name=m, engine="ollama", url=settings.ollama_url) for m in settings.ollama_models]
    if settings.openai_base_url:
        specs += [
            ModelSpec(name=m, engine="openai", url=settings.openai_base_url, api_key=settings.openai_api_key)
            for m in settings.openai_models
        ]
    return specs


def pulled_specs(settings: Settings) -> list[ModelSpec]:
    """The models `vlmserve pull` downloaded: the `models:` list of <data_dir>/pulled.yaml, when it exists."""
    path = pulled_models_path(settings)
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text()) or {}
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a `models:` list")
    return [ModelSpec.model_validate(entry) for entry in entries]


def _canonical(name: str) -> str:
    name = name.strip()
    return name[: -len(":latest")] if name.endswith(":latest") else name


class Catalog:
    def __init__(self, specs: list[ModelSpec], settings: Settings) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._names: dict[str, str] = {}
        for spec in specs:  # later declarations override earlier ones of the same name
            self._specs[spec.name] = spec
        for spec in self._specs.values():
            for key in (spec.name, *spec.aliases):
                self._names[_canonical(key).lower()] = spec.name
        self._check_pipelines()
        self.default_model = settings.default_model or self._first(Capability.COMPLETION)
        self.default_vision_model = settings.default_vision_model or self._first(Capability.VISION)
        self.default_embedding_model = settings.default_embedding_model or self._first(Capability.EMBEDDING)

    @classmethod
    def from_settings(cls, settings: Settings, pulled: list[ModelSpec] | None = None) -> Catalog:
        """The catalog the settings declare; `pulled` stands in for the pulled-models file (a change not yet
        written, checked here first)."""
        specs = embedded_specs() if settings.embedded_models else []
        managed = pulled_specs(settings) if pulled is None else pulled
        # declared models win over pulled ones of the same name
        return cls([*specs, *managed, *env_specs(settings), *settings.models], settings)

    def replace_with(self, other: Catalog) -> None:
        """Take `other`'s models and defaults, in place: every service holding this catalog sees the change
        at once (a model pulled, created, copied or deleted over the API; POST /admin/reload)."""
        self._specs, self._names = other._specs, other._names
        self.default_model = other.default_model
        self.default_vision_model = other.default_vision_model
        self.default_embedding_model = other.default_embedding_model

    def _check_pipelines(self) -> None:
        for spec in self._specs.values():
            for ref in (spec.ocr_model, spec.chat_model):
                if ref is not None and _canonical(ref).lower() not in self._names:
                    raise ValueError(f"model {spec.name!r} refers to unknown model {ref!r}")
            for ref in spec.fallbacks:  # followed one level only (as LiteLLM's), so A <-> B is no loop
                target = self._names.get(_canonical(ref).lower())
                if target is None or target == spec.name:
                    raise ValueError(f"model {spec.name!r}: fallback {ref!r} is not another catalog model")

    def _first(self, capability: Capability) -> str | None:
        candidates = [s for s in self._specs.values() if s.can(capability)]
        # prefer real models over the OCR stand-ins: true VLMs first, then the OCR pipeline, then bare OCR
        rank = {"ocr-chat": 1, "rapidocr": 2}
        candidates.sort(key=lambda s: rank.get(s.engine, 0))
        return candidates[0].name if candidates else None

    def all(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def get(self, name: str) -> ModelSpec:
        key = self._names.get(_canonical(name).lower())
        if key is None:
            raise ModelNotFound(f"model '{name}' not found", param="model")
        return self._specs[key]

    def resolve(self, name: str | None, capability: Capability) -> ModelSpec:
        """The spec for a request: its named model (or the default for the capability), checked to be able."""
        if not name:
            default = {
                Capability.COMPLETION: self.default_model,
                Capability.VISION: self.default_vision_model,
                Capability.EMBEDDING: self.default_embedding_model,
            }.get(capability)
            if default is None:
                raise BadRequest("no model named in the request and no default model configured", param="model")
            name = default
        spec = self.get(name)
        if not spec.can(capability):
            what = {
                Capability.VISION: "images",
                Capability.EMBEDDING: "embeddings",
                Capability.COMPLETION: "text generation",
                Capability.AUDIO: "audio",
            }[capability]
            raise UnsupportedCapability(f"model '{spec.name}' does not support {what}", param="model")
        return spec
