"""The one exception tree of vlmserve.

Every failure a client can see is raised as a subclass of `VlmServeError`; each surface maps it to its
own wire format exactly once (api/openai/errors.py, api/ollama/errors.py). `status` is the HTTP status,
`type` the OpenAI error type and the label of failure metrics. `details` is an optional second line for the
surfaces whose error shape has one (the multi-model server's `{"error", "details"}`).

    VlmServeError (500 server_error)
    ├── BadRequest (400 invalid_request_error)
    │   ├── UnsupportedCapability (400)   model cannot do what was asked (image to a text-only model)
    │   └── InvalidMedia (400)            image bytes that are not a supported, intact image
    ├── AuthenticationFailed (401 authentication_error)  missing or unknown API key
    ├── PermissionDenied (403 permission_error)  the key lacks the route's scope or the model
    ├── NotFound (404 not_found_error)    a file, batch, job, key or route that does not exist
    │   └── ModelNotFound (404)
    ├── Conflict (409 invalid_request_error)  the object's state does not allow it (cancel a finished batch)
    ├── PayloadTooLarge (413 invalid_request_error)
    ├── Overloaded (429 rate_limit_error)  queue full; carries retry_after seconds
    ├── RateLimited (429 rate_limit_error)  the API key's requests/tokens per minute or concurrency
    ├── InsufficientMemory (507 insufficient_memory)  the model can never fit in the memory budget
    ├── Unavailable (503 service_unavailable)  temporarily cannot serve; carries retry_after
    ├── EngineError (502 engine_error)    the engine failed or crashed mid-request
    └── EngineTimeout (504 engine_timeout)
"""

from __future__ import annotations


class VlmServeError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    details: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(VlmServeError):
    status = 400
    type = "invalid_request_error"


class UnsupportedCapability(BadRequest):
    code = "unsupported_capability"


class InvalidMedia(BadRequest):
    code = "invalid_image"


class AuthenticationFailed(VlmServeError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(VlmServeError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(VlmServeError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(VlmServeError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(VlmServeError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class _RetryableError(VlmServeError):
    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Overloaded(_RetryableError):
    status = 429
    type = "rate_limit_error"
    code = "overloaded"


class RateLimited(_RetryableError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Unavailable(_RetryableError):
    status = 503
    type = "service_unavailable"
    code = "unavailable"


class InsufficientMemory(VlmServeError):
    status = 507
    type = "insufficient_memory"
    code = "model_too_large"


class EngineError(VlmServeError):
    status = 502
    type = "engine_error"
    code = "engine_error"


class EngineTimeout(VlmServeError):
    status = 504
    type = "engine_timeout"
    code = "engine_timeout"


def retry_after_of(exc: VlmServeError) -> float | None:
    return exc.retry_after if isinstance(exc, _RetryableError) else None
