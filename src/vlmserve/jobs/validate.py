"""Batch input validation: JSONL lines {custom_id, method, url, body}, checked before anything runs.

Pure: the model checks are injected (`check_model(endpoint, model) -> error message or None`: the model exists
and can serve the endpoint; `check_access`, same shape: the batch's API key may use it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from vlmserve.jobs.model import LineError, ParsedLine

MAX_REPORTED_ERRORS = 100
ModelCheck = Callable[[str, str], str | None]


def count_lines(content: bytes) -> int:
    return sum(1 for line in content.splitlines() if line.strip())


def _check_line(raw: bytes, line_no: int, endpoint: str) -> tuple[ParsedLine | None, LineError | None]:
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, LineError("invalid_json_line", f"line {line_no} is not valid JSON: {exc}", line_no)
    if not isinstance(obj, dict):
        return None, LineError("invalid_json_line", f"line {line_no} is not a JSON object", line_no)
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return None, LineError(
            "missing_required_parameter", "custom_id must be a non-empty string", line_no, "custom_id"
        )
    if obj.get("method") != "POST":
        return None, LineError("invalid_method", "method must be POST", line_no, "method")
    url = obj.get("url")
    if url != endpoint:
        return None, LineError(
            "mismatched_url", f"url {url!r} does not match the batch endpoint {endpoint!r}", line_no, "url"
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        return None, LineError("missing_required_parameter", "body must be a JSON object", line_no, "body")
    if body.get("stream"):
        return None, LineError("invalid_value", "streaming is not supported in batches", line_no, "body.stream")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return None, LineError("invalid_value", "body.model must be a string", line_no, "body.model")
    return ParsedLine(line_no, custom_id, model or "", orjson.dumps(body).decode()), None


def _model_error(
    endpoint: str, model: str, check_model: ModelCheck, check_access: ModelCheck | None
) -> LineError | None:
    if (message := check_model(endpoint, model)) is not None:
        return LineError("model_not_found", message, param="body.model")
    if check_access is not None and (message := check_access(endpoint, model)) is not None:
        return LineError("model_not_allowed", message, param="body.model")
    return None


def parse_batch_input(
    content: bytes, endpoint: str, max_lines: int, check_model: ModelCheck, check_access: ModelCheck | None = None
) -> tuple[list[ParsedLine], list[LineError]]:
    """(lines, errors): any error fails the whole batch; errors carry 1-based line numbers."""
    lines: list[ParsedLine] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    model_errors: dict[str, LineError | None] = {}
    for line_no, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) + len(errors) >= max_lines:
            errors.append(LineError("too_many_requests", f"a batch takes at most {max_lines} requests", line_no))
            break
        parsed, error = _check_line(raw, line_no, endpoint)
        if parsed is not None and parsed.custom_id in seen:
            error = LineError(
                "duplicate_custom_id",
                f"custom_id {parsed.custom_id!r} is already used on line {seen[parsed.custom_id]}",
                line_no,
                "custom_id",
            )
        elif parsed is not None:
            if parsed.model not in model_errors:
                model_errors[parsed.model] = _model_error(endpoint, parsed.model, check_model, check_access)
            if (model_error := model_errors[parsed.model]) is not None:
                error = replace(model_error, line=line_no)
        if error is not None:
            errors.append(error)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        assert parsed is not None
        seen[parsed.custom_id] = line_no
        lines.append(parsed)
    if not lines and not errors:
        errors.append(LineError("empty_file", "the input file has no requests"))
    return lines, errors
