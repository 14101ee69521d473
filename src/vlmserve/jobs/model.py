"""Plain types of the batch layer: statuses (batches, their lines, async jobs), parsed input lines, one line's
outcome, ids."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class ItemState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # claimed: `owner` holds it until `lease_until`
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never ran: the batch was cancelled
    EXPIRED = "expired"  # never ran: the completion window passed


class JobStatus(StrEnum):
    """An async single job's status (`vlm_jobs.status`); GET /job/{id} shows `running` as `pending`."""

    PENDING = "pending"
    RUNNING = "running"  # claimed: `owner` holds it until `lease_until`
    COMPLETE = "complete"  # the deployment service's word (batches say `completed`)
    FAILED = "failed"


ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
FILE_PURPOSES = ("batch", "batch_output", "vision", "user_data", "assistants", "fine-tune", "evals")


def new_id(prefix: str) -> str:
    """Time-ordered ids: sorting by id is sorting by creation (microseconds), then a random tail."""
    return f"{prefix}{time.time_ns() // 1000:014x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class ParsedLine:
    line_no: int  # 1-based line of the input file
    custom_id: str
    model: str
    body: str  # the request body, JSON text


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(slots=True)
class LineOutcome:
    """What running one line gave: an HTTP-like status and body, as the live endpoint would answer."""

    status_code: int
    body: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: dict[str, Any] | None = None  # {"code", "message"} when the line failed
    retryable: bool = False  # 429 / 502 / 503 / 504: worth another attempt
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300
