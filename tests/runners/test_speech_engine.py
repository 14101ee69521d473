"""The speech engine on a tiny random Whisper built offline (gibberish transcripts, real code paths)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import build_tiny_llava, build_tiny_whisper

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import AudioPart, Capability, ChatChunk, Message, SamplingParams, TextPart
from vlmserve.errors import BadRequest
from vlmserve.media.audio import encode_wav
from vlmserve.runners.speech_engine import SpeechEngine, is_speech_folder
from vlmserve.wire.openai_codec import chat_from_body, message_to_wire

pytestmark = pytest.mark.transformers


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = build_tiny_whisper(tmp_path_factory.getbasetemp() / "tiny-whisper")
    return path


@pytest.fixture(scope="module")
def engine(folder: Path) -> SpeechEngine:
    spec = ModelSpec(name="tiny-whisper", engine="transformers", path=str(folder), device="cpu", capabilities=["audio"])
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
    chunks = _run(engine, chat_from_body({"messages": [wire]}).messages, SamplingParams(max_tokens=4))
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length") and final.usage is not None
    assert final.usage.completion_tokens > 0


def test_long_audio_in_windows_and_sampling(engine: SpeechEngine) -> None:
    chunks = _run(
        engine, [Message(role="user", parts=[_audio(65.0)])], SamplingParams(max_tokens=3, temperature=0.7, seed=1)
    )
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


# --- transcription options: language and prompt reach Whisper's generate ---------------------------------------


@pytest.fixture(scope="module")
def multilingual(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> SpeechEngine:
    """The tiny Whisper told it is multilingual, with one language token (<|en|>) and the two task tokens."""
    copy = Path(shutil.copytree(folder, tmp_path_factory.getbasetemp() / "tiny-whisper-multilingual"))
    config = json.loads((copy / "generation_config.json").read_text())
    vocab = json.loads((copy / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in vocab}
    # _from_model_config: transformers would rebuild the config from config.json and drop these keys
    config.update(
        _from_model_config=False,
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    )
    (copy / "generation_config.json").write_text(json.dumps(config))
    spec = ModelSpec(
        name="tiny-whisper-ml", engine="transformers", path=str(copy), device="cpu", capabilities=[Capability.AUDIO]
    )
    return SpeechEngine(spec, threads=2)


class GenerateSpy:
    """Wraps the real model.generate and keeps the keyword arguments of every call."""

    def __init__(self, engine: SpeechEngine) -> None:
        self.calls: list[dict[str, Any]] = []
        self._real = engine.model.generate

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self._real(inputs, **kwargs)


def _spied(engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch) -> GenerateSpy:
    spy = GenerateSpy(engine)
    monkeypatch.setattr(engine.model, "generate", spy)
    return spy


def _text(chunks: list[ChatChunk]) -> str:
    return "".join(c.text for c in chunks)


def test_language_checked_against_the_model_and_passed_to_generate(
    engine: SpeechEngine, multilingual: SpeechEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = [Message(role="user", parts=[_audio(1.0)])]
    english_only = _spied(engine, monkeypatch)
    _run(engine, message, SamplingParams(max_tokens=4, language="en"))  # its own language: nothing to force
    assert "language" not in english_only.calls[-1]
    with pytest.raises(BadRequest, match="English only") as refused:
        _run(engine, message, SamplingParams(language="fr"))
    assert refused.value.param == "language"

    spy = _spied(multilingual, monkeypatch)
    chunks = _run(multilingual, message, SamplingParams(max_tokens=4, language="EN"))
    assert spy.calls[-1]["language"] == "en" and chunks[-1].finish_reason is not None
    calls = len(spy.calls)
    with pytest.raises(BadRequest, match=r"does not know language 'fr' \(it knows: en\)"):
        _run(multilingual, message, SamplingParams(language="fr"))
    assert len(spy.calls) == calls  # refused before any decoding
    # forcing English decodes differently from letting the model detect the language (random weights: it "detects"
    # whatever its first logits say), so the option really changed the decoder's input
    detected = _run(multilingual, message, SamplingParams(max_tokens=4))
    assert "language" not in spy.calls[-1] and _text(detected) != _text(chunks)


def test_prompt_becomes_prompt_ids_and_a_long_one_keeps_its_tail(
    engine: SpeechEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = [Message(role="user", parts=[_audio(1.0)])]
    spy = _spied(engine, monkeypatch)
    tokenizer = engine.processor.tokenizer
    start_of_prev = tokenizer.convert_tokens_to_ids("<|startofprev|>")
    plain = _text(_run(engine, message, SamplingParams(max_tokens=6)))
    assert "prompt_ids" not in spy.calls[-1]
    prompted = []
    for prompt in ("the cat sat", "hello world", "a quick brown fox jumps"):
        prompted.append(_text(_run(engine, message, SamplingParams(max_tokens=6, transcript_prompt=prompt))))
        ids = spy.calls[-1]["prompt_ids"].tolist()
        assert ids[0] == start_of_prev and tokenizer.decode(ids[1:]).strip() == prompt
    assert any(text != plain for text in prompted), (plain, prompted)  # the decoder read the prompt first

    long_prompt = " ".join(f"word{i}" for i in range(200))  # far more than the 64 decoder positions
    chunks = _run(engine, message, SamplingParams(max_tokens=40, transcript_prompt=long_prompt))
    ids = spy.calls[-1]["prompt_ids"].tolist()
    assert ids[0] == start_of_prev and len(ids) == engine.max_positions // 2
    assert tokenizer.decode(ids[1:]).strip().endswith("word199")  # the most recent words are kept
    assert spy.calls[-1]["max_new_tokens"] + len(ids) <= engine.max_positions
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
