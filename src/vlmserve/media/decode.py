"""Decode: format sniffed from the bytes (never from a name or a mime type), limits checked from the header
before any pixel is decoded, JPEG decoded in the DCT domain at the smallest scale that still covers the target.

Limits from the header: pixels (decompression bombs), aspect ratio (per model: thin strips make engines that
scale the short side up allocate without bound) and decoded memory: width x height x the bytes per pixel Pillow
stores for the decoded mode, plus what mode conversion and resizing allocate (`decoded_cost`; a JPEG counts at
its draft size). A 380 KB 7000x7000 RGBA PNG is 49 MP but costs ~0.5 GB; the pixel limit alone let it through.

Runs in a worker thread (see media/images.py); every failure is an `InvalidMedia` (400) or `PayloadTooLarge`
(413), never a bare Pillow exception.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError, features

from vlmserve.errors import InvalidMedia, PayloadTooLarge
from vlmserve.media.transform import rgb_bytes_per_pixel

try:  # HEIC (iPhone photos) through libheif, bundled in pillow-heif's wheels
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF = True
except ImportError:  # pragma: no cover - pillow-heif is a dependency; a trimmed install refuses HEIC clearly
    HEIF = False

SUPPORTED = "JPEG, PNG, WebP, GIF, BMP, TIFF" + (", AVIF" if features.check("avif") else "")
SUPPORTED += ", HEIC" if HEIF else ""
_ORIENTATION_TAG = 0x0112
# bytes per pixel of the buffers a codec decodes into before Pillow copies the pixels out (measured: libwebp's
# animation decoder keeps an RGBA canvas and frame; libtiff's RGBA path for YCbCr, old JPEG and odd bit depths)
_CODEC_BUFFER = {"WEBP": 12, "TIFF": 4, "AVIF": 8, "HEIF": 8}
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


def open_checked(
    data: bytes, *, max_bytes: int, max_pixels: int, field: str, max_aspect_ratio: float | None = None
) -> Image.Image:
    """Open (header only) after the byte, format, pixel and aspect-ratio checks; the image is not decoded yet."""
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
    ratio = max(width, height) / min(width, height)
    if max_aspect_ratio is not None and ratio > max_aspect_ratio:
        raise InvalidMedia(
            f"{field}: image is {width}x{height}, an aspect ratio of {_ratio(ratio)}:1; this model takes at most "
            f"{max_aspect_ratio:g}:1 (max_aspect_ratio)",
            param=field,
            code="image_aspect_ratio",
        )
    return image


def _ratio(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def use_draft(image: Image.Image, target: tuple[int, int]) -> None:
    """Have a JPEG bigger than `target` decode at a reduced DCT scale (1/2, 1/4, 1/8) that still covers it,
    which skips most of the decoding work and memory; the image's size and mode become the draft's."""
    if image.format == "JPEG" and (target[0] < image.width or target[1] < image.height):
        image.draft("RGB", target)


def stored_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow keeps per pixel of `mode`: 1 for 1, L and P, 2 for the 16-bit modes, 4 for all others."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def decoded_cost(image: Image.Image, target: tuple[int, int]) -> int:
    """Bytes that decoding `image` (an opened, not loaded, header; after `use_draft`) and making it the RGB
    `target` allocate at most: the decoded pixels, the mode conversion's copies, box reduction and the result."""
    pixels = image.width * image.height
    per_pixel = stored_bytes_per_pixel(image.mode) + rgb_bytes_per_pixel(image.mode)
    per_pixel += _CODEC_BUFFER.get(image.format or "", 0)
    reduced = pixels if target != image.size else 0  # box reduction's intermediate: at most a quarter, 4 bytes each
    return pixels * per_pixel + reduced + 2 * 4 * target[0] * target[1]  # resized and oriented results


def decode(image: Image.Image, *, field: str) -> Decoded:
    """Load the pixels (at the draft scale when `use_draft` set one); EXIF orientation read, not applied."""
    fmt = image.format or "?"
    try:
        orientation = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a broken EXIF block must not fail an otherwise good image
        orientation = 1
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLarge(f"{field}: image has too many pixels ({exc})", param=field) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise InvalidMedia(f"{field}: {fmt} image data is truncated or corrupt", param=field) from exc
    return Decoded(image=image, format=fmt, orientation=orientation if 1 <= orientation <= 8 else 1)
