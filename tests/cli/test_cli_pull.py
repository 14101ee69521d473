"""`vlmserve pull` as a real subprocess against a local imitation of the Hub's file API (HF_ENDPOINT): a tiny
LLaVA as GGUF + mmproj and as a transformers folder, resume after a dropped connection, files already complete,
a tampered file, unknown and ambiguous repositories. The GGUF pull is then served by a fresh server."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from conftest import data_uri
from hub_imitation import Hub, folder_files, running_hub
from PIL import Image
from server_process import running_server

from vlmserve.config import load_settings
from vlmserve.service.catalog import Catalog

CHUNK = 10 * 1024 * 1024  # huggingface_hub's download chunk: a resume starts at a multiple of it


def pull(hub: Hub, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLMSERVE_", "HF_"))}
    env.update({"HF_ENDPOINT": hub.url, "HF_HOME": str(data_dir.parent / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    return subprocess.run([sys.executable, "-m", "vlmserve", "pull", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)  # fmt: skip


def pulled(data_dir: Path) -> dict[str, dict[str, object]]:
    path = data_dir / "pulled.yaml"
    return {m["name"]: m for m in yaml.safe_load(path.read_text())["models"]} if path.is_file() else {}


def random_bytes(size: int, seed: int) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(size)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(HF folder, GGUF, mmproj) of the tiny random LLaVA that tests/tiny_models.py builds."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    tiny_models = pytest.importorskip("tiny_models")
    if not tiny_models.converter_available():
        pytest.skip("llama.cpp converter not fetched (run scripts/fetch_llama_convert.sh)")
    root = tmp_path_factory.mktemp("tiny-llava")
    hf_dir = tiny_models.build_tiny_llava(root / "hf")
    gguf, mmproj = tiny_models.build_tiny_llava_gguf(hf_dir, root / "gguf")
    yield hf_dir, gguf, mmproj


@pytest.mark.transformers
def test_pull_gguf_repo_then_a_new_server_serves_it(tiny_llava: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, gguf, mmproj = tiny_llava
    repo = {gguf.name: gguf.read_bytes(), mmproj.name: mmproj.read_bytes(), "README.md": b"# tiny llava\n"}
    data_dir = tmp_path / "data"
    with running_hub(Hub({"tiny/tiny-llava-GGUF": repo})) as hub:
        done = pull(hub, data_dir, "hf.co/tiny/tiny-llava-GGUF")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tiny-llava"
    folder = data_dir / "models" / "tiny--tiny-llava-GGUF"
    assert (folder / gguf.name).read_bytes() == gguf.read_bytes()
    assert (folder / mmproj.name).read_bytes() == mmproj.read_bytes()
    assert not (folder / "README.md").exists()
    entry = pulled(data_dir)["tiny-llava"]
    assert entry["engine"] == "llamacpp" and entry["mmproj"] == str(folder / mmproj.name)
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture, format="PNG")
    image_part = {"type": "image_url", "image_url": {"url": data_uri(picture.getvalue())}}
    with (
        running_server({"data_dir": str(data_dir), "embedded_models": False}) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        assert [m.id for m in client.models.list()] == ["tiny-llava"]
        text_only = client.chat.completions.create(
            model="tiny/tiny-llava-GGUF", max_tokens=4, messages=[{"role": "user", "content": "describe"}]
        )
        content: Any = [{"type": "text", "text": "describe"}, image_part]
        with_image = client.chat.completions.create(
            model="tiny-llava", max_tokens=4, messages=[{"role": "user", "content": content}]
        )
    assert text_only.usage is not None and with_image.usage is not None
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image became prompt tokens
    assert with_image.usage.completion_tokens >= 1


@pytest.mark.transformers
def test_pull_transformers_folder(tiny_llava: tuple[Path, Path, Path], tmp_path: Path) -> None:
    hf_dir, _, _ = tiny_llava
    data_dir = tmp_path / "data"
    with running_hub(Hub({"tiny/tiny-llava": folder_files(hf_dir)})) as hub:
        done = pull(hub, data_dir, "tiny/tiny-llava", "--name", "llava-hf")
    assert done.returncode == 0, done.stderr
    folder = data_dir / "models" / "tiny--tiny-llava"
    assert folder_files(folder) == folder_files(hf_dir)
    spec = Catalog.from_settings(load_settings(data_dir=str(data_dir), embedded_models=False)).get("tiny/tiny-llava")
    assert (spec.name, spec.engine, spec.path) == ("llava-hf", "transformers", str(folder))
    assert [c.value for c in spec.capabilities] == ["completion", "vision"]


def test_resumes_after_a_dropped_connection_and_skips_complete_files(tmp_path: Path) -> None:
    big = random_bytes(CHUNK + 3 * 1024 * 1024, seed=1)
    repo = {"m-Q4_K_M.gguf": big, "m-Q8_0.gguf": b"q8" * 100, "mmproj-m-f16.gguf": random_bytes(4096, seed=2)}
    hub = Hub({"acme/m-GGUF": repo}, drop_once={("acme/m-GGUF", "m-Q4_K_M.gguf"): CHUNK + 1024 * 1024})
    data_dir = tmp_path / "data"
    with running_hub(hub):
        first = pull(hub, data_dir, "acme/m-GGUF")
        assert first.returncode == 0, first.stderr
        assert hub.gets("m-Q4_K_M.gguf") == ["", f"bytes={CHUNK}-"]  # cut off, then continued where it stopped
        assert hub.gets("m-Q8_0.gguf") == []  # Q4_K_M is preferred among several quantisations
        again = pull(hub, data_dir, "acme/m-GGUF")
        assert again.returncode == 0, again.stderr
        assert len(hub.gets("m-Q4_K_M.gguf")) == 2 and len(hub.gets("mmproj-m-f16.gguf")) == 1  # nothing refetched
    stored = data_dir / "models" / "acme--m-GGUF" / "m-Q4_K_M.gguf"
    assert hashlib.sha256(stored.read_bytes()).digest() == hashlib.sha256(big).digest()
    assert list(pulled(data_dir)) == ["m"]


def test_tampered_file_fails_and_adds_nothing(tmp_path: Path) -> None:
    repo = {"t.gguf": random_bytes(50_000, seed=3)}
    data_dir = tmp_path / "data"
    with running_hub(Hub({"acme/t": repo}, wrong_sha256={("acme/t", "t.gguf")})) as hub:
        done = pull(hub, data_dir, "acme/t")
    assert done.returncode == 1
    assert "t.gguf is corrupt (sha256" in done.stderr and "deleted" in done.stderr
    assert not (data_dir / "models" / "acme--t" / "t.gguf").exists()
    assert pulled(data_dir) == {}


def test_unknown_repo_and_ambiguous_files_are_explained(tmp_path: Path) -> None:
    repo = {"x-F16.gguf": b"f16" * 10, "x-Q6_K.gguf": b"q6" * 10, "x-IQ2_XS.gguf": b"iq" * 10}  # none preferred
    data_dir = tmp_path / "data"
    with running_hub(Hub({"acme/x": repo, "acme/notes": {"README.md": b"hi"}})) as hub:
        unknown = pull(hub, data_dir, "acme/nothing-here")
        assert unknown.returncode == 1 and "no model repository 'acme/nothing-here'" in unknown.stderr
        ambiguous = pull(hub, data_dir, "acme/x")
        assert ambiguous.returncode == 1
        assert all(name in ambiguous.stderr for name in repo) and "REPO:FILE" in ambiguous.stderr
        not_a_model = pull(hub, data_dir, "acme/notes")
        assert not_a_model.returncode == 1 and "neither .gguf files nor a config.json" in not_a_model.stderr
        chosen = pull(hub, data_dir, "acme/x:q6_k", "--name", "x6")
        assert chosen.returncode == 0, chosen.stderr
    assert pulled(data_dir)["x6"]["path"] == str(data_dir / "models" / "acme--x" / "x-Q6_K.gguf")
    assert "mmproj" not in pulled(data_dir)["x6"]
