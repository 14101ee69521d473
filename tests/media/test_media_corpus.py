"""The hostile/awkward corpus through prepare_image: each is either a good RGB image or a 4xx, never a crash."""

from __future__ import annotations

import io
from collections.abc import Callable

import media_corpus as corpus
import pytest
from PIL import Image

from vlmserve.errors import InvalidMedia, PayloadTooLarge, VlmServeError
from vlmserve.media.decode import sniff
from vlmserve.media.images import ImageLimits, prepare_image
from vlmserve.media.transform import fit_size

LIMITS = ImageLimits()  # defaults: 20 MB, 50 MP, 1024 px


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.mode == "RGB"
    return image


def test_12mp_photo_is_reduced_to_the_budget() -> None:
    part = prepare_image(corpus.photo_12mp_jpeg(), LIMITS)
    assert (part.width, part.height) == (1024, 768)
    assert opened(part.data).size == (1024, 768)


def test_budget_in_pixels_as_well_as_side() -> None:
    limits = ImageLimits(max_side=4096, budget_pixels=500_000)
    part = prepare_image(corpus.photo_12mp_jpeg(), limits)
    assert part.width * part.height <= 500_000 and abs(part.width / part.height - 4 / 3) < 0.01
    assert fit_size(100, 50, 1024, 1_000_000) == (100, 50)  # never upscaled


def test_exif_rotation_applied() -> None:
    part = prepare_image(corpus.exif_rotated_jpeg(), LIMITS)
    assert (part.width, part.height) == (200, 400)


def test_cmyk_jpeg_becomes_rgb() -> None:
    part = prepare_image(corpus.cmyk_jpeg(), LIMITS)
    assert opened(part.data).size == (300, 200)


def test_16bit_png_keeps_its_brightness() -> None:
    part = prepare_image(corpus.png_16bit(), LIMITS)
    r, g, b = opened(part.data).getpixel((10, 10))  # type: ignore[misc]
    assert abs(r - 40000 // 256) <= 3 and r == g == b


def test_palette_transparency_on_white() -> None:
    image = opened(prepare_image(corpus.palette_transparent_png(), LIMITS).data)
    assert image.getpixel((10, 10)) == pytest.approx((0, 0, 255), abs=8)  # opaque blue half
    assert image.getpixel((54, 10)) == pytest.approx((255, 255, 255), abs=8)  # transparent half is white


def test_animated_gif_first_frame() -> None:
    image = opened(prepare_image(corpus.animated_gif(), LIMITS).data)
    assert image.getpixel((40, 30)) == pytest.approx((0, 0, 255), abs=8)


def test_png_zip_bomb_is_refused_without_decoding() -> None:
    with pytest.raises(PayloadTooLarge, match=r"too many pixels|16000x16000"):
        prepare_image(corpus.png_zip_bomb(), LIMITS)


@pytest.mark.parametrize(
    "make,error,message",
    [
        (corpus.truncated_jpeg, InvalidMedia, "truncated or corrupt"),
        (corpus.png_claiming_huge, PayloadTooLarge, "pixels"),
        (lambda: corpus.TEXT_NAMED_JPG, InvalidMedia, "text, not a supported image"),
        (lambda: b"", InvalidMedia, "empty"),
        (lambda: corpus.SVG, InvalidMedia, "SVG"),
        (lambda: b"%PDF-1.7\n...", InvalidMedia, "PDF"),
        (lambda: b"\x00\x00\x00\x18ftypheic" + bytes(40), InvalidMedia, "HEIF header is corrupt"),
        (lambda: b"\x89PNG\r\n\x1a\n" + bytes(30), InvalidMedia, "PNG"),
        (lambda: b"\xff\xd8\xff\xe0" + bytes(100), InvalidMedia, "JPEG"),
    ],
)
def test_bad_inputs_are_client_errors(make: Callable[[], bytes], error: type[VlmServeError], message: str) -> None:
    with pytest.raises(error, match=message) as info:
        prepare_image(make(), LIMITS)
    assert 400 <= info.value.status < 500


def test_format_is_sniffed_from_content() -> None:
    assert sniff(corpus.encode(Image.new("RGB", (4, 4)), "WEBP")) == "WEBP"
    assert sniff(corpus.encode(Image.new("RGB", (4, 4)), "TIFF")) == "TIFF"
    assert sniff(corpus.encode(Image.new("RGB", (4, 4)), "BMP")) == "BMP"
    assert sniff(corpus.TEXT_NAMED_JPG) is None


def _heic(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    """A real HEIC (HEVC in an ISO-BMFF box), encoded by libheif/x265 from pillow-heif, like an iPhone photo."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="HEIF", quality=90)
    data = buffer.getvalue()
    assert data[4:12] == b"ftypheic"
    return data


def test_heic_photo_is_decoded_and_reduced() -> None:
    data = _heic((1600, 1200), (200, 30, 30))
    assert sniff(data) == "HEIF"
    part = prepare_image(data, LIMITS)
    assert (part.width, part.height) == (1024, 768)
    red, green, blue = opened(part.data).getpixel((512, 384))  # type: ignore[misc]
    assert red > 180 and green < 60 and blue < 60  # HEVC is lossy; the colour survives


def test_heic_pixel_limit_is_checked_from_the_header() -> None:
    with pytest.raises(PayloadTooLarge, match="pixels"):
        prepare_image(_heic((640, 480), (0, 0, 0)), ImageLimits(max_pixels=100_000))


def test_heic_orientation_is_applied_once() -> None:
    """A HEIC saved with EXIF orientation 6 (rotate 90°) comes out portrait, not rotated twice."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (400, 200), (0, 0, 255)).save(buffer, format="HEIF", exif=exif.tobytes())
    part = prepare_image(buffer.getvalue(), LIMITS)
    assert (part.width, part.height) == (200, 400)
