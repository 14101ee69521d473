"""StopMatcher (api/anthropic/stops.py): stop sequences found across streamed pieces, the text before the first
one let through whole and nothing of it or after it."""

from __future__ import annotations

import pytest

from vlmserve.api.anthropic.stops import StopMatcher


def _run(stops: list[str], pieces: list[str]) -> tuple[str, str | None]:
    matcher = StopMatcher(stops)
    shown = "".join(matcher.feed(piece) for piece in pieces)
    return shown + matcher.flush(), matcher.matched


@pytest.mark.parametrize(
    ("stops", "pieces", "shown", "matched"),
    [
        (["END"], ["a", "b", "c"], "abc", None),
        (["END"], ["abc E", "N", "D tail"], "abc ", "END"),  # split over three pieces
        (["END"], ["abc EN", "x"], "abc ENx", None),  # a held-back start that was not the sequence
        (["END"], ["abc EN"], "abc EN", None),  # the text ended on a held-back start: flushed
        (["xy", "b"], ["abxy"], "a", "b"),  # the earliest wins
        (["ab", "abc"], ["zabc"], "z", "abc"),  # of two at one place, the longer
        (["\n\n"], ["one\n", "\ntwo"], "one", "\n\n"),
        ([""], ["abc"], "abc", None),  # empty sequences never match
        ([], ["abc"], "abc", None),
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], shown: str, matched: str | None) -> None:
    assert _run(stops, pieces) == (shown, matched)


def test_nothing_after_the_match() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go STOP more") == "go "
    assert matcher.feed("and more") == "" and matcher.flush() == "" and matcher.done
