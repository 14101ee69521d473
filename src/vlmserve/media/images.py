"""Image intake: source bytes (data URI or raw base64) -> checked, decoded, resized, model-ready ImagePart.

The stages live in their own modules: fetch.py (URLs), decode.py (sniffing, header limits, JPEG draft
decoding), transform.py (budget, RGB, resize, orientation, encoding). This module strings them together;
`prepare_image` is CPU work and runs in a thread (`prepare_image_async`). Limits are checked before any pixel
is decoded: byte size first, then the header's dimensions, aspect ratio and decoded-memory cost (decompression
bombs never allocate); with a DecodePool (media/pool.py) the decode waits until its cost fits the shared budget.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass

from PIL import Image

from vlmserve.domain.types import ImagePart
from vlmserve.errors import BadRequest, InvalidMedia, PayloadTooLarge
from vlmserve.media.decode import decode, decoded_cost, open_checked, use_draft
from vlmserve.media.pool import DecodePool
from vlmserve.media.transform import ResizeFilter, encode_jpeg, fit_size, orient, resize, to_rgb

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000  # decode limit (bombs), checked from the header
    max_decoded_bytes: int = 256 * 1024 * 1024  # memory decoding + RGB + resize may take (decoded_cost)
    max_aspect_ratio: float | None = None  # longer side / shorter side, the model's (ModelSpec.aspect_ratio_limit)
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


@dataclass(frozen=True, slots=True)
class Planned:
    """An opened (not decoded) image that passed every header check, its target size and decoded cost."""

    image: Image.Image
    target: tuple[int, int]
    cost: int


def plan_image(data: bytes, limits: ImageLimits, *, field: str = "image") -> Planned:
    """Header checks (bytes, format, pixels, aspect ratio), the target size, JPEG draft scale and the memory
    the decode will take, refused (413) beyond `max_decoded_bytes`; nothing is decoded."""
    image = open_checked(
        data,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        max_aspect_ratio=limits.max_aspect_ratio,
        field=field,
    )
    target = fit_size(image.width, image.height, limits.max_side, limits.budget_pixels)
    try:
        use_draft(image, target)
    except (OSError, ValueError) as exc:
        raise InvalidMedia(f"{field}: JPEG image data is truncated or corrupt", param=field) from exc
    cost = decoded_cost(image, target)
    if cost > limits.max_decoded_bytes:
        raise PayloadTooLarge(
            f"{field}: image is {image.width}x{image.height} {image.mode}, about {cost / 2**20:.0f} MB to decode; "
            f"limit is {limits.max_decoded_bytes / 2**20:.0f} MB",
            param=field,
        )
    return Planned(image, target, cost)


def pixels_of(planned: Planned, limits: ImageLimits, *, field: str = "image") -> Image.Image:
    """Decode a planned image to the model-ready RGB pixels within the budget."""
    decoded = decode(planned.image, field=field)
    img = decoded.image
    try:
        img = orient(resize(to_rgb(img), planned.target, limits.resize_filter), decoded.orientation)
    except (OSError, ValueError) as exc:  # lazily decoded formats (TIFF strips, ...) fail here; odd modes too
        raise InvalidMedia(
            f"{field}: {decoded.format} image ({img.mode}) is truncated, corrupt or in an unsupported mode",
            param=field,
        ) from exc
    finally:
        if img is not decoded.image:  # the full-size pixels go now, not when the collector gets round to them
            decoded.image.close()
    return img


def part_of(planned: Planned, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Decode, convert, resize, orient and re-encode (engines are all reached over HTTP, so they need bytes)."""
    img = pixels_of(planned, limits, field=field)
    return ImagePart(data=encode_jpeg(img, limits.jpeg_quality), mime="image/jpeg", width=img.width, height=img.height)


def prepare_image(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Validate, decode (JPEG via DCT draft mode when shrinking), convert to RGB, resize, orient, re-encode."""
    return part_of(plan_image(data, limits, field=field), limits, field=field)


def prepare_pixels(data: bytes, limits: ImageLimits, *, field: str = "image") -> Image.Image:
    """The model-ready RGB image within the budget, not encoded."""
    return pixels_of(plan_image(data, limits, field=field), limits, field=field)


async def prepare_image_async(
    data: bytes, limits: ImageLimits, *, field: str = "image", pool: DecodePool | None = None
) -> ImagePart:
    """prepare_image off the event loop; with `pool`, the decode waits for its cost in the pool's budget."""
    if pool is None:
        return await asyncio.to_thread(prepare_image, data, limits, field=field)
    planned = await pool.thread(lambda: plan_image(data, limits, field=field))
    return await pool.run(planned.cost, lambda: part_of(planned, limits, field=field), field=field)


def image_to_data_uri(image: ImagePart) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
