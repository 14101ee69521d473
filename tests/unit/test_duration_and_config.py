"""Durations (Ollama keep_alive semantics), settings sources, catalog resolution."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vlmserve.config import load_settings
from vlmserve.domain.duration import keep_alive_seconds, parse_duration
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import Capability
from vlmserve.errors import BadRequest, ModelNotFound, UnsupportedCapability
from vlmserve.service.catalog import Catalog


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("45s", 45.0),
        (10, 10.0),
        ("2.5", 2.5),
        (0, 0.0),
        ("0", 0.0),
        (-1, math.inf),
        ("-1m", math.inf),
        (None, None),
    ],
)
def test_parse_duration(value: str | int | None, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m5", "", "1x"])
def test_bad_keep_alive_is_400(value: str) -> None:
    with pytest.raises(BadRequest):
        keep_alive_seconds(value)


def test_settings_priority_flags_over_env_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("port: 9001\nkeep_alive: 10m\ndefault_model: from-yaml\nembedded_models: false\n")
    assert load_settings(config).port == 9001
    assert load_settings(config).keep_alive == 600.0
    monkeypatch.setenv("VLMSERVE_PORT", "9002")
    monkeypatch.setenv("VLMSERVE_OLLAMA_MODELS", "llava:7b, qwen2.5vl")
    settings = load_settings(config)
    assert settings.port == 9002 and settings.ollama_models == ["llava:7b", "qwen2.5vl"]
    assert load_settings(config, port="9003").port == 9003


def test_settings_reject_unknown_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(ValueError):
        load_settings(config)


def test_model_spec_validation() -> None:
    with pytest.raises(ValueError, match="needs `path`"):
        ModelSpec(name="x", engine="llamacpp")
    with pytest.raises(ValueError, match="needs `url`"):
        ModelSpec(name="x", engine="ollama")
    vlm = ModelSpec(name="v", engine="llamacpp", path="/m.gguf", mmproj="/p.gguf")
    assert vlm.can(Capability.VISION)
    assert not ModelSpec(name="t", engine="llamacpp", path="/m.gguf").can(Capability.VISION)


def _catalog(tmp_path: Path, yaml_text: str) -> Catalog:
    config = tmp_path / "c.yaml"
    config.write_text("embedded_models: false\n" + yaml_text)
    return Catalog.from_settings(load_settings(config))


def test_catalog_resolves_names_aliases_and_tags(tmp_path: Path) -> None:
    catalog = _catalog(
        tmp_path,
        """
models:
  - {name: llava, engine: ollama, url: "http://h:11434", remote_model: "llava:7b", capabilities: [completion, vision],
     aliases: [Vision]}
  - {name: emb, engine: openai, url: "http://h:8000/v1", capabilities: [embedding]}
""",
    )
    assert catalog.get("llava:latest").name == "llava"
    assert catalog.get("vision").name == "llava"
    assert catalog.resolve(None, Capability.VISION).name == "llava"
    assert catalog.resolve(None, Capability.EMBEDDING).name == "emb"
    with pytest.raises(ModelNotFound):
        catalog.get("missing")
    with pytest.raises(UnsupportedCapability):
        catalog.resolve("emb", Capability.COMPLETION)


def test_catalog_env_declared_models(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        embedded_models="false",
        gguf_model="/m/Qwen-VL.gguf",
        gguf_mmproj="/m/mm.gguf",
        openai_base_url="http://h/v1",
        openai_models="gpt-x",
    )
    catalog = Catalog.from_settings(settings)
    assert catalog.get("qwen-vl").can(Capability.VISION)
    assert catalog.get("gpt-x").engine == "openai"


def test_pipeline_must_reference_known_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        _catalog(tmp_path, "models:\n  - {name: p, engine: ocr-chat, ocr_model: a, chat_model: b}\n")
