"""Pieces of an answer that arrive in one network read are relayed as one, without reordering kinds."""

from __future__ import annotations

from vlmserve.domain.types import ChatChunk, TokenLogprob, ToolCallDelta, coalesced


def test_text_pieces_of_one_read_become_one() -> None:
    merged = coalesced([ChatChunk(text="a"), ChatChunk(text="b"), ChatChunk(text="c")])
    assert merged == [ChatChunk(text="abc")]


def test_logprobs_follow_their_tokens() -> None:
    first, second = TokenLogprob("a", -0.1), TokenLogprob("b", -0.2)
    merged = coalesced([ChatChunk(text="a", logprobs=[first]), ChatChunk(text="b", logprobs=[second])])
    assert merged == [ChatChunk(text="ab", logprobs=[first, second])]


def test_kinds_and_tool_calls_stay_apart_in_order() -> None:
    call = ChatChunk(tool_calls=[ToolCallDelta(index=0, id="c1", name="f", arguments="{}")])
    pieces = [
        ChatChunk(reasoning="r1"),
        ChatChunk(reasoning="r2"),
        ChatChunk(text="t1"),
        call,
        ChatChunk(text="t2"),
        ChatChunk(text="t3", logprobs=[TokenLogprob("t3", -1.0)]),
    ]
    merged = coalesced(pieces)
    assert [(m.reasoning, m.text, bool(m.tool_calls)) for m in merged] == [
        ("r1r2", "", False),
        ("", "t1", False),
        ("", "", True),
        ("", "t2", False),
        ("", "t3", False),  # logprobs on one and not the other: kept apart
    ]


def test_a_piece_with_both_kinds_is_never_merged() -> None:
    both = ChatChunk(text="t", reasoning="r")
    assert coalesced([both, ChatChunk(text="u")]) == [both, ChatChunk(text="u")]
    assert coalesced([ChatChunk(text="u"), ChatChunk(text="t", reasoning="r")])[0] == ChatChunk(text="u")
