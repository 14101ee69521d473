"""A tiny random LLaVA converted to GGUF + mmproj with llama.cpp's converters, run in xllamacpp."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
xlc = pytest.importorskip("xllamacpp")

from PIL import Image  # noqa: E402
from tiny_models import build_tiny_llava, build_tiny_llava_gguf, converter_available  # noqa: E402

pytestmark = [
    pytest.mark.transformers,
    pytest.mark.slow,
    pytest.mark.skipif(
        not converter_available(), reason="llama.cpp converter not fetched: run scripts/fetch_llama_convert.sh"
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.getbasetemp()
    text, mmproj = build_tiny_llava_gguf(build_tiny_llava(base / "tiny-llava"), base / "tiny-llava-gguf")
    params = xlc.CommonParams()
    params.model.path = str(text)
    params.mmproj.path = str(mmproj)
    params.n_ctx = 512
    params.n_parallel = 1
    params.port = 0
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.n_gpu_layers = 0
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    srv = xlc.Server(params)
    yield srv
    del srv


def _data_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (30, 30, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _chat(server: Any, *, image: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": "What is in this picture?"}]
    if image:
        content.insert(0, {"type": "image_url", "image_url": {"url": _data_url()}})
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "temperature": 0,
        "cache_prompt": False,
    }
    answer: dict[str, Any] = server.handle_chat_completions(body)
    assert "error" not in answer, answer
    return answer


def test_gguf_files_exist(tmp_path_factory: pytest.TempPathFactory, server: Any) -> None:
    folder = Path(tmp_path_factory.getbasetemp() / "tiny-llava-gguf")
    assert (folder / "tiny-llava-f32.gguf").stat().st_size > 0
    assert (folder / "mmproj-tiny-llava-f32.gguf").stat().st_size > 0


def test_image_raises_prompt_tokens(server: Any) -> None:
    plain = _chat(server, image=False)["usage"]
    with_image = _chat(server, image=True)["usage"]
    assert plain["completion_tokens"] == 4
    assert with_image["prompt_tokens"] > plain["prompt_tokens"] + 10  # 16 image embeddings (32 px, patch 8)
