"""The request context: noting a model only records it; the key's model allowlist is its own step."""

from __future__ import annotations

import pytest

from vlmserve.context import RequestContext, check_model_visible, current, note_model
from vlmserve.errors import PermissionDenied


def test_note_model_records_the_first_model_and_never_refuses() -> None:
    ctx = RequestContext("rid", "openai", 0, key_id="k", models=frozenset({"m1"}))
    reset = current.set(ctx)
    try:
        note_model("m2")  # outside the key's allowlist: noting is not the check
        note_model("m1")  # a later resolution (a pipeline's step) keeps the first label
        assert ctx.model == "m2"
        check_model_visible("m1")
        with pytest.raises(PermissionDenied) as refused:
            check_model_visible("m2")
        assert (refused.value.status, refused.value.code, refused.value.param) == (403, "model_not_allowed", "model")
    finally:
        current.reset(reset)


def test_outside_a_request_every_model_is_visible_and_nothing_is_noted() -> None:
    assert current.get() is None
    note_model("m2")
    check_model_visible("m2")
    assert current.get() is None
