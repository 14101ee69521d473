"""Video intake: client bytes (mp4, avi, webm, ... whatever OpenCV's bundled FFmpeg reads) -> N sampled frames.

OpenCV reads from a file path, so the bytes go to a temporary file that is removed right after. The byte size
is checked first, then the duration from the container (frame count / fps) before any frame is decoded.
Frames are picked evenly over the whole video (the middle of N equal slices) and come back as PNG bytes;
the media pipeline then prepares them like any image, so every vision model can take a video.
Runs in a worker thread (`sample_frames_async`); failures are `InvalidMedia` (400) or `PayloadTooLarge` (413).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from vlmserve.errors import InvalidMedia, PayloadTooLarge


@dataclass(frozen=True, slots=True)
class VideoLimits:
    max_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 600.0
    frames: int = 8  # frames sampled from each video


def _cv2() -> Any:
    import cv2

    return cv2


def frame_indices(total: int, count: int) -> list[int]:
    """`count` frame numbers spread evenly over `total` frames (fewer when the video is shorter)."""
    if total <= 0 or count <= 0:
        return []
    if total <= count:
        return list(range(total))
    return sorted({min(total - 1, int((i + 0.5) * total / count)) for i in range(count)})


def _read_frames(capture: Any, cv2: Any, limits: VideoLimits, field: str) -> list[bytes]:
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    if total > 0 and fps > 0 and total / fps > limits.max_seconds:
        raise PayloadTooLarge(
            f"{field}: video is {total / fps:.1f} s long, limit is {limits.max_seconds:g} s", param=field
        )
    frames: list[bytes] = []
    for index in frame_indices(total, limits.frames):
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok or frame is None:
            continue
        encoded_ok, png = cv2.imencode(".png", frame)
        if encoded_ok:
            frames.append(png.tobytes())
    return frames


def sample_frames(data: bytes, limits: VideoLimits, *, field: str = "video_url") -> list[bytes]:
    """Up to `limits.frames` evenly spaced frames of the video, PNG-encoded."""
    if not data:
        raise InvalidMedia(f"{field}: empty video", param=field, code="invalid_video")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{field}: video is {len(data)} bytes, limit is {limits.max_bytes}", param=field)
    cv2 = _cv2()
    fd, path = tempfile.mkstemp(prefix="vlmserve-video-")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise InvalidMedia(f"{field}: not a video this server can read", param=field, code="invalid_video")
            frames = _read_frames(capture, cv2, limits, field)
        finally:
            capture.release()
    finally:
        os.unlink(path)
    if not frames:
        raise InvalidMedia(f"{field}: no frame of the video could be decoded", param=field, code="invalid_video")
    return frames


async def sample_frames_async(data: bytes, limits: VideoLimits, *, field: str = "video_url") -> list[bytes]:
    return await asyncio.to_thread(sample_frames, data, limits, field=field)
