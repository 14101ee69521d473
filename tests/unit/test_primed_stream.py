"""A stream run up to its first chunk (service/chat._primed) hands on that chunk, then the rest, and closes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from vlmserve.domain.types import ChatChunk
from vlmserve.errors import EngineError
from vlmserve.service.chat import ChatStream, _primed


def _stream(texts: list[str], closed: list[bool]) -> AsyncIterator[ChatChunk]:
    async def chunks() -> AsyncIterator[ChatChunk]:
        try:
            for text in texts:
                yield ChatChunk(text=text)
        finally:
            closed.append(True)

    return chunks()


async def test_the_first_chunk_then_the_rest() -> None:
    closed: list[bool] = []
    stream = await _primed(ChatStream(model="m", chunks=_stream(["a", "b", "c"], closed)))
    assert [chunk.text async for chunk in stream.chunks] == ["a", "b", "c"]
    assert closed == [True]


async def test_closing_it_closes_the_engine_stream() -> None:
    closed: list[bool] = []
    stream = await _primed(ChatStream(model="m", chunks=_stream(["a", "b", "c"], closed)))
    assert (await anext(stream.chunks)).text == "a"
    assert (await anext(stream.chunks)).text == "b"
    await stream.chunks.aclose()  # type: ignore[attr-defined]
    assert closed == [True]


async def test_an_empty_stream_is_an_engine_error() -> None:
    with pytest.raises(EngineError, match="no answer"):
        await _primed(ChatStream(model="m", chunks=_stream([], [])))
