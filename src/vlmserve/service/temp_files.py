"""The server's own temporary files, for `GET /admin/temp_status` and `POST /admin/cleanup_temp`:

- `partial_pulls`: downloads cut short (`<data_dir>/models/*/.cache/huggingface/download/**/*.incomplete`);
  a later pull of the same model resumes from them, so cleaning them costs that head start;
- `partial_blobs`: blob uploads that never finished (`<data_dir>/blobs/*.partial-*`);
- `partial_files`: batch input files whose write was interrupted (`<data_dir>/files/*.part`);
- `video_frames`: videos written for frame sampling (`<tmp>/vlmserve-video-*`), normally deleted at once.

A file is in use (and left alone) while its pull or upload is running; files that nothing tracks count as in use
for `IN_USE_SECONDS` after their last change. Uploads of multipart bodies are spooled by the web framework into
files deleted on creation: they never show up here.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

IN_USE_SECONDS = 600.0
CATEGORIES = ("partial_pulls", "partial_blobs", "partial_files", "video_frames")


@dataclass(frozen=True)
class TempFile:
    category: str
    path: Path
    size: int
    age_seconds: float
    in_use: bool


def _stat(category: str, path: Path, now: float, tracked: bool) -> TempFile | None:
    try:
        info = path.stat()
    except OSError:
        return None  # gone meanwhile
    age = max(0.0, now - info.st_mtime)
    return TempFile(category, path, info.st_size, age, tracked or age < IN_USE_SECONDS)


def scan(data_dir: Path, pulling: Iterable[Path], uploading: Iterable[Path]) -> list[TempFile]:
    """Every temporary file of the server now (`pulling`: model folders being downloaded; `uploading`: partial
    blob files being written)."""
    now = time.time()
    busy_folders = [p.resolve() for p in pulling]
    busy_uploads = {p.resolve() for p in uploading}
    found: list[TempFile | None] = []
    for path in (data_dir / "models").glob("*/.cache/huggingface/download/**/*.incomplete"):
        found.append(_stat("partial_pulls", path, now, any(path.resolve().is_relative_to(f) for f in busy_folders)))
    for path in (data_dir / "blobs").glob("*.partial-*"):
        found.append(_stat("partial_blobs", path, now, path.resolve() in busy_uploads))
    for path in (data_dir / "files").glob("*.part"):
        found.append(_stat("partial_files", path, now, False))
    for path in Path(tempfile.gettempdir()).glob("vlmserve-video-*"):
        found.append(_stat("video_frames", path, now, False))
    return [f for f in found if f is not None]


def summary(files: list[TempFile]) -> dict[str, dict[str, int]]:
    """Per category: files and bytes, and how many of them are in use."""
    out = {name: {"files": 0, "bytes": 0, "in_use": 0} for name in CATEGORIES}
    for f in files:
        entry = out[f.category]
        entry["files"] += 1
        entry["bytes"] += f.size
        entry["in_use"] += int(f.in_use)
    return out


def remove(files: list[TempFile]) -> list[TempFile]:
    """Delete the files not in use; returns those deleted."""
    removed = []
    for f in files:
        if f.in_use:
            continue
        with contextlib.suppress(OSError):
            f.path.unlink()
            removed.append(f)
    return removed
