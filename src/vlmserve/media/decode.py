"""Decode: format sniffed from the bytes (never from a name or a mime type), limits checked from the header
before any pixel is decoded, JPEG decoded in the DCT domain at the smallest scale that still covers the target.

Runs in a worker thread (see media/images.py); every failure is an `InvalidMedia` (400) or `PayloadTooLarge`
(413), never a bare Pillow exception.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError, features

from vlmserve.errors import InvalidMedia, PayloadTooLarge

try:  # HEIC (iPhone photos) through libheif, bundled in pillow-heif's wheels
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency; a trimmed install refuses HEIC clearly
    HEIF = False

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF" + (", AVIF" if features.check("avif") else "")
SUPPORTED += ", HEIC" if HEIF else ""
_ORIENTATION_TAG = 0x0112
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")


def sniff(data: bytes) -> str | None:
    """The Pillow format name the content starts like, or None."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis") and features.check("avif"):
        return "AVIF"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS and HEIF:
        return "HEIF"
    return None


def describe_unsupported(data: bytes) -> str:
    """A short, honest reason for content that is not a supported raster image."""
    head = data[:512].lstrip().lower()
    if head[4:8] == b"ftyp" or data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIC/HEIF images are not supported by this server; send JPEG or PNG"
        if brand in (b"avif", b"avis"):
            return "AVIF images are not supported by this server's Pillow build; send JPEG or PNG"
        return "this looks like a video or ISO media file, not an image"
    if head.startswith(b"<svg") or (head.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in head):
        return "SVG (vector) images are not supported; send a raster image (PNG, JPEG)"
    if head.startswith((b"<!doctype html", b"<html")):
        return "this is an HTML page, not an image"
    if head.startswith(b"%pdf"):
        return "PDF documents are not supported; send each page as an image"
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return f"not a supported image ({SUPPORTED})"
    return f"this is text, not a supported image ({SUPPORTED})"


@dataclass(frozen=True, slots=True)
class Decoded:
    """A loaded image (in its stored orientation) and the EXIF orientation still to apply (1 = none)."""

    image: Image.Image
    format: str
    orientation: int


def open_checked(data: bytes, *, max_bytes: int, max_pixels: int, field: str) -> Image.Image:
    """Open (header only) after the byte, format and pixel checks; the returned image is not decoded yet."""
    if not data:
        raise InvalidMedia(f"{field}: empty image", param=field)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{field}: image is {len(data)} bytes, limit is {max_bytes}", param=field)
    fmt = sniff(data)
    if fmt is None:
        raise InvalidMedia(f"{field}: {describe_unsupported(data)}", param=field)
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(
            f"{field}: image has too many pixels, limit is {max_pixels} pixels ({exc})", param=field
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidMedia(f"{field}: the {fmt} header is corrupt or unsupported", param=field) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidMedia(f"{field}: image has no pixels ({width}x{height})", param=field)
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{field}: image is {width}x{height} pixels, limit is {max_pixels} pixels", param=field)
    return image


def decode(image: Image.Image, target: tuple[int, int], *, field: str) -> Decoded:
    """Load the pixels; a JPEG bigger than `target` is decoded at a reduced DCT scale (1/2, 1/4, 1/8) that
    still covers `target`, which skips most of the decoding work."""
    fmt = image.format or "?"
    try:
        orientation = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        orientation = 1
    try:
        if fmt == "JPEG" and (target[0] < image.width or target[1] < image.height):
            image.draft("RGB", target)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{field}: image has too many pixels ({exc})", param=field) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise InvalidMedia(f"{field}: {fmt} image data is truncated or corrupt", param=field) from exc
    return Decoded(image=image, format=fmt, orientation=orientation if 1 <= orientation <= 8 else 1)
