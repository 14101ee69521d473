"""Property: whatever image bytes a client sends (any size, aspect ratio, mode, format; truncated, bit-flipped,
headers that lie about their size), every image surface answers 200 or a 4xx in its own format, never a 5xx,
never a hang, and the server with its runners gives its memory back afterwards.

Run with `pytest -s` to see the figures (cases, status counts, RSS start/peak/end).
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import Counter

import httpx
import pytest
from conftest import rss_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_surfaces import SURFACES, answer_of, ask, encode, error_of, own_rss, settle, text_picture
from PIL import Image, ImageDraw
from server_process import ServerProcess

MB = 2**20
EXAMPLES = 200
MODES = ("1", "L", "LA", "P", "I", "I;16", "F", "RGB", "RGBA", "CMYK", "YCbCr", "LAB")
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
CLIENT_TIMEOUT = 60.0  # a request that takes longer is a hang

sides = st.one_of(st.integers(1, 8), st.integers(9, 700), st.integers(701, 2500))
ordinary = st.tuples(st.integers(16, 1600), st.integers(16, 1600))
mixed = st.tuples(sides, sides).filter(lambda s: s[0] * s[1] <= 4_000_000)
sizes = st.one_of(
    ordinary,
    ordinary,
    mixed,
    st.tuples(st.just(1), st.integers(1, 100_000)),  # 1xN
    st.tuples(st.integers(1, 100_000), st.just(1)),  # Nx1
    st.tuples(st.integers(2, 16), st.integers(500, 4000)),  # thin strips either way
    st.tuples(st.integers(500, 4000), st.integers(2, 16)),
)


def _picture(size: tuple[int, int], mode: str, shade: int) -> Image.Image:
    image = Image.new("RGB", size, (shade, 255 - shade, (shade * 7) % 256))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((width // 4, height // 4, width // 2, height // 2), fill=(0, 0, 0))
    if width >= 60 and height >= 20:
        draw.text((4, 2), "42 OK", fill=(20, 20, 20))
    if mode in ("I", "I;16", "F"):
        gray = image.convert("L")
        return gray.convert("F").point(lambda v: v * (1 / 255)) if mode == "F" else gray.convert("I").convert(mode)
    return image.convert(mode)


def _save(image: Image.Image, fmt: str) -> bytes:
    """`image` in `fmt`, else converted to RGB, else as PNG (formats refuse some modes and sizes)."""
    for candidate, kind in ((image, fmt), (image.convert("RGB"), fmt), (image.convert("RGB"), "PNG")):
        try:
            return encode(candidate, kind)
        except (OSError, ValueError, KeyError, OverflowError, struct.error):
            continue
    raise AssertionError("PNG takes any RGB image")


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR (CRC fixed) says `width` x `height`."""
    data = bytearray(encode(Image.new("RGB", (8, 8), "white"), "PNG"))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


@st.composite
def hostile_images(draw: st.DrawFn) -> tuple[str, bytes]:
    """(label, bytes): a real image of random size, mode and format, then maybe damaged, or a lying header."""
    if draw(st.integers(0, 9)) == 0:
        width = draw(st.sampled_from([1, 8, 60_000, 100_000, 2**31 - 1]))
        height = draw(st.sampled_from([1, 8, 60_000, 100_000, 2**31 - 1]))
        return f"PNG header {width}x{height}", _png_claiming(width, height)
    size = draw(sizes)
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    data = _save(_picture(size, mode, draw(st.integers(0, 255))), fmt)
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif damage == "flip":
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            at = draw(st.integers(0, len(flipped) - 1))
            flipped[at] ^= 1 << draw(st.integers(0, 7))
        data = bytes(flipped)
    return f"{fmt} {mode} {size[0]}x{size[1]} {damage}", data


class RssPoller:
    """Samples the RSS of the server and its runners every 50 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _warm(url: str) -> None:
    """Load the OCR runner and take it (and the server) to their working size: the largest shapes the runner is
    ever given (it bounds the detector at 2944x736) and a round of ordinary ones on every surface, so what the
    run leaves behind is growth, not warm-up."""
    shapes = [(1024, 1024), (1024, 256), (1024, 22), (22, 1024), (300, 200), (640, 480), (90, 700), (1500, 40)]
    for index, size in enumerate(shapes):
        image = text_picture("42 " * 12, size, font_size=max(8, min(size) // 3))
        response = ask(url, SURFACES[index % len(SURFACES)], encode(image, "PNG"))
        assert response.status_code == 200, response.text


def test_any_image_bytes_get_200_or_a_4xx_and_memory_comes_back(capped_server: ServerProcess) -> None:
    url, pid = capped_server.url, capped_server.proc.pid
    _warm(url)
    counts: Counter[str] = Counter()
    start, started, server_start = rss_bytes(pid), time.monotonic(), own_rss(pid)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(case=hostile_images(), surface=st.sampled_from(SURFACES))
    def answered(case: tuple[str, bytes], surface: str) -> None:
        label, data = case
        try:
            response = ask(url, surface, data, timeout=CLIENT_TIMEOUT)
        except httpx.TimeoutException:
            pytest.fail(f"{surface}: {label}: no answer in {CLIENT_TIMEOUT:g} s")
        counts[f"{surface} {response.status_code}"] += 1
        assert response.status_code < 500, f"{surface}: {label}: {response.status_code} {response.text[:300]}"
        if response.status_code == 200:
            answer_of(surface, response)
        else:
            assert error_of(surface, response), (surface, label, response.text)

    with RssPoller(pid) as poller:
        answered()
    end = settle(lambda: rss_bytes(pid), start + 10 * MB)  # give it time to come all the way back
    print(
        f"\nmedia property run: {sum(counts.values())} cases in {time.monotonic() - started:.0f} s, "
        f"statuses {dict(sorted(counts.items()))}; server + runners RSS start {start / MB:.0f} MB, "
        f"peak {poller.peak / MB:.0f} MB, end {end / MB:.0f} MB"
        f" (server alone {server_start / MB:.0f} -> {own_rss(pid) / MB:.0f} MB)"
    )
    assert end - start <= 50 * MB, f"RSS grew by {(end - start) / MB:.0f} MB over the run and stayed"
