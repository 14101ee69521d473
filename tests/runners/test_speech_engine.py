"""The speech engine on a tiny random Whisper built offline (gibberish transcripts, real code paths)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import build_tiny_llava, build_tiny_whisper

from vlmserve.backends.openai_wire import message_to_wire, messages_from_wire
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import AudioPart, ChatChunk, Message, SamplingParams, TextPart
from vlmserve.errors import BadRequest
from vlmserve.media.audio import encode_wav
from vlmserve.runners.speech_engine import SpeechEngine, is_speech_folder

pytestmark = pytest.mark.transformers


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = build_tiny_whisper(tmp_path_factory.getbasetemp() / "tiny-whisper")
    return path


@pytest.fixture(scope="module")
def engine(folder: Path) -> SpeechEngine:
    spec = ModelSpec(name="tiny-whisper", engine="transformers", path=str(folder), device="cpu",
                     capabilities=["audio"])
    return SpeechEngine(spec, threads=2)


def _audio(seconds: float) -> AudioPart:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return AudioPart(encode_wav((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)), seconds)


def _run(engine: SpeechEngine, messages: list[Message], sampling: SamplingParams) -> list[ChatChunk]:
    return list(engine.generate(messages, sampling, threading.Event()))


def test_detects_speech_folders(folder: Path, tmp_path: Path) -> None:
    assert is_speech_folder(str(folder))
    assert not is_speech_folder(str(build_tiny_llava(tmp_path / "llava")))
    assert not is_speech_folder(str(tmp_path / "missing"))


def test_transcribes_over_the_wire_format(engine: SpeechEngine) -> None:
    wire = message_to_wire(Message(role="user", parts=[TextPart("transcribe"), _audio(1.0)]))
    assert wire["content"][1]["type"] == "input_audio"
    chunks = _run(engine, messages_from_wire([wire]), SamplingParams(max_tokens=4))
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length") and final.usage is not None
    assert final.usage.completion_tokens > 0


def test_long_audio_in_windows_and_sampling(engine: SpeechEngine) -> None:
    chunks = _run(engine, [Message(role="user", parts=[_audio(65.0)])],
                  SamplingParams(max_tokens=3, temperature=0.7, seed=1))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 3 * 3  # three 30 s windows, at most max_tokens each
    assert chunks[-1].usage.completion_tokens > 0
    texts = [c.text for c in chunks[:-1]]
    assert all(texts) and all(t.startswith(" ") for t in texts[1:])


def test_cancel_and_no_audio(engine: SpeechEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    chunks = list(engine.generate([Message(role="user", parts=[_audio(1.0)])], SamplingParams(), cancel))
    assert [c.text for c in chunks] == [""]
    with pytest.raises(BadRequest, match="input_audio"):
        _run(engine, [Message(role="user", parts=[TextPart("hello")])], SamplingParams())
