"""DecodePool: decodes reserve their decoded cost from one budget, wait their turn (FIFO, bounded), and keep it
reserved until their thread is done, even when the request that started them is cancelled."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable

import pytest
from PIL import Image

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ImageInput, Message, TextPart
from vlmserve.errors import PayloadTooLarge, Unavailable
from vlmserve.media.images import ImageLimits, plan_image
from vlmserve.media.pipeline import MediaPipeline
from vlmserve.media.pool import DecodePool

MB = 2**20


async def _until(condition: Callable[[], bool]) -> None:
    """Poll `condition` with a deadline (the decode threads run on their own clock)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in 5 s"
        await asyncio.sleep(0.01)


async def test_an_image_over_the_whole_budget_is_413() -> None:
    pool = DecodePool(100 * MB)
    with pytest.raises(PayloadTooLarge, match="media_decode_memory_mb"):
        await pool.run(101 * MB, lambda: None)
    assert pool.used == 0


async def test_a_decode_waits_for_room_then_runs() -> None:
    pool = DecodePool(100 * MB, wait=10)
    gate = threading.Event()
    first = asyncio.ensure_future(pool.run(60 * MB, gate.wait))
    await _until(lambda: pool.used == 60 * MB)
    second = asyncio.ensure_future(pool.run(60 * MB, lambda: "second"))
    small = asyncio.ensure_future(pool.run(10 * MB, lambda: "small"))  # fits, but waits behind `second` (FIFO)
    await _until(lambda: len(pool._waiters) == 2)
    assert not second.done() and not small.done() and pool.used == 60 * MB
    gate.set()
    assert await second == "second" and await small == "small"
    await first
    await _until(lambda: pool.used == 0)
    assert pool.peak <= 100 * MB


async def test_waiting_too_long_is_503_with_retry_after() -> None:
    pool = DecodePool(100 * MB, wait=0.2)
    gate = threading.Event()
    first = asyncio.ensure_future(pool.run(80 * MB, gate.wait))
    await _until(lambda: pool.used == 80 * MB)
    with pytest.raises(Unavailable) as info:
        await pool.run(30 * MB, lambda: None)
    assert info.value.retry_after >= 1 and "decode memory budget" in info.value.message
    gate.set()
    await first
    await _until(lambda: pool.used == 0)


async def test_a_cancelled_request_keeps_its_reservation_until_the_thread_ends() -> None:
    pool = DecodePool(100 * MB, wait=10)
    gate = threading.Event()
    running = asyncio.ensure_future(pool.run(70 * MB, gate.wait))
    await _until(lambda: pool.used == 70 * MB)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert pool.used == 70 * MB  # the thread still holds its pixels
    gate.set()
    await _until(lambda: pool.used == 0)


def _rgba_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, 0)).save(out, format="PNG")
    return out.getvalue()


def test_decoded_cost_counts_bytes_per_pixel_and_jpeg_drafts() -> None:
    limits = ImageLimits(max_decoded_bytes=2**40)
    rgba = plan_image(_rgba_png(4000), limits)
    out = io.BytesIO()
    Image.new("L", (4000, 4000)).save(out, format="PNG")
    gray = plan_image(out.getvalue(), limits)
    assert rgba.cost > 1.5 * gray.cost and rgba.cost > 16_000_000 * 9  # 4 bytes a pixel, then the compositing
    out = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(out, format="JPEG")
    jpeg = plan_image(out.getvalue(), limits)
    assert jpeg.image.size == (2000, 1500) and jpeg.cost < 30 * MB  # decoded at 1/4: the draft size counts


async def test_pipeline_refuses_an_image_its_decode_budget_cannot_hold() -> None:
    pipeline = MediaPipeline(pool=DecodePool(100 * MB))
    message = Message(role="user", parts=[TextPart("read"), ImageInput(_rgba_png(5000), field="image")])
    with pytest.raises(PayloadTooLarge, match=r"decode memory budget of 100 MB"):
        await pipeline.prepare_messages([message], ModelSpec(name="v", engine="rapidocr"))
