"""Every pixel mode Pillow has, in every format that can store it, becomes the right RGB (or a clean 400).

A float TIFF was a 500 on every image surface (to_rgb ran a comparison on Pillow's point-transform object);
big-endian 16-bit and premultiplied modes failed the same way. The gray level 100 must come out as 100."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from PIL import Image

from vlmserve.errors import InvalidMedia
from vlmserve.media.images import ImageLimits, prepare_image
from vlmserve.media.transform import to_rgb

GRAY = 100
_BASE = Image.new("L", (64, 48), GRAY)
MAKERS: dict[str, Callable[[], Image.Image]] = {
    "1": lambda: _BASE.convert("1"),
    "L": lambda: _BASE,
    "LA": lambda: _BASE.convert("LA"),
    "La": lambda: _BASE.convert("LA").convert("La"),
    "P": lambda: _BASE.convert("P"),
    "PA": lambda: _BASE.convert("RGBA").convert("PA"),
    "I": lambda: _BASE.convert("I").point(lambda v: v * 257),  # a 16-bit range in 32 bits
    "I;16": lambda: _BASE.convert("I").point(lambda v: v * 257).convert("I;16"),
    "I;16B": lambda: _BASE.convert("I").point(lambda v: v * 257).convert("I;16B"),
    "I;16L": lambda: _BASE.convert("I").point(lambda v: v * 257).convert("I;16L"),
    "F 0..1": lambda: _BASE.convert("F").point(lambda v: v * (1 / 255)),
    "F 0..255": lambda: _BASE.convert("F"),
    "RGB": lambda: _BASE.convert("RGB"),
    "RGBA": lambda: _BASE.convert("RGBA"),
    "RGBa": lambda: _BASE.convert("RGBA").convert("RGBa"),
    "RGBX": lambda: _BASE.convert("RGBX"),
    "CMYK": lambda: _BASE.convert("RGB").convert("CMYK"),
    "YCbCr": lambda: _BASE.convert("RGB").convert("YCbCr"),
    "LAB": lambda: _BASE.convert("RGB").convert("LAB"),
    "HSV": lambda: _BASE.convert("RGB").convert("HSV"),
}
FORMATS = ("PNG", "TIFF", "JPEG", "WEBP", "BMP", "GIF")


def _wide(mode: str) -> bool:
    return mode in ("I", "F") or mode.startswith("I;16")


def _combos() -> Iterator[tuple[str, str, bytes, bool]]:
    """(mode, format, bytes, whether the file holds gray 100): Pillow's encoders clip 16/32-bit pixels they
    cannot store (I into WebP is white), so those files carry another value."""
    for name, make in MAKERS.items():
        for fmt in FORMATS:
            out = io.BytesIO()
            image = make()
            try:
                image.save(out, format=fmt)
            except (OSError, KeyError, ValueError):
                continue  # this format cannot store this mode: nothing a client could send
            stored = Image.open(io.BytesIO(out.getvalue())).mode
            yield name, fmt, out.getvalue(), name != "1" and (_wide(stored) or not _wide(image.mode))


COMBOS = list(_combos())


@pytest.mark.parametrize("name", list(MAKERS))
def test_to_rgb_keeps_the_gray_level(name: str) -> None:
    rgb = to_rgb(MAKERS[name]())
    assert rgb.mode == "RGB"
    if name != "1":  # 1-bit: 100 thresholds (dithered) to black or white
        assert rgb.getpixel((5, 5)) == pytest.approx((GRAY, GRAY, GRAY), abs=3), name


@pytest.mark.parametrize(("name", "fmt", "data", "gray"), COMBOS, ids=[f"{n}-{f}" for n, f, *_ in COMBOS])
def test_every_mode_in_every_format_is_rgb_or_400(name: str, fmt: str, data: bytes, gray: bool) -> None:
    try:
        part = prepare_image(data, ImageLimits())
    except InvalidMedia:
        return
    image = Image.open(io.BytesIO(part.data))
    assert image.mode == "RGB" and image.size == (64, 48)
    if gray:
        assert image.getpixel((5, 5)) == pytest.approx((GRAY, GRAY, GRAY), abs=8), (name, fmt)


def test_float_and_int_images_are_stretched_by_their_range() -> None:
    ramp = Image.new("F", (3, 1))
    for x, value in enumerate((-1000.0, 0.0, 1000.0)):
        ramp.putpixel((x, 0), value)
    assert [to_rgb(ramp).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (127, 127, 127), (255, 255, 255)]
    for odd in (float("nan"), float("inf"), -5.0, 1e30):
        assert to_rgb(Image.new("F", (2, 2), odd)).mode == "RGB"
    wide = Image.new("I", (2, 1))
    wide.putpixel((0, 0), -(2**31))
    wide.putpixel((1, 0), 2**31 - 1)
    assert [to_rgb(wide).getpixel((x, 0)) for x in range(2)] == [(0, 0, 0), (255, 255, 255)]


def test_multi_frame_tiff_reads_its_first_frame() -> None:
    out = io.BytesIO()
    frames = [Image.new("F", (40, 30), 0.5), Image.new("RGB", (40, 30), (255, 0, 0))]
    frames[0].save(out, format="TIFF", save_all=True, append_images=frames[1:])
    image = Image.open(io.BytesIO(prepare_image(out.getvalue(), ImageLimits()).data))
    assert image.getpixel((5, 5)) == pytest.approx((127, 127, 127), abs=3)
