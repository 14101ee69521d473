"""Real VLM paths through the server: a tiny random LLaVA on transformers, and the same as GGUF + mmproj on
llama.cpp. Outputs are gibberish (random weights) but every code path is real: image preprocessing, image
tokens in the prompt, generation, streaming."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import ollama
import openai
import pytest
from conftest import data_uri
from PIL import Image
from server_process import ServerProcess, running_server

pytestmark = pytest.mark.transformers
pytest.importorskip("torch")
pytest.importorskip("transformers")
tiny_models = pytest.importorskip("tiny_models")

CONVERTER = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tiny-vlm")
    hf_dir = tiny_models.build_tiny_llava(root / "hf")
    models: list[dict[str, object]] = [
        {
            "name": "tiny-llava-hf",
            "engine": "transformers",
            "path": str(hf_dir),
            "capabilities": ["completion", "vision"],
            "defaults": {"max_tokens": 8},
        },
    ]
    if CONVERTER.is_file():
        gguf, mmproj = tiny_models.build_tiny_llava_gguf(hf_dir, root / "gguf")
        models.append(
            {
                "name": "tiny-llava-gguf",
                "engine": "llamacpp",
                "path": str(gguf),
                "mmproj": str(mmproj),
                "context_size": 2048,
                "defaults": {"max_tokens": 8},
            }
        )
    with running_server({"embedded_models": False, "models": models}) as server:
        yield server


@pytest.fixture(scope="module")
def client(vlm_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vlm_server.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def served(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list()}


def _png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("model", ["tiny-llava-hf", "tiny-llava-gguf"])
def test_image_adds_prompt_tokens_and_generation_runs(client: openai.OpenAI, served: set[str], model: str) -> None:
    if model not in served:
        pytest.skip(f"{model}: llama.cpp converter not fetched (run scripts/fetch_llama_convert.sh)")
    text_only = client.chat.completions.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "describe"}]
    )
    with_image = client.chat.completions.create(
        model=model,
        max_tokens=4,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": data_uri(_png((200, 30, 30)))}},
                ],
            }
        ],
    )
    assert text_only.usage is not None and with_image.usage is not None
    assert with_image.usage.prompt_tokens > text_only.usage.prompt_tokens
    assert with_image.usage.completion_tokens >= 1
    assert with_image.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("model", ["tiny-llava-hf", "tiny-llava-gguf"])
def test_vlm_streams_on_both_surfaces(
    vlm_server: ServerProcess, client: openai.OpenAI, served: set[str], model: str
) -> None:
    if model not in served:
        pytest.skip(f"{model}: llama.cpp converter not fetched")
    stream = client.chat.completions.create(
        model=model,
        max_tokens=6,
        stream=True,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_uri(_png((0, 0, 255)))}},
                    {"type": "text", "text": "what colour?"},
                ],
            }
        ],
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with ollama.Client(host=vlm_server.url) as native:
        final = list(
            native.chat(
                model=model,
                stream=True,
                options={"num_predict": 5},
                messages=[{"role": "user", "content": "what?", "images": [_png((0, 255, 0))]}],
            )
        )[-1]
    assert final.done and final.prompt_eval_count and final.eval_count


def test_two_images_add_more_tokens_than_one(client: openai.OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": data_uri(_png((9, 9, 9)))}}
    one = client.chat.completions.create(
        model="tiny-llava-hf",
        max_tokens=1,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "x"}]}],
    )
    two = client.chat.completions.create(
        model="tiny-llava-hf",
        max_tokens=1,
        messages=[{"role": "user", "content": [image, image, {"type": "text", "text": "x"}]}],
    )
    assert one.usage is not None and two.usage is not None
    assert two.usage.prompt_tokens > one.usage.prompt_tokens
