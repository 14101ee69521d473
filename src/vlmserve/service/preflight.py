"""Catalog checks at start: model files that are not there, remote hosts that do not accept a connection.

A config with such a model still starts (the other models serve, and a remote engine may come up later), but it
says so at once: one WARNING log line per problem when the server starts, and the same words in `/health`'s
`warnings` while the problem lasts, instead of only in the first request's error. Remote hosts are checked with a
plain TCP connect (no request reaches the engine, no replica state changes); `/health` probes the engines
themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from vlmserve.backends.pool import public_url
from vlmserve.domain.spec import ModelSpec

log = logging.getLogger("vlmserve.catalog")
CONNECT_TIMEOUT = 3.0  # seconds; the checks run beside start-up and never hold it up


def missing_files(spec: ModelSpec) -> list[str]:
    """'model m: path /x not found' for each of the model's files (path, mmproj, tokenizer, draft) that is not there."""
    named = {"path": spec.path, "mmproj": spec.mmproj, "tokenizer": spec.tokenizer, "draft_model": spec.draft_model}
    return [f"model {spec.name!r}: {field} {value} not found" for field, value in named.items()
            if value and not os.path.exists(value)]  # fmt: skip


def host_of(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def connect_problem(address: tuple[str, int] | None, limit_seconds: float = CONNECT_TIMEOUT) -> str | None:
    """None when `address` (host, port) accepts a TCP connection, else why not (in a few words)."""
    if address is None:
        return "has no host"
    try:
        async with asyncio.timeout(limit_seconds):
            _, writer = await asyncio.open_connection(*address)
    except TimeoutError:
        return f"did not accept a connection within {limit_seconds:g} s"
    except OSError as exc:  # refused, no route, no such host (gaierror's errno is negative)
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or type(exc).__name__
        return f"is not reachable ({reason})"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def catalog_problems(specs: Iterable[ModelSpec]) -> list[str]:
    """Every model's missing files, then every remote URL that takes no connection, in catalog order (each
    host:port is connected to once, however many models share it)."""
    specs = list(specs)
    found = [problem for spec in specs if spec.is_local for problem in missing_files(spec)]
    remote = [(spec, url) for spec in specs if not spec.is_local for url in spec.urls]
    addresses = list(dict.fromkeys(host_of(url) for _, url in remote))
    answers = dict(zip(addresses, await asyncio.gather(*(connect_problem(a) for a in addresses)), strict=True))
    for spec, url in remote:
        if (problem := answers[host_of(url)]) is not None:
            found.append(f"model {spec.name!r}: {public_url(url)} {problem}")
    return found


async def warn_at_start(specs: Iterable[ModelSpec]) -> list[str]:
    """Log one WARNING per problem of the catalog; return the problems."""
    problems = await catalog_problems(specs)
    for problem in problems:
        log.warning("config check: %s", problem)
    return problems
