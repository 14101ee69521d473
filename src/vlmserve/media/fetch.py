"""Fetch: the bytes behind an image URL the client sent, fetched by the server, safely.

- Schemes: `http(s)://` (aiohttp) and `file://` (only under the configured root); `data:` URIs never get here.
- No private targets: the host is resolved with getaddrinfo and *every* resolved address is checked
  (private, loopback, link-local, reserved, multicast, unspecified, non-global; IPv4-mapped IPv6 unwrapped)
  unless the allowlist (CIDRs or host names, each optionally with a port) permits it. The connection then goes
  to exactly the checked addresses (a pinned resolver), so a DNS answer cannot change between check and connect.
- Redirects are followed by hand, up to a cap, and each hop is checked again.
- One timeout for the whole fetch, a byte cap enforced while reading (Content-Length is checked first),
  and a content-type check (image/* or a generic binary type).

Every refusal is a `BadRequest` (400) with a `code` naming the reason; an oversized body is `PayloadTooLarge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from vlmserve.errors import BadRequest, PayloadTooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d+))?")


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"media_fetch_allow entry {entry!r}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def parse_allow_entry(entry: str) -> tuple[IPNetwork | str, int | None]:
    """(network or lower-case host name, port or None for any port) of one media_fetch_allow entry: a CIDR or
    address ("10.0.0.0/8", "::1"), a host name, either with a port ("images.internal:8080", "[::1]:8080").
    An entry that could never match (a URL, a wildcard, a bad port) is a ValueError, so the server won't start."""
    text = entry.strip()
    if "://" in text:
        raise ValueError(f"media_fetch_allow entry {entry!r} is a URL: give its host, or host:port")
    with contextlib.suppress(ValueError):
        return ipaddress.ip_network(text, strict=False), None
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed is not None:
        try:
            network = ipaddress.ip_network(bracketed.group(1), strict=False)
        except ValueError:
            raise ValueError(f"media_fetch_allow entry {entry!r}: {bracketed.group(1)!r} is not an address") from None
        return network, None if bracketed.group(2) is None else _port(bracketed.group(2), entry)
    host, port = text, None
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, entry)
        with contextlib.suppress(ValueError):
            return ipaddress.ip_network(host, strict=False), port
    host = host.lower().rstrip(".")
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(
            f"media_fetch_allow entry {entry!r} can never match a URL's host: use a CIDR (10.0.0.0/8), an "
            "address, a host name, or one of these with a port (images.internal:8080, [::1]:8080)"
        )
    return host, port


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    enabled: bool = True
    # CIDRs ("10.0.0.0/8", "127.0.0.1") or host names ("images.internal"), each optionally with a port
    allow: tuple[str, ...] = ()
    timeout: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    file_root: str | None = None
    user_agent: str = "vlmserve-media-fetch"
    networks: tuple[tuple[IPNetwork, int | None], ...] = field(init=False, default=())
    hosts: frozenset[tuple[str, int | None]] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        networks: list[tuple[IPNetwork, int | None]] = []
        hosts: set[tuple[str, int | None]] = set()
        for entry in self.allow:
            target, port = parse_allow_entry(entry)
            if isinstance(target, str):
                hosts.add((target, port))
            else:
                networks.append((target, port))
        object.__setattr__(self, "networks", tuple(networks))
        object.__setattr__(self, "hosts", frozenset(hosts))


def refused(message: str, field_name: str, code: str = "media_fetch_refused") -> BadRequest:
    return BadRequest(f"{field_name}: {message}", param=field_name, code=code)


def unwrap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return mapped
    return address


def blocked_reason(address: IPAddress) -> str | None:
    """Why fetching from this address is refused by default, or None for a public address."""
    ip = unwrap(address)
    for reason, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata)", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return reason
    return None if ip.is_global else "non-public"


def allowed(policy: FetchPolicy, host: str, address: IPAddress, port: int) -> bool:
    name = host.lower().rstrip(".")
    if (name, None) in policy.hosts or (name, port) in policy.hosts:
        return True
    ips = {address, unwrap(address)}
    return any(
        ip.version == net.version and ip in net and allowed_port in (None, port)
        for ip in ips
        for net, allowed_port in policy.networks
    )


class _PinnedResolver(AbstractResolver):
    """Answers aiohttp's lookup with the addresses that were already checked, nothing else."""

    def __init__(self, host: str, results: list[ResolveResult]) -> None:
        self._host = host
        self._results = results

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self._host:
            raise OSError(f"unexpected host {host}")
        return [{**r, "port": port} for r in self._results]

    async def close(self) -> None:
        return None


