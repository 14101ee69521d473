"""Logging set-up: `log_format: text` (human lines, as before) or `json` (one JSON object per line on stderr).

Every record carries the current request's id (RequestIdFilter). The gateway writes one access record per
request (logger `vlmserve.access`, message "access") whose fields are passed as `extra=`; the JSON formatter
copies exactly the whitelisted fields below, so nothing else a handler attached (bodies, prompts) can leak.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from vlmserve.config import Settings
from vlmserve.context import current

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# fields of an access record (gateway) that the JSON formatter copies; never bodies, prompts or key secrets
ACCESS_FIELDS = ("method", "path", "status", "duration_ms", "model", "key_id", "surface", "client")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (the current request's X-Request-ID, or "-") to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            ctx = current.get()
            record.request_id = ctx.request_id if ctx is not None else "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, message, request_id, access fields,
    and `exc` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(settings: Settings) -> None:
    """Configure the root logger once, before the server starts (the serve command calls it)."""
    if settings.log_format == "json":
        json_handler = logging.StreamHandler(sys.stderr)
        json_handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        for old in root.handlers[:]:
            root.removeHandler(old)
        root.addHandler(json_handler)
        root.setLevel(settings.log_level.upper())
        # uvicorn's own loggers go through the root handler too (serving.uvicorn_options passes log_config=None)
        for name in ("uvicorn", "uvicorn.error"):
            uv = logging.getLogger(name)
            uv.handlers.clear()
            uv.propagate = True
    else:
        logging.basicConfig(level=settings.log_level.upper(), format=TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())
