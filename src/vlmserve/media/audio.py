"""Audio intake: client bytes (wav, mp3, flac) -> checked 16 kHz mono audio, re-encoded as 16-bit PCM WAV.

The format is sniffed from the bytes (the client's `format` is only a hint). WAV is read with the stdlib `wave`
module and numpy; FLAC, MP3 (and float WAV) through `soundfile` (libsndfile is bundled in its manylinux
wheels) when it is installed, else they are refused with a 400 that says so. Byte size is checked first, then
the duration from the header, before any sample is decoded. Runs in a worker thread (`prepare_audio_async`);
every failure is an `InvalidMedia` (400) or `PayloadTooLarge` (413). Resampling is linear interpolation:
good enough for speech models, which low-pass their input into mel bands anyway.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vlmserve.domain.types import AudioPart
from vlmserve.errors import InvalidMedia, PayloadTooLarge

SAMPLE_RATE = 16_000
Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AudioLimits:
    max_bytes: int = 25 * 1024 * 1024  # OpenAI's transcription limit
    max_seconds: float = 600.0


def _bad(message: str, field: str) -> InvalidMedia:
    return InvalidMedia(message, param=field, code="invalid_audio")


def _soundfile() -> Any | None:
    try:
        import soundfile
    except (ImportError, OSError):  # not installed, or libsndfile missing
        return None
    return soundfile


def sniff_audio(data: bytes) -> str | None:
    head = data[:16]
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def supported_formats() -> str:
    return "wav, mp3, flac" if _soundfile() is not None else "wav (16-bit PCM; mp3/flac need soundfile)"


def _check_duration(seconds: float, limits: AudioLimits, field: str) -> None:
    if seconds > limits.max_seconds:
        raise PayloadTooLarge(f"{field}: audio is {seconds:.1f} s long, limit is {limits.max_seconds:g} s", param=field)


def _read_wav_stdlib(data: bytes, limits: AudioLimits, field: str) -> tuple[Samples, int] | None:
    """PCM WAV via `wave`; None for WAV flavours it cannot read (float, extensible), left to soundfile."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate, channels, width, frames = (
                wav.getframerate(),
                wav.getnchannels(),
                wav.getsampwidth(),
                wav.getnframes(),
            )
            if rate <= 0 or channels <= 0:
                raise _bad(f"{field}: WAV header has no sample rate or channels", field)
            _check_duration(frames / rate, limits, field)
            raw = wav.readframes(frames)
    except wave.Error:
        return None
    except (EOFError, ValueError, OSError) as exc:
        raise _bad(f"{field}: WAV data is truncated or corrupt", field) from exc
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        triples = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)) << 8 >> 8
        samples = ints.astype(np.float32) / 8388608.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise _bad(f"{field}: WAV sample width {width} is not supported", field)
    usable = len(samples) // channels * channels
    return samples[:usable].reshape(-1, channels).mean(axis=1).astype(np.float32), rate


def _read_soundfile(data: bytes, fmt: str, limits: AudioLimits, field: str) -> tuple[Samples, int]:
    sf = _soundfile()
    if sf is None:
        raise _bad(f"{field}: {fmt} audio needs the soundfile package on this server; send 16-bit PCM WAV", field)
    try:
        info = sf.info(io.BytesIO(data))
        if info.samplerate <= 0:
            raise _bad(f"{field}: {fmt} header has no sample rate", field)
        if info.frames > 0:
            _check_duration(info.frames / info.samplerate, limits, field)
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, OSError, EOFError) as exc:  # sf.LibsndfileError is a RuntimeError
        raise _bad(f"{field}: {fmt} audio data is corrupt or unsupported", field) from exc
    return np.asarray(samples, dtype=np.float32).mean(axis=1).astype(np.float32), int(rate)


def resample(samples: Samples, rate: int, target: int = SAMPLE_RATE) -> Samples:
    if rate == target or len(samples) == 0:
        return samples
    count = max(1, round(len(samples) * target / rate))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)


def decode_audio(data: bytes, limits: AudioLimits, *, field: str = "input_audio") -> Samples:
    """16 kHz mono float32 samples in [-1, 1], after the byte, format and duration checks."""
    if not data:
        raise _bad(f"{field}: empty audio", field)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{field}: audio is {len(data)} bytes, limit is {limits.max_bytes}", param=field)
    fmt = sniff_audio(data)
    if fmt is None:
        raise _bad(f"{field}: not a supported audio file ({supported_formats()})", field)
    read = _read_wav_stdlib(data, limits, field) if fmt == "wav" else None
    samples, rate = read if read is not None else _read_soundfile(data, fmt, limits, field)
    if len(samples) == 0:
        raise _bad(f"{field}: audio has no samples", field)
    _check_duration(len(samples) / rate, limits, field)  # headers may lie (mp3 without frame count)
    return np.clip(resample(samples, rate), -1.0, 1.0)


def encode_wav(samples: Samples, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV: what engines receive (runners decode it with `decode_audio` again)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
    return buffer.getvalue()


def prepare_audio(data: bytes, limits: AudioLimits, *, field: str = "input_audio") -> AudioPart:
    samples = decode_audio(data, limits, field=field)
    return AudioPart(data=encode_wav(samples), duration=len(samples) / SAMPLE_RATE)


async def prepare_audio_async(data: bytes, limits: AudioLimits, *, field: str = "input_audio") -> AudioPart:
    return await asyncio.to_thread(prepare_audio, data, limits, field=field)
