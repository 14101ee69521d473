"""Image intake: source bytes (data URI or raw base64) -> checked, decoded, resized, model-ready ImagePart.

Decoding is CPU work and runs in a thread (`prepare_image_async`). Limits are checked before any pixel is
decoded: byte size first, then the header's dimensions (decompression bombs never allocate).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from vlmserve.domain.types import ImagePart
from vlmserve.errors import BadRequest, InvalidMedia, PayloadTooLarge

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 1024  # the model's budget: the longer side is reduced to this


def decode_base64(text: str, *, field: str = "image") -> bytes:
    """Strict base64 (standard or URL-safe, padding optional): garbage is a 400, not a crash."""
    cleaned = "".join(text.split())
    if not cleaned:
        raise InvalidMedia(f"{field}: empty image data", param=field)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(cleaned)
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMedia(f"{field}: invalid base64 image data", param=field) from exc


def bytes_from_url(url: str, *, field: str = "image_url") -> bytes:
    """Bytes of a data: URI. Remote http(s) fetching belongs to the fetch module (not enabled yet)."""
    match = _DATA_URI.match(url)
    if match:
        payload = url[match.end() :]
        if not match.group("b64"):
            raise InvalidMedia(f"{field}: only base64 data URIs are supported", param=field)
        return decode_base64(payload, field=field)
    if url.startswith(("http://", "https://")):
        raise BadRequest(
            f"{field}: fetching image URLs is not enabled on this server; send the image as a base64 data URI",
            param=field,
            code="image_url_fetch_disabled",
        )
    raise InvalidMedia(f"{field}: expected a data URI (data:image/...;base64,...)", param=field)


def prepare_image(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Validate, decode (JPEG via DCT draft mode when shrinking), orient, convert to RGB, resize, re-encode."""
    if not data:
        raise InvalidMedia(f"{field}: empty image", param=field)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"{field}: image is {len(data)} bytes, limit is {limits.max_bytes}", param=field)
    try:
        source = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{field}: image has too many pixels ({exc})", param=field) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidMedia(f"{field}: not a supported image (JPEG, PNG, WebP, GIF, BMP, TIFF)", param=field) from exc
    if source.format not in SUPPORTED_FORMATS:
        raise InvalidMedia(f"{field}: unsupported image format {source.format}", param=field)
    width, height = source.size
    if width <= 0 or height <= 0 or width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{field}: image is {width}x{height} pixels, limit is {limits.max_pixels} pixels", param=field
        )
    try:
        if source.format == "JPEG" and max(width, height) > limits.max_side:
            scale = limits.max_side / max(width, height)
            source.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        source.load()
        img = _to_rgb(ImageOps.exif_transpose(source) or source)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidMedia(f"{field}: image data is truncated or corrupt", param=field) from exc
    if max(img.size) > limits.max_side:
        img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=92)
    return ImagePart(data=out.getvalue(), mime="image/jpeg", width=img.width, height=img.height)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


async def prepare_image_async(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    return await asyncio.to_thread(prepare_image, data, limits, field=field)


def image_to_data_uri(image: ImagePart) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
