"""MediaPipeline: per-request limits, the content-hash cache, URL parts through the service path."""

from __future__ import annotations

import asyncio

import media_corpus as corpus
import pytest
from PIL import Image

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ImageInput, ImagePart, ImageURL, Message, TextPart
from vlmserve.errors import BadRequest, PayloadTooLarge
from vlmserve.media.cache import PreparedImageCache
from vlmserve.media.fetch import FetchPolicy
from vlmserve.media.pipeline import MediaPipeline, RequestLimits

SPEC = ModelSpec(name="vlm", engine="openai", url="http://127.0.0.1:9/v1", max_image_side=64, max_images=4)
JPEG = corpus.encode(Image.new("RGB", (300, 150), "green"), "JPEG")


def user(*parts: object) -> Message:
    return Message(role="user", parts=[TextPart("look"), *parts])  # type: ignore[list-item]


async def test_images_prepared_once_per_content() -> None:
    media = MediaPipeline()
    messages = [user(ImageInput(JPEG), ImageInput(JPEG)), user(ImageInput(JPEG))]
    out = await media.prepare_messages(messages, SPEC)
    images = [p for m in out for p in m.parts if isinstance(p, ImagePart)]
    assert len(images) == 3 and {(i.width, i.height) for i in images} == {(64, 32)}
    assert media.cache.misses == 1 and media.cache.hits == 2
    bigger = SPEC.model_copy(update={"max_image_side": 128})
    await media.prepare_messages([user(ImageInput(JPEG))], bigger)
    assert media.cache.misses == 2  # another budget is another entry


async def test_concurrent_requests_share_one_preparation() -> None:
    media = MediaPipeline()
    results = await asyncio.gather(*(media.prepare_messages([user(ImageInput(JPEG))], SPEC) for _ in range(5)))
    assert media.cache.misses == 1 and len(results) == 5


def test_cache_is_bounded_by_bytes() -> None:
    cache = PreparedImageCache(max_bytes=250)
    for i in range(5):
        cache.put(str(i), ImagePart(data=bytes(100), mime="image/jpeg", width=1, height=1))
    assert cache.bytes <= 250 and len(cache) == 2 and cache.get("4") is not None and cache.get("0") is None


async def test_count_limits() -> None:
    media = MediaPipeline(request_limits=RequestLimits(max_images_per_message=2))
    with pytest.raises(BadRequest, match="per message"):
        await media.prepare_messages([user(*[ImageInput(JPEG)] * 3)], SPEC)
    with pytest.raises(BadRequest, match="at most 4"):
        await media.prepare_messages([user(ImageInput(JPEG), ImageInput(JPEG))] * 3, SPEC)


async def test_total_image_bytes_per_request() -> None:
    media = MediaPipeline(request_limits=RequestLimits(max_image_bytes_per_request=len(JPEG) * 2 - 1))
    with pytest.raises(PayloadTooLarge, match="total more than"):
        await media.prepare_messages([user(ImageInput(JPEG), ImageInput(JPEG))], SPEC)


async def test_url_parts_go_through_the_fetch_policy() -> None:
    media = MediaPipeline(fetch=FetchPolicy())
    with pytest.raises(BadRequest, match="loopback") as info:
        await media.prepare_messages([user(ImageURL("http://127.0.0.1:9/x.png", field="images[0]"))], SPEC)
    assert info.value.param == "images[0]"


async def test_errors_are_not_cached() -> None:
    media = MediaPipeline()
    for _ in range(2):
        with pytest.raises(BadRequest):
            await media.prepare_messages([user(ImageInput(corpus.truncated_jpeg()))], SPEC)
    assert len(media.cache) == 0
