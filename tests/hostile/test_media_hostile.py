"""Hostile images on every image surface: thin strips, odd pixel modes, small files that decode huge, many big
decodes at once. Each is answered (200) or refused in the surface's format (4xx), with bounded memory."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest
from conftest import MEMORY_CAP_MB
from media_surfaces import SURFACES, answer_of, ask, encode, error_of, own_rss, peak_rss, settle, text_picture
from PIL import Image
from server_process import ServerProcess, running_server

MB = 2**20


def thin_png(width: int, height: int) -> bytes:
    return encode(Image.new("L", (width, height), 255), "PNG")


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(("size", "ratio"), [((100_000, 1), "100000:1"), ((1024, 4), "256:1"), ((4, 1024), "256:1")])
def test_thin_strips_are_refused_naming_ratio_and_limit(
    capped_server: ServerProcess, surface: str, size: tuple[int, int], ratio: str
) -> None:
    data = thin_png(*size)  # 100000x1: a few hundred bytes that took a runner to 23 GB
    for model in ("rapidocr", "smollm2-ocr"):
        response = ask(capped_server.url, surface, data, model=model)
        assert response.status_code == 400, response.text
        message = error_of(surface, response)
        assert f"aspect ratio of {ratio}" in message and "at most 50:1" in message, message


@pytest.mark.parametrize("surface", SURFACES)
def test_small_file_that_decodes_huge_is_413(capped_server: ServerProcess, surface: str) -> None:
    data = encode(Image.new("RGBA", (7000, 7000), (0, 0, 0, 0)), "PNG")  # ~190 KB, 49 MP: under the pixel limit
    assert len(data) < 400_000
    response = ask(capped_server.url, surface, data)
    assert response.status_code == 413, response.text
    assert "MB to decode" in error_of(surface, response)


def _modes() -> Iterator[tuple[str, bytes]]:
    """Every pixel mode a client can send, each carrying text the OCR must still read after to_rgb."""
    page = text_picture("READ 42", (480, 120))
    yield "TIFF F 0..1", encode(page.convert("F").point(lambda v: v * (1 / 255)), "TIFF")
    yield "TIFF F 0..255", encode(page.convert("F"), "TIFF")
    yield "TIFF I 16-bit range", encode(page.convert("I").point(lambda v: v * 257), "TIFF")
    yield "PNG I;16", encode(page.convert("I").point(lambda v: v * 257).convert("I;16"), "PNG")
    yield "TIFF I;16B", encode(page.convert("I").point(lambda v: v * 257).convert("I;16B"), "TIFF")
    yield "TIFF LA", encode(page.convert("LA"), "TIFF")
    yield "PNG LA", encode(page.convert("LA"), "PNG")
    yield "TIFF CMYK", encode(page.convert("CMYK"), "TIFF")
    yield "TIFF YCbCr", encode(page.convert("RGB").convert("YCbCr"), "TIFF")
    yield "TIFF LAB", encode(page.convert("RGB").convert("LAB"), "TIFF")
    yield "TIFF 1", encode(page.convert("1"), "TIFF")
    yield "TIFF P", encode(page.convert("P"), "TIFF")
    yield "PNG P transparent", encode(page.convert("P"), "PNG", transparency=0)
    yield "TIFF RGBA", encode(page.convert("RGBA"), "TIFF")
    second = text_picture("OTHER", (480, 120))
    yield "TIFF 2 frames", encode(page.convert("RGB"), "TIFF", save_all=True, append_images=[second.convert("RGB")])
    yield "JPEG CMYK", encode(page.convert("CMYK"), "JPEG")
    yield "WEBP RGBA", encode(page.convert("RGBA"), "WEBP", lossless=True)


MODES = dict(_modes())


@pytest.mark.parametrize("surface", SURFACES)
def test_float_tiff_is_read_on_every_surface(capped_server: ServerProcess, surface: str) -> None:
    response = ask(capped_server.url, surface, MODES["TIFF F 0..1"])
    assert response.status_code == 200, response.text
    assert "42" in answer_of(surface, response)


@pytest.mark.parametrize("name", list(MODES))
def test_every_pixel_mode_is_read(capped_server: ServerProcess, name: str) -> None:
    response = ask(capped_server.url, "ollama", MODES[name])
    assert response.status_code == 200, response.text  # every mode converts to RGB: none is refused
    assert "42" in answer_of("ollama", response), (name, response.text)


def test_concurrent_big_decodes_share_a_memory_budget_and_give_it_back(capped_server: ServerProcess) -> None:
    # 8 different 25 MP RGBA PNGs (~250 MB each to decode): the 512 MB pool lets two run at once
    images = [encode(Image.new("RGBA", (5000, 5000), (i, 0, 0, 255)), "PNG") for i in range(8)]
    pid = capped_server.proc.pid
    baseline = own_rss(pid)
    with peak_rss(pid) as peak, concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda data: ask(capped_server.url, "ollama", data), images))
    # a decode waits for its turn rather than failing; the OCR runner is not part of this (server only)
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses if r.status_code != 200]
    end = settle(lambda: own_rss(pid), baseline + 100 * MB)
    print(f"\n8 x 25 MP RGBA PNG: server RSS {baseline / MB:.0f} -> peak {peak.own / MB:.0f} -> {end / MB:.0f} MB")
    assert peak.own - baseline < 512 * MB + 250 * MB, f"server peak {peak.own / MB:.0f} MB"
    assert end - baseline < 100 * MB, f"server kept {(end - baseline) / MB:.0f} MB after the decodes"


@pytest.fixture(scope="module")
def wide_ocr() -> Iterator[ServerProcess]:
    """A rapidocr model that takes any aspect ratio: thin strips reach the OCR runner itself."""
    config = {"models": [{"name": "ocr-wide", "engine": "rapidocr", "max_aspect_ratio": 1_000_000}]}
    with running_server(config, memory_cap_mb=MEMORY_CAP_MB) as proc:
        yield proc


@pytest.mark.parametrize(
    "name,image,expect",
    [
        ("1024x4", Image.new("L", (1024, 4), 255), None),
        ("4x1024", Image.new("L", (4, 1024), 255), None),
        ("100000x1", Image.new("L", (100_000, 1), 255), None),
        ("480x120 text", text_picture("READ 42", (480, 120)), "42"),
        (
            "1900x60 text line",
            text_picture("Invoice 2024 total 1234 EUR paid by card, reference 42", (1900, 60), 26),
            "42",
        ),
    ],
)
def test_ocr_runner_memory_is_bounded_whatever_the_shape(
    wide_ocr: ServerProcess, name: str, image: Image.Image, expect: str | None
) -> None:
    data = encode(image, "PNG")
    ask(wide_ocr.url, "ollama", encode(text_picture("warm", (200, 60)), "PNG"), model="ocr-wide")  # runner loaded
    with peak_rss(wide_ocr.proc.pid) as peak:
        response = ask(wide_ocr.url, "ollama", data, model="ocr-wide")
    print(f"\n{name}: server + OCR runner peak {peak.bytes / MB:.0f} MB")
    assert response.status_code == 200, response.text
    if expect is not None:
        assert expect in answer_of("ollama", response)
    assert peak.bytes < 1500 * MB, f"{name}: server + runner peaked at {peak.bytes / MB:.0f} MB"
