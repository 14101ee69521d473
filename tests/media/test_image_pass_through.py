"""Images that need no work reach the engine byte for byte (no decode, no re-encode); the rest are decoded,
resized and re-encoded as the model's image_format. Checked on the pipeline and, end to end, at a fake
OpenAI-compatible engine behind a real server."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from fake_upstreams import FakeUpstream
from PIL import Image
from server_process import running_server

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ImageInput, ImagePart, Message, TextPart
from vlmserve.errors import InvalidMedia
from vlmserve.media.pipeline import MediaPipeline


def _image(fmt: str, size: tuple[int, int] = (512, 384), mode: str = "RGB", **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "teal" if mode != "L" else 128).save(out, format=fmt, **save)
    return out.getvalue()


def _rotated(fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return _image(fmt, exif=exif.tobytes())


async def _prepared(data: bytes, **spec: object) -> ImagePart:
    model = ModelSpec(name="m", engine="openai", url="http://127.0.0.1:1/v1", **spec)  # type: ignore[arg-type]
    message = Message(role="user", parts=[TextPart("look"), ImageInput(data=data, field="image")])
    (prepared,) = await MediaPipeline().prepare_messages([message], model)
    part = prepared.parts[1]
    assert isinstance(part, ImagePart)
    return part


@pytest.mark.parametrize(
    "data",
    [_image("JPEG"), _image("PNG"), _image("JPEG", progressive=True)],
    ids=["jpeg", "png", "progressive-jpeg"],
)
async def test_images_within_the_budget_pass_through_unchanged(data: bytes) -> None:
    part = await _prepared(data)
    assert part.data == data and (part.width, part.height) == (512, 384)
    assert part.mime == ("image/png" if data.startswith(b"\x89PNG") else "image/jpeg")


@pytest.mark.parametrize(
    "data",
    [
        _image("JPEG", size=(2048, 1536)),  # over max_image_side
        _image("PNG", mode="RGBA"),  # transparency: composited on white
        _image("PNG", mode="P"),  # palette
        _image("JPEG", mode="L"),  # grayscale: every engine gets RGB
        _image("WEBP"),  # not every engine decodes WebP
        _rotated(),  # EXIF orientation applied
        _rotated("PNG"),
        _image("PNG") + b"trailing",  # IEND not last
    ],
    ids=["too-big", "rgba", "palette", "grey", "webp", "exif-rotated", "exif-rotated-png", "trailing-bytes"],
)
async def test_images_that_need_work_are_re_encoded(data: bytes) -> None:
    part = await _prepared(data)
    assert part.data != data and part.mime == "image/jpeg"
    assert Image.open(io.BytesIO(part.data)).mode == "RGB"


async def test_a_rotated_jpeg_comes_out_upright() -> None:
    part = await _prepared(_rotated())
    assert (part.width, part.height) == (384, 512)


async def test_a_truncated_jpeg_is_decoded_and_refused_not_passed_on() -> None:
    with pytest.raises(InvalidMedia):
        await _prepared(_image("JPEG")[:-200])


async def test_png_image_format_keeps_resized_text_lossless() -> None:
    part = await _prepared(_image("JPEG", size=(2048, 1536)), image_format="png")
    assert part.mime == "image/png" and part.data.startswith(b"\x89PNG")
    forced = await _prepared(_image("PNG"), image_pass_through=False)
    assert forced.mime == "image/jpeg"


def test_the_engine_receives_the_clients_bytes(tmp_path: object) -> None:
    original = _image("PNG", size=(640, 480))
    with FakeUpstream() as upstream:
        config = {
            "embedded_models": False,
            "models": [
                {
                    "name": "vision",
                    "engine": "openai",
                    "url": upstream.url + "/v1",
                    "capabilities": ["completion", "vision"],
                }
            ],
        }
        with running_server(config) as server:
            uri = "data:image/png;base64," + base64.b64encode(original).decode()
            content = [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": uri}}]
            body = {"model": "vision", "messages": [{"role": "user", "content": content}], "max_tokens": 4}
            reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
        sent = upstream.last_body("/v1/chat/completions")
    parts = sent["messages"][-1]["content"]
    (image,) = [part for part in parts if part.get("type") == "image_url"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == original  # bit-identical at the engine
