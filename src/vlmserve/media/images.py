"""Image intake: source bytes (data URI or raw base64) -> checked, decoded, resized, model-ready ImagePart.

The stages live in their own modules: fetch.py (URLs), decode.py (sniffing, header limits, JPEG draft
decoding), transform.py (budget, RGB, resize, orientation, encoding). This module strings them together;
`prepare_image` is CPU work and runs in a thread (`prepare_image_async`). Limits are checked before any pixel
is decoded: byte size first, then the header's dimensions (decompression bombs never allocate).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass

from PIL import Image

from vlmserve.domain.types import ImagePart
from vlmserve.errors import BadRequest, InvalidMedia
from vlmserve.media.decode import decode, open_checked
from vlmserve.media.transform import ResizeFilter, encode_jpeg, fit_size, orient, resize, to_rgb

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # decode limit (bombs), checked from the header
    max_side: int = 1024  # the model's budget: the longer side is reduced to this
    budget_pixels: int | None = None  # and, when set, the image to at most this many pixels
    resize_filter: ResizeFilter = "bicubic"
    jpeg_quality: int = 90


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


def is_data_uri(url: str) -> bool:
    return _DATA_URI.match(url) is not None


def bytes_from_url(url: str, *, field: str = "image_url") -> bytes:
    """Bytes of a data: URI (any mime: the content is sniffed later). Remote URLs are fetched by the service
    (media/fetch.py), never here: this function does no I/O."""
    match = _DATA_URI.match(url)
    if match:
        payload = url[match.end() :]
        if not match.group("b64"):
            raise InvalidMedia(f"{field}: only base64 data URIs are supported", param=field)
        return decode_base64(payload, field=field)
    if url.startswith(("http://", "https://")):
        raise BadRequest(
            f"{field}: fetching image URLs is not enabled here; send the image as a base64 data URI",
            param=field,
            code="image_url_fetch_disabled",
        )
    raise InvalidMedia(f"{field}: expected a data URI (data:image/...;base64,...)", param=field)


def prepare_image(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Validate, decode (JPEG via DCT draft mode when shrinking), convert to RGB, resize, orient, re-encode
    (engines are all reached over HTTP, so they need bytes)."""
    img = prepare_pixels(data, limits, field=field)
    return ImagePart(data=encode_jpeg(img, limits.jpeg_quality), mime="image/jpeg", width=img.width, height=img.height)


def prepare_pixels(data: bytes, limits: ImageLimits, *, field: str = "image") -> Image.Image:
    """The model-ready RGB image within the budget, not encoded."""
    image = open_checked(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels, field=field)
    target = fit_size(image.width, image.height, limits.max_side, limits.budget_pixels)
    decoded = decode(image, target, field=field)
    try:
        img = resize(to_rgb(decoded.image), target, limits.resize_filter)
        img = orient(img, decoded.orientation)
    except (OSError, ValueError) as exc:  # lazily decoded formats (TIFF strips, ...) fail here
        raise InvalidMedia(f"{field}: {decoded.format} image data is truncated or corrupt", param=field) from exc
    return img


async def prepare_image_async(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    return await asyncio.to_thread(prepare_image, data, limits, field=field)


def image_to_data_uri(image: ImagePart) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
