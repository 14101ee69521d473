"""Transforms on decoded images: the model's pixel budget, mode to RGB, reduce-then-filter resizing, EXIF
orientation, encoding. Pure Pillow, no I/O; called from the decode thread."""

from __future__ import annotations

import io
import math
from typing import Literal

from PIL import Image

ResizeFilter = Literal["bicubic", "lanczos", "hamming", "bilinear"]
FILTERS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
    "bilinear": Image.Resampling.BILINEAR,
}
# EXIF orientation -> the transposition that shows the image upright
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_CONVERTIBLE = frozenset({"1", "L", "CMYK", "YCbCr", "HSV", "RGBX", "LAB"})  # Pillow converts these itself


def fit_size(width: int, height: int, max_side: int, max_pixels: int | None = None) -> tuple[int, int]:
    """The largest size with the same aspect ratio within `max_side` and `max_pixels` (never upscaled)."""
    scale = min(1.0, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


# bytes per pixel that to_rgb allocates beyond its input (copies alive at once, peak of each chain)
_RGB_COST: dict[str, int] = {"RGB": 0, "RGBA": 5, "P": 9, "LA": 9, "PA": 13, "La": 13, "RGBa": 9, "I": 8, "F": 8}


def rgb_bytes_per_pixel(mode: str) -> int:
    """What to_rgb allocates per pixel of a `mode` image (an upper estimate, for the decode memory budget)."""
    if mode in _SIXTEEN_BIT:
        return 8
    return _RGB_COST.get(mode, 4)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode Pillow opens to 8-bit RGB: palette and alpha composited on white, 16-bit scaled down, 32-bit
    integer and float images mapped by their range. A mode with no sensible
    RGB is a ValueError (the caller's 400), never a TypeError from deep inside Pillow."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
    if image.mode in ("RGBa", "La", "PA"):  # premultiplied / palette alpha: back to plain alpha first
        image = image.convert({"La": "LA"}.get(image.mode, "RGBA"))
    if image.mode in ("RGBA", "LA"):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in _SIXTEEN_BIT:
        return image.convert("I").point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
    if mode in ("I", "F"):
        return _by_range(image).convert("RGB")
    if mode in _CONVERTIBLE:
        return image.convert("RGB")
    raise ValueError(f"image mode {mode} has no RGB conversion")


def _by_range(image: Image.Image) -> Image.Image:
    """32-bit integer or float pixels to L: kept when already 0..255, floats in 0..1 scaled by 255, 16-bit
    ranges divided by 256, anything else stretched from its minimum to its maximum (NaN and inf clipped)."""
    extrema = image.getextrema()
    low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]  # one band: two numbers
    if not (math.isfinite(low) and math.isfinite(high)):
        return image.convert("L")  # Pillow clips inf; NaN becomes 0
    if image.mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif low >= 0 and high <= 65535:
        scale, offset = 1 / 256, 0.0
    elif high > low:
        scale = 255.0 / (high - low)
        offset = -low * scale
    else:
        return image.convert("L")  # one value out of every range: Pillow clips it
    if image.mode == "I" and scale != 1.0:
        image = image.convert("F")  # integer point transforms round each step; float keeps the ramp
    if (scale, offset) != (1.0, 0.0):
        image = image.point(lambda v: v * scale + offset)
    return image.convert("L")


def resize(image: Image.Image, size: tuple[int, int], flt: ResizeFilter = "bicubic") -> Image.Image:
    """Shrink to `size`: cheap integer box reduction while the image is more than twice too large, then the
    chosen filter for the last step (Pillow's reducing_gap=2: quality stays close to a full-size filter)."""
    if image.size == size:
        return image
    return image.resize(size, FILTERS[flt], reducing_gap=2.0)


def orient(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def encode_jpeg(image: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_png(image: Image.Image) -> bytes:
    """Lossless (text and screenshots keep their edges); compress_level 1: most of the size win at a fraction of
    the CPU of the default 6."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()
