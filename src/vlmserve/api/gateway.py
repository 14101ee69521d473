"""The outermost ASGI layer: request ids, API keys, per-key rate limits and request metrics.

Per request: a RequestContext in a context var (the services note model, tokens, first token on it), the
X-Request-ID header taken or made and returned on every response, then for non-exempt paths the Bearer key
(401 missing/unknown, 403 wrong scope) and its limits (429 + Retry-After + x-ratelimit-* headers). No lock is
held across an await; the key lookup is a dict get (see KeyRing). A client that hangs up before its answer is
complete (a disconnect seen, or a send that fails) is logged and counted as 499, never as a server error.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vlmserve.api.state import AppState
from vlmserve.api.surfaces import surface_of
from vlmserve.context import RequestContext, current
from vlmserve.errors import AuthenticationFailed, PermissionDenied, RateLimited, VlmServeError
from vlmserve.logs import RequestIdFilter as RequestIdFilter  # re-exported: the serve command used it
from vlmserve.security.guard import Security, is_exempt, scope_of
from vlmserve.security.keys import ApiKey, KeyRing, KeyStore
from vlmserve.security.ratelimit import Limits, build_limiter

log = logging.getLogger("vlmserve.access")
ANONYMOUS = "anonymous"
_ID_PREFIX = secrets.token_hex(8)  # request ids: random per process + a counter (no syscall per request)
_ID_COUNTER = itertools.count(1)
CLIENT_CLOSED = 499  # nginx's "client closed request": the client hung up before the answer was complete


def _request_id(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(X-Request-ID, API key) from the raw headers: the key is `Authorization: Bearer <key>`, or Anthropic's
    `x-api-key: <key>` (the Bearer one when a request sends both)."""
    rid = token = api_key = None
    for key, value in headers:
        if key == b"x-request-id" and 0 < len(value) <= 200 and value.isascii():
            rid = value.decode()
        elif key == b"authorization" and value[:7].lower() == b"bearer ":
            token = value[7:].strip().decode("latin-1")
        elif key == b"x-api-key":
            api_key = value.strip().decode("latin-1") or None
    return rid, token or api_key


class Gateway:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def _guard(
        self, security: Security, ctx: RequestContext, path: str, token: str | None, ticket: str
    ) -> tuple[VlmServeError | None, str | None, Limits, list[tuple[bytes, bytes]]]:
        """(refusal, limiter key once counted, limits, x-ratelimit headers) of a non-exempt request."""
        key: ApiKey | None = None
        if security.keys.enabled:
            key = await security.keys.lookup(token) if token else None
            if key is None:
                message = "invalid API key" if token else "missing API key: send Authorization: Bearer <key>"
                return AuthenticationFailed(message), None, Limits(), []
            needed = scope_of(path)
            if needed not in key.scopes:
                denied = PermissionDenied(f"this API key lacks the '{needed}' scope", code="scope_denied")
                return denied, None, Limits(), []
            ctx.key_id = key.id
            ctx.models = key.models
        limits = security.limits_of(key)
        if not limits.any:
            return None, None, limits, []
        limiter_key = key.id if key is not None else ANONYMOUS
        decision = await security.limiter.acquire(limiter_key, limits, ticket)
        headers = decision.headers(limits)
        if not decision.allowed:
            limited = RateLimited(f"rate limit reached: {decision.reason} per minute of this key"
                                  if decision.reason != "concurrency" else "rate limit reached: requests in flight",
                                  retry_after=decision.retry_after, code=f"rate_limit_{decision.reason}")  # fmt: skip
            return limited, None, limits, headers
        return None, limiter_key, limits, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        rid, token = _request_id(scope["headers"])
        ticket = f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"  # unique across replicas, unlike a client's request id
        surface = surface_of(path)
        ctx = RequestContext(rid or ticket, surface.name, time.perf_counter_ns())
        reset = current.set(ctx)
        extra = [(b"x-request-id", ctx.request_id.encode())]
        status = 500
        answered = client_gone = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, answered, client_gone
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            try:
                await send(message)
            except OSError:  # the server's send after the client went away (ClientDisconnected)
                client_gone = True
                raise
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True

        async def watched_receive() -> Message:
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone = True
            return message

        state = getattr(scope["app"].state, "vlm", None) if "app" in scope else None
        security: Security | None = getattr(state, "security", None)
        limiter_key: str | None = None
        limits = Limits()
        refusal: VlmServeError | None = None
        try:
            if security is not None and not is_exempt(path):
                try:
                    refusal, limiter_key, limits, headers = await self._guard(security, ctx, path, token, ticket)
                    extra.extend(headers)
                except VlmServeError as exc:  # the limiter's store is unreachable (503)
                    refusal = exc
            if refusal is not None:
                await surface.errors(refusal)(scope, watched_receive, send_with_headers)
            else:
                await self.app(scope, watched_receive, send_with_headers)
        finally:
            if client_gone and not answered:
                status = CLIENT_CLOSED  # a hang-up is not a server error, whatever was (or was not) sent
            if state is None or state.settings.access_log:
                _access_log(scope, ctx, status)
            current.reset(reset)
            if security is not None and limiter_key is not None:
                await security.limiter.release(limiter_key, limits, ctx.tokens_in + ctx.tokens_out, ticket)
            if state is not None:
                end_ns = time.perf_counter_ns()
                state.metrics.observe(ctx, status, end_ns)
                state.metrics.remember(ctx, scope["method"], path, status, end_ns)
                if ctx.error_type is not None:
                    state.metrics.engine_errors.labels(ctx.error_type).inc()
                if isinstance(refusal, RateLimited):
                    state.metrics.rate_limited.labels(refusal.code or "").inc()


def _access_log(scope: Scope, ctx: RequestContext, status: int) -> None:
    """One record per request: method, path (no query string: it may hold secrets), status, duration, model and
    key id; never bodies or the key itself. Liveness/docs paths only at debug level."""
    level = logging.DEBUG if is_exempt(scope["path"]) else logging.INFO
    if not log.isEnabledFor(level):
        return
    duration_ms = round((time.perf_counter_ns() - ctx.started_ns) / 1e6, 2)
    client = scope.get("client")
    fields = {"method": scope["method"], "path": scope["path"], "status": status, "duration_ms": duration_ms,
              "model": ctx.model or None, "key_id": ctx.key_id, "surface": ctx.surface,
              "client": client[0] if client else None, "request_id": ctx.request_id}  # fmt: skip
    log.log(level, "%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, duration_ms, extra=fields)


async def open_security(state: AppState) -> Security:
    """Build the key ring (config keys + the batch database's table), the limiter, and check the start rule."""
    s = state.settings
    store = KeyStore(state.jobs.store.db) if state.jobs is not None else None
    ring = KeyRing(s, store)
    await ring.refresh()
    Security.check_start(s, ring)
    ring.start()
    limiter = build_limiter(s.redis_url)
    defaults = Limits(s.rate_limit_rpm, s.rate_limit_tpm, s.rate_limit_concurrency)
    security = Security(ring, store, limiter, defaults)
    log.info("API keys %s; rate limits %s", "required" if ring.enabled else "off (no key configured)",
             f"in {'Redis' if s.redis_url else 'process'}" if defaults.any or ring.enabled else "off")  # fmt: skip
    return security
