"""Image intake: formats, limits, orientation, modes — every bad input is a 4xx error, never a crash."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from vlmserve.errors import BadRequest, InvalidMedia, PayloadTooLarge
from vlmserve.media.images import ImageLimits, bytes_from_url, decode_base64, prepare_image

LIMITS = ImageLimits(max_bytes=5_000_000, max_pixels=40_000_000, max_side=256)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("JPEG", "RGB"),
        ("PNG", "RGBA"),
        ("WEBP", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "CMYK"),
        ("PNG", "I;16"),
        ("PNG", "LA"),
    ],
)
def test_formats_and_modes_become_rgb_jpeg(fmt: str, mode: str) -> None:
    image = Image.new(mode, (640, 320))
    part = prepare_image(encode(image, fmt), LIMITS)
    assert part.mime == "image/jpeg" and (part.width, part.height) == (256, 128)
    assert Image.open(io.BytesIO(part.data)).mode == "RGB"


def test_transparent_pixels_become_white() -> None:
    part = prepare_image(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"), LIMITS)
    assert Image.open(io.BytesIO(part.data)).getpixel((4, 4)) == pytest.approx((255, 255, 255), abs=3)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    part = prepare_image(encode(image, "JPEG", exif=exif), LIMITS)
    assert (part.width, part.height) == (100, 200)


def test_small_images_keep_their_size() -> None:
    part = prepare_image(encode(Image.new("RGB", (50, 40)), "PNG"), LIMITS)
    assert (part.width, part.height) == (50, 40)


@pytest.mark.parametrize("side", [100_000, 8_000])
def test_pixel_bomb_is_refused_from_the_header(side: int) -> None:
    import zlib

    tiny = encode(Image.new("L", (1, 1)), "PNG")
    # a PNG whose header claims side x side pixels: refused before a single pixel is decoded
    ihdr = b"IHDR" + side.to_bytes(4, "big") * 2 + tiny[24:29]
    bomb = tiny[:8] + tiny[8:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + tiny[33:]
    with pytest.raises(PayloadTooLarge, match="pixels"):
        prepare_image(bomb, LIMITS)


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", InvalidMedia),
        (b"hello, this is text", InvalidMedia),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", InvalidMedia),
        (b"x" * 6_000_000, PayloadTooLarge),
    ],
)
def test_garbage_is_a_client_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        prepare_image(data, LIMITS)


def test_truncated_jpeg_is_400() -> None:
    data = encode(Image.effect_noise((400, 400), 50).convert("RGB"), "JPEG")
    with pytest.raises(InvalidMedia, match="truncated or corrupt"):
        prepare_image(data[: len(data) // 2], LIMITS)


def test_base64_and_data_uris() -> None:
    raw = b"\x89PNG-ish"
    assert decode_base64(base64.b64encode(raw).decode()) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert bytes_from_url("data:image/png;base64," + base64.b64encode(raw).decode()) == raw
    with pytest.raises(InvalidMedia):
        decode_base64("not base64 at all!")
    with pytest.raises(BadRequest, match="not enabled"):
        bytes_from_url("https://example.com/cat.png")
    with pytest.raises(InvalidMedia):
        bytes_from_url("data:image/png,rawtext")