async def checked_addresses(policy: FetchPolicy, url: URL, field_name: str) -> list[ResolveResult]:
    host = url.raw_host or ""
    if not host:
        raise refused("the URL has no host", field_name)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise refused(f"cannot resolve host {host!r}", field_name, "media_fetch_failed") from exc
    results: list[ResolveResult] = []
    for family, _, proto, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = blocked_reason(address)
        if reason is not None and not allowed(policy, host, address, port):
            raise refused(
                f"refusing to fetch from {host} ({address} is a {reason} address); "
                "allow it with the media_fetch_allow setting",
                field_name,
            )
        results.append(
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": family,
                "proto": proto,
                "flags": socket.AI_NUMERICHOST,
            }
        )
    if not results:
        raise refused(f"host {host!r} has no address", field_name, "media_fetch_failed")
    return results


def _check_content_type(content_type: str, field_name: str) -> None:
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _GENERIC_TYPES or mime.startswith("image/"):
        return
    raise refused(f"the URL returned {mime!r}, not an image", field_name, "media_fetch_bad_content_type")


async def _read_capped(response: aiohttp.ClientResponse, policy: FetchPolicy, field_name: str) -> bytes:
    length = response.content_length
    if length is not None and length > policy.max_bytes:
        raise PayloadTooLarge(
            f"{field_name}: the image is {length} bytes, limit is {policy.max_bytes}", param=field_name
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > policy.max_bytes:
            raise PayloadTooLarge(
                f"{field_name}: the image is more than {policy.max_bytes} bytes (download cut off)", param=field_name
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _get_http(policy: FetchPolicy, url: URL, field_name: str) -> bytes:
    headers = {"User-Agent": policy.user_agent, "Accept": "image/*", "Accept-Encoding": "identity"}
    for _hop in range(policy.max_redirects + 1):
        if url.scheme not in ("http", "https"):
            raise refused(f"redirect to a {url.scheme or 'relative'}: URL is not followed", field_name)
        results = await checked_addresses(policy, url, field_name)
        connector = aiohttp.TCPConnector(
            resolver=_PinnedResolver(url.raw_host or "", results), use_dns_cache=False, force_close=True
        )
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:  # noqa: SIM117
            async with session.get(url, allow_redirects=False, headers=headers) as response:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise refused(f"redirect (HTTP {response.status}) without a Location", field_name)
                    url = url.join(URL(location))
                    continue
                if response.status != 200:
                    raise refused(
                        f"fetching the image failed with HTTP {response.status}", field_name, "media_fetch_failed"
                    )
                _check_content_type(response.headers.get("Content-Type", ""), field_name)
                return await _read_capped(response, policy, field_name)
    raise refused(f"more than {policy.max_redirects} redirects", field_name, "media_fetch_too_many_redirects")


def _read_file(policy: FetchPolicy, url: URL, field_name: str) -> bytes:
    if not policy.file_root:
        raise refused("file:// URLs are not enabled on this server (set media_file_root)", field_name)
    if url.host not in (None, "", "localhost"):
        raise refused("file:// URLs must name a local path", field_name)
    root = Path(policy.file_root).resolve()
    try:
        path = Path(url.path).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise refused("file not found", field_name, "media_fetch_failed") from exc
    if not path.is_relative_to(root) or not path.is_file():
        raise refused(f"file:// URLs are only served from under {root}", field_name)
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise PayloadTooLarge(f"{field_name}: the file is {size} bytes, limit is {policy.max_bytes}", param=field_name)
    with path.open("rb") as handle:
        return handle.read(policy.max_bytes + 1)[: policy.max_bytes]


async def fetch_bytes(policy: FetchPolicy, raw_url: str, *, field_name: str = "image_url") -> bytes:
    """The bytes behind `raw_url` (http, https or file), or a 4xx error naming why not."""
    try:
        url = URL(raw_url)
    except (ValueError, TypeError) as exc:
        raise refused("not a valid URL", field_name, "invalid_url") from exc
    if url.scheme == "file":
        return await asyncio.to_thread(_read_file, policy, url, field_name)
    if url.scheme not in ("http", "https"):
        raise refused(
            f"unsupported URL scheme {url.scheme!r} (use data:, http(s):// or file://)", field_name, "invalid_url"
        )
    if not policy.enabled:
        raise refused(
            "fetching image URLs is not enabled on this server; send the image as a base64 data URI",
            field_name,
            "image_url_fetch_disabled",
        )
    try:
        async with asyncio.timeout(policy.timeout):
            return await _get_http(policy, url, field_name)
    except TimeoutError as exc:
        raise refused(
            f"fetching the image took longer than {policy.timeout:g}s", field_name, "media_fetch_timeout"
        ) from exc
    except aiohttp.ClientError as exc:
        raise refused(
            f"fetching the image failed ({exc.__class__.__name__})", field_name, "media_fetch_failed"
        ) from exc
