"""Audio decoding (wav via the stdlib, flac/mp3 via soundfile) and video frame sampling (OpenCV), with limits."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import AudioInput, AudioPart, ImagePart, Message, TextPart, VideoInput
from vlmserve.errors import BadRequest, InvalidMedia, PayloadTooLarge
from vlmserve.media.audio import SAMPLE_RATE, AudioLimits, decode_audio, prepare_audio, sniff_audio
from vlmserve.media.pipeline import MediaPipeline
from vlmserve.media.video import VideoLimits, frame_indices, sample_frames


def wav_bytes(seconds: float = 1.0, rate: int = 44_100, channels: int = 2, width: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    frames = np.repeat(tone[:, None], channels, axis=1)
    raw = (frames * 127 + 128).astype(np.uint8).tobytes() if width == 1 else (frames * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return out.getvalue()


def soundfile_bytes(fmt: str, seconds: float = 1.0, rate: int = 22_050) -> bytes:
    sf = pytest.importorskip("soundfile")
    t = np.arange(int(seconds * rate)) / rate
    out = io.BytesIO()
    sf.write(out, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return out.getvalue()


def video_bytes(tmp_path: Path, frames: int = 16, fps: float = 8.0) -> bytes:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 10 % 255, np.uint8))
    writer.release()
    return path.read_bytes()


@pytest.mark.parametrize(("channels", "width", "rate"), [(2, 2, 44_100), (1, 1, 8_000), (1, 2, 16_000)])
def test_wav_becomes_16k_mono(channels: int, width: int, rate: int) -> None:
    samples = decode_audio(wav_bytes(1.0, rate, channels, width), AudioLimits())
    assert samples.dtype == np.float32
    assert abs(len(samples) - SAMPLE_RATE) <= 1
    assert 0.4 < float(np.abs(samples).max()) <= 1.0


@pytest.mark.parametrize("fmt", ["FLAC", "MP3"])
def test_flac_and_mp3_through_soundfile(fmt: str) -> None:
    data = soundfile_bytes(fmt)
    assert sniff_audio(data) == fmt.lower()
    samples = decode_audio(data, AudioLimits())
    assert abs(len(samples) - SAMPLE_RATE) < SAMPLE_RATE * 0.1  # mp3 adds encoder padding


def test_prepared_audio_is_16k_pcm_wav() -> None:
    part = prepare_audio(wav_bytes(0.5), AudioLimits())
    assert part.duration == pytest.approx(0.5, abs=0.01)
    with wave.open(io.BytesIO(part.data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)


GARBAGE = [b"", b"hello, not audio", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk", b"fLaC" + bytes(64)]


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_audio_is_400(data: bytes) -> None:
    with pytest.raises(InvalidMedia):
        decode_audio(data, AudioLimits())


def test_audio_limits_are_413() -> None:
    with pytest.raises(PayloadTooLarge, match="limit is 1 s"):
        decode_audio(wav_bytes(2.0), AudioLimits(max_seconds=1))
    with pytest.raises(PayloadTooLarge, match="bytes"):
        decode_audio(wav_bytes(1.0), AudioLimits(max_bytes=1000))


def test_frame_indices_spread_evenly() -> None:
    assert frame_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert frame_indices(3, 8) == [0, 1, 2]
    assert frame_indices(0, 8) == []


def test_video_sampled_to_frames(tmp_path: Path) -> None:
    frames = sample_frames(video_bytes(tmp_path), VideoLimits(frames=4))
    assert len(frames) == 4
    assert all(f.startswith(b"\x89PNG") for f in frames)


def test_video_garbage_and_limits(tmp_path: Path) -> None:
    with pytest.raises(InvalidMedia):
        sample_frames(b"\x00\x01not a video" * 50, VideoLimits())
    data = video_bytes(tmp_path)  # 2 s
    with pytest.raises(PayloadTooLarge, match="limit is 1 s"):
        sample_frames(data, VideoLimits(max_seconds=1))
    with pytest.raises(PayloadTooLarge, match="bytes"):
        sample_frames(data, VideoLimits(max_bytes=100))


async def test_pipeline_expands_video_and_prepares_audio(tmp_path: Path) -> None:
    pipeline = MediaPipeline(video=VideoLimits(frames=3))
    spec = ModelSpec(name="m", engine="rapidocr")
    message = Message(
        role="user", parts=[TextPart("hi"), VideoInput(video_bytes(tmp_path)), AudioInput(wav_bytes(0.2))]
    )
    [prepared] = await pipeline.prepare_messages([message], spec)
    kinds = [type(p) for p in prepared.parts]
    assert kinds == [TextPart, ImagePart, ImagePart, ImagePart, AudioPart]


async def test_video_frames_count_against_the_model_limit(tmp_path: Path) -> None:
    pipeline = MediaPipeline(video=VideoLimits(frames=8))
    spec = ModelSpec(name="m", engine="rapidocr", max_images=4)
    with pytest.raises(BadRequest, match="video frames included"):
        await pipeline.prepare_messages([Message(role="user", parts=[VideoInput(b"x")])], spec)
