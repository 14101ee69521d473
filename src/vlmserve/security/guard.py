"""What the gateway asks of the security layer: which scope a path needs, whether it is open to all, and the
limits of a key. `Security` bundles the key ring, the key table and the limiter built at start-up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from vlmserve.config import Settings
from vlmserve.security.keys import ApiKey, KeyRing, KeyStore
from vlmserve.security.ratelimit import Limiter, Limits

# no key needed: liveness, readiness, version and API docs
EXEMPT = frozenset(
    {"/", "/health", "/api/health", "/api/version", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
_BATCH_PREFIXES = ("/v1/files", "/v1/batches", "/analyze/async", "/job/")
# Ollama's model management changes the catalog and writes to disk: admin, as /admin/... is
_ADMIN_PATHS = frozenset({"/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push"})


def is_exempt(path: str) -> bool:
    """Open to all: EXEMPT, and the browser UI's pages and assets under /ui (static files that hold no data; the
    pages send the user's key with each API call they make)."""
    return path in EXEMPT or path == "/ui" or path.startswith("/ui/")


def scope_of(path: str) -> str:
    if path.startswith(("/admin/", "/api/blobs/")) or path in ("/admin", "/metrics") or path in _ADMIN_PATHS:
        return "admin"
    if path.startswith(_BATCH_PREFIXES):
        return "batch"
    return "inference"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Security:
    keys: KeyRing
    store: KeyStore | None
    limiter: Limiter
    defaults: Limits

    @classmethod
    def check_start(cls, settings: Settings, keys: KeyRing) -> None:
        """Refuse to serve a non-loopback address with no API key, unless explicitly allowed."""
        if not is_loopback(settings.host) and not keys.enabled and not settings.allow_unauthenticated:
            raise RuntimeError(
                f"refusing to serve {settings.host} without API keys: create one (`vlmserve keys create`), "
                "set api_keys, or set allow_unauthenticated: true"
            )

    def limits_of(self, key: ApiKey | None) -> Limits:
        if key is None:
            return self.defaults
        d = self.defaults
        return Limits(
            rpm=d.rpm if key.rpm is None else key.rpm,
            tpm=d.tpm if key.tpm is None else key.tpm,
            concurrency=d.concurrency if key.concurrency is None else key.concurrency,
        )

    async def close(self) -> None:
        await self.keys.close()
        await self.limiter.close()
