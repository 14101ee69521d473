"""Ollama-style durations: "5m", "1h30m", "300ms", a number of seconds, 0 (now) or negative (forever)."""

from __future__ import annotations

import math
import re

from vlmserve.errors import BadRequest

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds for a duration; None stays None; negative means keep forever (returned as math.inf)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("duration must be a number or a string like '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            raise ValueError("empty duration")
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            pos, total = 0, 0.0
            for match in _PART.finditer(body):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(body) or pos == 0:
                raise ValueError(f"invalid duration {value!r}: use e.g. '5m', '1h', '30s' or seconds") from None
            seconds = sign * total
    if math.isnan(seconds):
        raise ValueError("duration is NaN")
    return math.inf if seconds < 0 else seconds


def keep_alive_seconds(value: str | float | None) -> float | None:
    """A request's keep_alive as seconds; a malformed value is the client's error (400)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadRequest(str(exc), param="keep_alive") from None
