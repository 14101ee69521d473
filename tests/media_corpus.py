"""A corpus of hostile and awkward images, generated on the fly (nothing binary is checked in)."""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like content: smooth shading plus mid-frequency texture and a little sensor noise."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    base = np.stack(
        [128 + 100 * np.sin(6 * x + 3 * y), 128 + 100 * np.cos(5 * y - 2 * x), 128 + 80 * np.sin(9 * x * y)], -1
    )
    coarse = rng.normal(128, 30, (max(1, height // 24), max(1, width // 24), 3)).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    pixels = base + (texture - 128) + rng.normal(0, 1.5, (height, width, 3)).astype(np.float32)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@functools.cache
def photo_12mp_jpeg() -> bytes:
    return encode(photo(4000, 3000), "JPEG", quality=90)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90° clockwise
    return encode(Image.new("RGB", (400, 200), (200, 30, 30)), "JPEG", exif=exif)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (300, 200), (0, 255, 255, 0)), "JPEG")  # cyan+yellow ink = green... ish


def png_16bit() -> bytes:
    return encode(Image.new("I;16", (300, 200), 40000), "PNG")


def palette_transparent_png() -> bytes:
    image = Image.new("P", (64, 64), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    for i in range(32):
        for j in range(64):
            image.putpixel((i, j), 1)
    return encode(image, "PNG", transparency=0)  # index 0 (red) transparent: right half shows white


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (80, 60), colour) for colour in ((0, 0, 255), (255, 0, 0), (0, 255, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((600, 600), 60).convert("RGB"), "JPEG")
    return data[: len(data) // 2]


def _png(width: int, height: int, idat: bytes, colour_type: int = 0) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_claiming_huge() -> bytes:
    """A PNG header claiming 100000 x 100000 pixels over a few bytes of data."""
    return _png(100_000, 100_000, zlib.compress(b"\x00\x00"))


@functools.cache
def png_zip_bomb(side: int = 16_000) -> bytes:
    """A real, valid PNG of side x side black pixels (256 MB decoded) that compresses to a few hundred KB."""
    compressor = zlib.compressobj(9)
    row = bytes(side + 1)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return _png(side, side, body)


TEXT_NAMED_JPG = b"this is a plain text file that someone named photo.jpg\n"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
