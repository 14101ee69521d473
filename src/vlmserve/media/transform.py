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
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def fit_size(width: int, height: int, max_side: int, max_pixels: int | None = None) -> tuple[int, int]:
    """The largest size with the same aspect ratio within `max_side` and `max_pixels` (never upscaled)."""
    scale = min(1.0, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to 8-bit RGB: palette and alpha composited on white, 16-bit scaled down, CMYK converted."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in _SIXTEEN_BIT:
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode == "F":
        return image.point(lambda v: v * 255 if 0 <= v <= 1 else v).convert("L").convert("RGB")
    return image.convert("RGB")


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
