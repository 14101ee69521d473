"""Image intake: source bytes (data URI or raw base64) -> checked, decoded, resized, model-ready ImagePart.

The stages live in their own modules: fetch.py (URLs), decode.py (sniffing, header limits, JPEG draft
decoding), transform.py (budget, RGB, resize, orientation, encoding). This module strings them together;
`prepare_image` is CPU work and runs in a thread (`prepare_image_async`). Limits are checked before any pixel
is decoded: byte size first, then the header's dimensions, aspect ratio and decoded-memory cost (decompression
bombs never allocate); with a DecodePool (media/pool.py) the decode waits until its cost fits the shared budget.

A JPEG or PNG that needs no work (within the model's size budget, RGB, upright, one frame, no
transparency, complete) passes through: the engine gets the client's bytes, with no decode and no re-encode
(no JPEG generation loss on screenshots). Everything else is decoded, resized and re-encoded as the model's
`image_format` (JPEG, or PNG for text-heavy use).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from vlmserve.domain.types import ImagePart
from vlmserve.errors import BadRequest, InvalidMedia, PayloadTooLarge
from vlmserve.media.decode import decode, decoded_cost, open_checked, use_draft
from vlmserve.media.pool import DecodePool
from vlmserve.media.transform import ResizeFilter, encode_jpeg, encode_png, fit_size, orient, resize, to_rgb

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
    encode_format: Literal["jpeg", "png"] = "jpeg"  # of images that are re-encoded
    pass_through: bool = True  # JPEG/PNG that need no work reach the engine unchanged


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
    source_size: tuple[int, int]  # as stored (a JPEG draft makes image.size smaller)


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
    source_size = image.size
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
    return Planned(image, target, cost, source_size)


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


_PASS_MODES = {"JPEG": ("RGB",), "PNG": ("RGB",)}  # what every engine reads as it is
_PASS_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}


def passes_through(planned: Planned, data: bytes, limits: ImageLimits) -> bool:
    """True when the engine can take `data` as it is: JPEG or PNG already at its target size, in a mode every
    engine reads (RGB), upright (no EXIF rotation), one frame, opaque, and complete (a truncated file
    is decoded instead, so it is refused here rather than by the engine)."""
    image = planned.image
    fmt = image.format or ""
    if not limits.pass_through or fmt not in _PASS_MODES or planned.target != planned.source_size:
        return False
    if image.mode not in _PASS_MODES[fmt] or getattr(image, "n_frames", 1) != 1 or "transparency" in image.info:
        return False
    if fmt == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return False  # no end-of-image marker: truncated
    if fmt == "PNG" and not data.endswith(b"\x00\x00\x00\x00IEND\xaeB`\x82"):
        return False  # no IEND chunk last: truncated (or trailing bytes)
    if fmt == "PNG" and b"eXIf" not in data:
        return True  # no EXIF chunk (Pillow's PNG getexif would decode the whole image to look for one)
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # an unreadable EXIF block: decode, which ignores it
        return False
    return orientation == 1


def part_of(planned: Planned, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Decode, convert, resize, orient and re-encode (engines are all reached over HTTP, so they need bytes)."""
    img = pixels_of(planned, limits, field=field)
    if limits.encode_format == "png":
        return ImagePart(data=encode_png(img), mime="image/png", width=img.width, height=img.height)
    return ImagePart(data=encode_jpeg(img, limits.jpeg_quality), mime="image/jpeg", width=img.width, height=img.height)


def as_is(planned: Planned, data: bytes) -> ImagePart:
    image = planned.image
    return ImagePart(data=data, mime=_PASS_MIME[image.format or ""], width=image.width, height=image.height)


def prepare_image(data: bytes, limits: ImageLimits, *, field: str = "image") -> ImagePart:
    """Validate, then pass through, or decode (JPEG via DCT draft mode when shrinking), convert to RGB, resize,
    orient and re-encode."""
    planned = plan_image(data, limits, field=field)
    if passes_through(planned, data, limits):
        return as_is(planned, data)
    return part_of(planned, limits, field=field)


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
    if passes_through(planned, data, limits):
        return as_is(planned, data)
    return await pool.run(planned.cost, lambda: part_of(planned, limits, field=field), field=field)


def image_to_data_uri(image: ImagePart) -> str:
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"
