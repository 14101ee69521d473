"""Batch input validation: every rule, with 1-based line numbers."""

from __future__ import annotations

import orjson
from batch_helpers import chat_line, jsonl

from vlmserve.jobs.validate import parse_batch_input

URL = "/v1/chat/completions"


def known(_endpoint: str, model: str) -> str | None:
    return None if model in ("slow", "") else f"model '{model}' not found"


def test_valid_lines_keep_order_model_and_body() -> None:
    lines, errors = parse_batch_input(jsonl([chat_line("a"), b"", chat_line("b")]), URL, 10, known)
    assert errors == []
    assert [(ln.line_no, ln.custom_id, ln.model) for ln in lines] == [(1, "a", "slow"), (3, "b", "slow")]
    assert orjson.loads(lines[0].body)["messages"][0]["content"] == "hello a"


def test_each_rule_reports_its_line() -> None:
    content = jsonl([
        chat_line("ok"),
        b"not json",
        b"[1, 2]",
        orjson.dumps({"method": "POST", "url": URL, "body": {}}),
        chat_line("get", method="GET"),
        chat_line("url", url="/v1/embeddings"),
        orjson.dumps({"custom_id": "nobody", "method": "POST", "url": URL}),
        chat_line("ok"),
        chat_line("bad-model", model="nope"),
        orjson.dumps({"custom_id": "s", "method": "POST", "url": URL, "body": {"model": "slow", "stream": True}}),
    ])  # fmt: skip
    lines, errors = parse_batch_input(content, URL, 100, known)
    assert [ln.custom_id for ln in lines] == ["ok"]
    assert [(e.line, e.code) for e in errors] == [
        (2, "invalid_json_line"),
        (3, "invalid_json_line"),
        (4, "missing_required_parameter"),
        (5, "invalid_method"),
        (6, "mismatched_url"),
        (7, "missing_required_parameter"),
        (8, "duplicate_custom_id"),
        (9, "model_not_found"),
        (10, "invalid_value"),
    ]


def test_too_many_lines_and_empty_file() -> None:
    _, errors = parse_batch_input(jsonl([chat_line(str(i)) for i in range(5)]), URL, 3, known)
    assert [(e.code, e.line) for e in errors] == [("too_many_requests", 4)]
    _, errors = parse_batch_input(b"\n\n", URL, 3, known)
    assert [e.code for e in errors] == ["empty_file"]


def test_model_check_runs_once_per_model() -> None:
    calls: list[str] = []

    def counting(endpoint: str, model: str) -> str | None:
        calls.append(model)
        return None

    parse_batch_input(jsonl([chat_line(str(i)) for i in range(50)]), URL, 100, counting)
    assert calls == ["slow"]
