"""API keys: `vs-` + a random secret, stored only as its sha256; scopes inference / batch / admin; an optional
model allowlist and per-key limits. `KeyStore` holds them in the batch database (table vlm_api_keys);
`KeyRing` is the in-memory view the gateway reads on every request (a dict lookup: no I/O on the hot path).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from vlmserve.config import Settings, StaticApiKey
from vlmserve.jobs import queries as q
from vlmserve.jobs.db import Driver, Row

log = logging.getLogger("vlmserve.keys")
SCOPES = ("inference", "batch", "admin")
SECRET_PREFIX = "vs-"
LIMIT_MAX = 2**63 - 1  # rpm / tpm / concurrency are BIGINT columns: a larger number overflows the driver


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[str]
    models: frozenset[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    prefix: str = ""
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What the admin API and the CLI show (never the secret or its hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": sorted(self.scopes),
            "models": None if self.models is None else sorted(self.models),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "concurrency": self.concurrency,
            "created_at": int(self.created_at),
            "revoked_at": None if self.revoked_at is None else int(self.revoked_at),
        }


def _from_row(row: Row) -> ApiKey:
    models = orjson.loads(row["models"]) if row["models"] else None
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=frozenset(orjson.loads(row["scopes"])),
        models=None if models is None else frozenset(models),
        rpm=row["rpm"],
        tpm=row["tpm"],
        concurrency=row["concurrency"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def static_key(entry: str | StaticApiKey) -> tuple[str, ApiKey]:
    """(hash, key) of a key from the config file."""
    spec = StaticApiKey(key=entry) if isinstance(entry, str) else entry
    digest = hash_secret(spec.key)
    key = ApiKey(
        id=spec.id or f"static-{digest[:10]}",
        name="config",
        scopes=frozenset(spec.scopes),
        models=None if spec.models is None else frozenset(spec.models),
        rpm=spec.rpm,
        tpm=spec.tpm,
        concurrency=spec.concurrency,
        prefix=spec.key[:6],
    )
    return digest, key


class KeyStore:
    """The vlm_api_keys table (migration 2), on either database driver."""

    def __init__(self, db: Driver) -> None:
        self.db = db

    async def create(
        self,
        *,
        name: str = "",
        scopes: list[str],
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        concurrency: int | None = None,
    ) -> tuple[str, ApiKey]:
        """(secret, key): the secret is shown to the caller once and stored only hashed."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(f"scopes must be some of {', '.join(SCOPES)} (got {', '.join(unknown) or 'none'})")
        for limit, value in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency)):
            if value is not None and not 0 <= value <= LIMIT_MAX:
                raise ValueError(f"{limit} must be between 0 and {LIMIT_MAX} (got {value})")
        secret = new_secret()
        key = ApiKey(
            id=f"key_{uuid.uuid4().hex[:16]}",
            name=name,
            scopes=frozenset(scopes),
            models=None if models is None else frozenset(models),
            rpm=rpm,
            tpm=tpm,
            concurrency=concurrency,
            prefix=secret[:7],
        )
        await self.db.execute(
            q.KEY_INSERT,
            key.id,
            name,
            hash_secret(secret),
            key.prefix,
            orjson.dumps(sorted(key.scopes)).decode(),
            None if models is None else orjson.dumps(sorted(models)).decode(),
            rpm,
            tpm,
            concurrency,
            key.created_at,
        )
        return secret, key

    async def list(self, include_revoked: bool = False) -> list[ApiKey]:
        rows = await self.db.fetch(q.KEYS_LIST if include_revoked else q.KEYS_LIST_ACTIVE)
        return [_from_row(r) for r in rows]

    async def revoke(self, key_id: str) -> bool:
        changed = await self.db.execute(q.KEY_REVOKE, time.time(), key_id)
        return changed > 0

    async def delete_all(self) -> int:
        """Forget every key, revoked ones too: the only way back to a server without authentication."""
        return await self.db.execute(q.KEYS_DELETE)

    async def active_by_hash(self) -> tuple[dict[str, ApiKey], bool]:
        """(hash -> key of the active keys, whether any key was ever created)."""
        rows = await self.db.fetch(q.KEYS_ALL)
        return {r["hash"]: _from_row(r) for r in rows if r["revoked_at"] is None}, bool(rows)


class KeyRing:
    """The keys the gateway checks, in memory: static ones from the config plus the database's, reloaded every
    `refresh_interval` seconds (revocations on other replicas or by the CLI take effect within it) and at most
    once a second on an unknown secret (a key just created elsewhere works at once)."""

    def __init__(self, settings: Settings, store: KeyStore | None) -> None:
        self.store = store
        self.static = dict(static_key(entry) for entry in settings.api_keys)
        self.refresh_interval = settings.key_refresh_interval
        self._db_keys: dict[str, ApiKey] = {}
        self._db_ever = False
        self._last_refresh = 0.0
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Keys are required once any exists (a revoked one counts: revoking the last key never opens up)."""
        return bool(self.static) or self._db_ever

    async def refresh(self) -> None:
        if self.store is None:
            return
        self._last_refresh = time.monotonic()
        self._db_keys, self._db_ever = await self.store.active_by_hash()

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.refresh_interval)
                try:
                    await self.refresh()
                except Exception as exc:  # keep the last good view
                    log.warning("reloading API keys failed: %s", exc)

        self._task = asyncio.create_task(loop(), name="vlmserve-keyring")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def remember(self, secret: str, key: ApiKey) -> None:
        self._db_keys[hash_secret(secret)] = key
        self._db_ever = True

    def forget(self, key_id: str) -> None:
        self._db_keys = {h: k for h, k in self._db_keys.items() if k.id != key_id}

    async def lookup(self, secret: str) -> ApiKey | None:
        digest = hash_secret(secret)
        key = self.static.get(digest) or self._db_keys.get(digest)
        if key is not None or self.store is None or time.monotonic() - self._last_refresh < 1.0:
            return key
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        await asyncio.shield(self._refreshing)
        return self._db_keys.get(digest)
