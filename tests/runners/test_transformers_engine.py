"""The transformers engine on a tiny random LLaVA built offline (gibberish output, real code paths)."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image
from tiny_models import build_tiny_llava

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ImageInput, Message, SamplingParams, TextPart
from vlmserve.errors import InvalidMedia
from vlmserve.runners.transformers_engine import TransformersEngine

pytestmark = pytest.mark.transformers


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> TransformersEngine:
    folder = build_tiny_llava(tmp_path_factory.getbasetemp() / "tiny-llava")
    spec = ModelSpec(name="tiny-llava", engine="transformers", path=str(folder), device="cpu")
    return TransformersEngine(spec, threads=2)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _ask(text: str, *, image: bool = False) -> list[Message]:
    parts: list[TextPart | ImageInput] = [TextPart(text)]
    if image:
        parts.insert(0, ImageInput(_png()))
    return [Message(role="user", parts=list(parts))]


def _run(
    engine: TransformersEngine, messages: list[Message], sampling: SamplingParams, cancel: threading.Event | None = None
) -> list[ChatChunk]:
    return list(engine.generate(messages, sampling, cancel or threading.Event()))


def test_text_generation_streams_chunks_and_ends_with_usage(engine: TransformersEngine) -> None:
    chunks = _run(engine, _ask("Describe the picture, please."), SamplingParams(max_tokens=40))
    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) > 1
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None
    assert final.usage.prompt_tokens > 0
    assert 0 < final.usage.completion_tokens <= 40


def test_greedy_is_deterministic_and_seeded_sampling_repeats(engine: TransformersEngine) -> None:
    greedy = SamplingParams(max_tokens=12, temperature=0)
    assert _run(engine, _ask("hello"), greedy) == _run(engine, _ask("hello"), greedy)
    sampled = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, top_k=40, seed=7)
    assert _run(engine, _ask("hello"), sampled) == _run(engine, _ask("hello"), sampled)


def test_image_raises_prompt_tokens(engine: TransformersEngine) -> None:
    plain = _run(engine, _ask("What is this?"), SamplingParams(max_tokens=2))[-1].usage
    with_image = _run(engine, _ask("What is this?", image=True), SamplingParams(max_tokens=2))[-1].usage
    assert plain is not None and with_image is not None
    assert with_image.prompt_tokens > plain.prompt_tokens + 10  # 16 image tokens at 32 px / patch 8


def test_max_tokens_gives_length(engine: TransformersEngine) -> None:
    final = _run(engine, _ask("Count to ten."), SamplingParams(max_tokens=5))[-1]
    assert final.finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == 5


def test_stop_string_cuts_output(engine: TransformersEngine) -> None:
    sampling = SamplingParams(max_tokens=40)
    full = "".join(c.text for c in _run(engine, _ask("Say something."), sampling))
    assert len(full) > 6
    stop = full[3:6]
    chunks = _run(engine, _ask("Say something."), SamplingParams(max_tokens=40, stop=[stop]))
    cut = "".join(c.text for c in chunks)
    assert cut == full[: full.find(stop)]
    assert chunks[-1].finish_reason == "stop"


def test_cancel_before_start_stops_at_first_token(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    final = _run(engine, _ask("Tell me a long story."), SamplingParams(max_tokens=200), cancel)[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens <= 1


def test_cancel_mid_stream_stops_generation(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    chunks = []
    for chunk in engine.generate(_ask("Tell me a long story."), SamplingParams(max_tokens=900), cancel):
        chunks.append(chunk)
        cancel.set()
    final = chunks[-1]
    assert final.usage is not None and final.usage.completion_tokens < 900


def test_undecodable_image_is_invalid_media(engine: TransformersEngine) -> None:
    messages = [Message(role="user", parts=[ImageInput(b"not an image"), TextPart("hi")])]
    with pytest.raises(InvalidMedia):
        _run(engine, messages, SamplingParams(max_tokens=2))


def test_quantization_on_cpu_is_refused(tmp_path: Path) -> None:
    spec = ModelSpec(name="q", engine="transformers", path=str(tmp_path), device="cpu", quantization="4bit")
    with pytest.raises(SystemExit, match="CUDA"):
        TransformersEngine(spec, threads=None)
