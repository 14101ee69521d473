"""Audio and video through a real server: a tiny random Whisper on the transformers runner (transcriptions and
`input_audio` chat parts), and videos sampled into frames for the embedded RapidOCR model."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from server_process import ServerProcess, running_server

pytestmark = pytest.mark.transformers
pytest.importorskip("torch")
pytest.importorskip("transformers")
tiny_models = pytest.importorskip("tiny_models")
cv2 = pytest.importorskip("cv2")


def wav_bytes(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((0.4 * np.sin(2 * np.pi * 330 * t) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def text_video(path: Path, frames_per_label: int = 2, fps: float = 4.0) -> bytes:
    """An MJPG .avi whose frames show "FRAME 1" .. "FRAME 8" in big black letters on white."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (480, 120))
    for label in range(1, 9):
        image = np.full((120, 480, 3), 255, np.uint8)
        cv2.putText(image, f"FRAME {label}", (20, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 5)
        for _ in range(frames_per_label):
            writer.write(image)
    writer.release()
    return path.read_bytes()


@pytest.fixture(scope="module")
def av_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    whisper = tiny_models.build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "hf")
    models = [
        {
            "name": "tiny-whisper",
            "engine": "transformers",
            "path": str(whisper),
            "capabilities": ["audio"],
            "defaults": {"max_tokens": 8},
        }
    ]
    config = {"embedded_models": True, "models": models, "max_audio_seconds": 5, "max_video_seconds": 30}
    with running_server(config) as server:
        yield server


@pytest.fixture(scope="module")
def client(av_server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=av_server.url + "/v1", api_key="x", max_retries=0) as client:
        yield client


def test_transcription_through_the_openai_client(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(model="tiny-whisper", file=("speech.wav", wav_bytes(), "audio/wav"))
    assert isinstance(result.text, str)


def test_transcription_formats(av_server: ServerProcess) -> None:
    files = {"file": ("speech.wav", wav_bytes(0.5), "audio/wav")}
    text = httpx.post(
        av_server.url + "/v1/audio/transcriptions",
        files=files,
        data={"model": "tiny-whisper", "response_format": "text"},
        timeout=60,
    )
    assert text.status_code == 200, text.text
    assert text.headers["content-type"].startswith("text/plain")
    verbose = httpx.post(
        av_server.url + "/v1/audio/transcriptions",
        files=files,
        data={"model": "tiny-whisper", "response_format": "verbose_json", "language": "en"},
        timeout=60,
    )
    assert verbose.status_code == 200, verbose.text
    body = verbose.json()
    assert body["duration"] == pytest.approx(0.5, abs=0.01)
    assert body["language"] == "en" and isinstance(body["text"], str)


def test_transcription_refuses_bad_audio_and_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="tiny-whisper", file=("x.wav", b"not audio at all", "audio/wav"))
    with pytest.raises(openai.BadRequestError, match="audio"):
        client.audio.transcriptions.create(model="rapidocr", file=("x.wav", wav_bytes(0.2), "audio/wav"))
    with pytest.raises(openai.APIStatusError) as too_long:
        client.audio.transcriptions.create(model="tiny-whisper", file=("x.wav", wav_bytes(6.0), "audio/wav"))
    assert too_long.value.status_code == 413


def _audio_message(data: bytes, text: str = "") -> Any:
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
    content = [{"type": "text", "text": text}, audio] if text else [audio]
    return [{"role": "user", "content": content}]


def test_input_audio_chat_part(client: openai.OpenAI) -> None:
    messages = _audio_message(wav_bytes(0.5), "transcribe")
    response = client.chat.completions.create(model="tiny-whisper", messages=messages)
    assert response.choices[0].message.role == "assistant"
    assert isinstance(response.choices[0].message.content, str)
    stream = client.chat.completions.create(model="tiny-whisper", stream=True, messages=messages)
    assert [chunk for chunk in stream if chunk.choices and chunk.choices[0].finish_reason]


def test_input_audio_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="audio"):
        client.chat.completions.create(model="rapidocr", messages=_audio_message(wav_bytes(0.2)))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-whisper", messages=_audio_message(b"garbage bytes, not a wav"))


def _video_message(url: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}]


def test_video_frames_read_by_ocr(av_server: ServerProcess, tmp_path: Path) -> None:
    data = text_video(tmp_path / "frames.avi")
    url = "data:video/x-msvideo;base64," + base64.b64encode(data).decode()
    r = httpx.post(
        av_server.url + "/v1/chat/completions", json={"model": "rapidocr", "messages": _video_message(url)}, timeout=120
    )
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"].upper()
    seen = {n for n in range(1, 9) if f"FRAME {n}" in text or f"FRAME{n}" in text}
    assert len(seen) >= 4, text


def test_video_garbage_and_too_long(av_server: ServerProcess, tmp_path: Path) -> None:
    garbage = "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42 but then junk" * 20).decode()
    r = httpx.post(
        av_server.url + "/v1/chat/completions",
        json={"model": "rapidocr", "messages": _video_message(garbage)},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    long_video = text_video(tmp_path / "long.avi", frames_per_label=20, fps=4.0)  # 40 s > 30 s
    url = "data:video/x-msvideo;base64," + base64.b64encode(long_video).decode()
    r = httpx.post(
        av_server.url + "/v1/chat/completions", json={"model": "rapidocr", "messages": _video_message(url)}, timeout=60
    )
    assert r.status_code == 413, r.text


def test_transcription_language_and_prompt_reach_the_engine(client: openai.OpenAI, av_server: ServerProcess) -> None:
    speech = ("speech.wav", wav_bytes(1.0), "audio/wav")
    # the tiny Whisper is English-only: the runner refuses another language before decoding, in OpenAI's format
    with pytest.raises(openai.BadRequestError, match="English only") as refused:
        client.audio.transcriptions.create(model="tiny-whisper", file=speech, language="fr")
    error = refused.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error", error
    assert error["param"] == "language", error  # the runner's param survives the gateway
    malformed = httpx.post(av_server.url + "/v1/audio/transcriptions", files={"file": speech},
                           data={"model": "tiny-whisper", "language": "english!"}, timeout=60)  # fmt: skip
    assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "language", malformed.text
    english = client.audio.transcriptions.create(model="tiny-whisper", file=speech, language="EN")
    plain = client.audio.transcriptions.create(model="tiny-whisper", file=speech)
    assert english.text == plain.text  # "en" is what an English-only model does anyway: same greedy decoding
    # the prompt reaches Whisper as prompt_ids: the decoder reads it first, so (random weights) the text changes
    prompted = [client.audio.transcriptions.create(model="tiny-whisper", file=speech, prompt=prompt).text
                for prompt in ("the cat sat", "hello world", "a quick brown fox jumps")]  # fmt: skip
    assert any(text != plain.text for text in prompted), (plain.text, prompted)
