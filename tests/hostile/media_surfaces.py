"""The three image surfaces (OpenAI chat, Ollama generate, /process upload) as one call, and hostile images.

`ask` sends image bytes the way a client of each surface would; `error_of` reads the error message in that
surface's own format. `peak_rss` measures a process tree's high-water mark over a block (VmHWM, reset first).
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw, ImageFont

SURFACES = ("openai", "ollama", "process")
CLIENT_TIMEOUT = 120.0


def ask(
    url: str, surface: str, data: bytes, model: str = "rapidocr", timeout: float = CLIENT_TIMEOUT
) -> httpx.Response:
    """One image and a short prompt to `model` on `surface`; never streamed."""
    b64 = base64.b64encode(data).decode()
    if surface == "openai":
        content: list[dict[str, Any]] = [
            {"type": "text", "text": "read"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
        ]
        body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": content}]}
        return httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)
    if surface == "ollama":
        body = {"model": model, "prompt": "read", "stream": False, "images": [b64], "options": {"num_predict": 64}}
        return httpx.post(url + "/api/generate", json=body, timeout=timeout)
    files = {"image": ("upload.bin", data, "application/octet-stream")}
    return httpx.post(url + "/process", files=files, data={"model": model, "max_tokens": "64"}, timeout=timeout)


def answer_of(surface: str, response: httpx.Response) -> str:
    body = response.json()
    if surface == "openai":
        return str(body["choices"][0]["message"]["content"])
    return str(body["response"])


def error_of(surface: str, response: httpx.Response) -> str:
    """The error message, checked to be in the surface's own format."""
    body = response.json()
    if surface == "openai":
        assert set(body["error"]) >= {"message", "type", "code"}, body
        return str(body["error"]["message"])
    assert isinstance(body["error"], str), body
    return body["error"]


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def text_picture(text: str, size: tuple[int, int], font_size: int = 40) -> Image.Image:
    """Black text on white, drawn big enough for the OCR model to read."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text(
        (12, max(0, size[1] // 2 - font_size // 2 - 4)), text, fill=0, font=ImageFont.load_default(size=font_size)
    )
    return image


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            pending.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except OSError:
            continue
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Peak:
    bytes = 0  # the tree's: the process and its descendants, each at its own peak
    own = 0  # the process's own


@contextmanager
def peak_rss(pid: int) -> Iterator[Peak]:
    """The summed resident high-water mark of `pid` and its descendants over the block (an upper bound of the
    real peak: each process's own peak, wherever in the block it happened)."""
    pids = _descendants(pid)
    for each in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{each}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    peak = Peak()
    try:
        yield peak
    finally:
        peak.bytes = sum(_status_kb(each, "VmHWM:") for each in _descendants(pid)) * 1024
        peak.own = _status_kb(pid, "VmHWM:") * 1024


def settle(measure: Callable[[], int], target: int, timeout: float = 15.0) -> int:
    """Poll `measure()` until it is at or below `target` or `timeout` passes; the last reading."""
    deadline = time.monotonic() + timeout
    value = measure()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.2)
        value = measure()
    return value


def own_rss(pid: int) -> int:
    return _status_kb(pid, "VmRSS:") * 1024
