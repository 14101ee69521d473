"""Shared fixtures: one vlmserve process with the embedded models for the contract tests."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw, ImageFont
from server_process import ServerProcess, running_server


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The embedded default (SmolLM2, RapidOCR, MiniLM), started exactly as a user would."""
    with running_server(None) as proc:
        yield proc


def text_image(text: str, size: tuple[int, int] = (480, 120), fmt: str = "PNG") -> bytes:
    """An image with `text` drawn large and black on white, for real OCR reads."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((16, size[1] // 2 - 24), text, fill="black", font=ImageFont.load_default(size=44))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
