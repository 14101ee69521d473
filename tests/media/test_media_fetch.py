"""URL fetching against a loopback server: allowed fetches work; private targets are refused before connecting."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import media_corpus as corpus
import pytest
from aiohttp import web
from PIL import Image

from vlmserve.errors import BadRequest, PayloadTooLarge
from vlmserve.media.fetch import FetchPolicy, blocked_reason, fetch_bytes

PNG = corpus.encode(Image.new("RGB", (32, 32), "red"), "PNG")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALLOW_LOOPBACK = FetchPolicy(allow=("127.0.0.1/32",), timeout=2.0, max_bytes=100_000)


async def _big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})  # chunked: no Content-Length
    await response.prepare(request)
    for _ in range(100):
        await response.write(bytes(64 * 1024))
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)
    return web.Response(body=PNG, content_type="image/png")


def reply(**kwargs: object) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(**kwargs)  # type: ignore[arg-type]

    return handler


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/img.png", reply(body=PNG, content_type="image/png"))
    app.router.add_get("/no-type", reply(body=PNG, headers={"Content-Type": ""}))
    app.router.add_get("/page", reply(text="<html></html>", content_type="text/html"))
    app.router.add_get("/big-declared", reply(body=bytes(200_000), content_type="image/png"))
    app.router.add_get("/big", _big)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/missing", reply(status=404))
    app.router.add_get("/to-img", reply(status=302, headers={"Location": "/img.png"}))
    app.router.add_get("/to-private", reply(status=302, headers={"Location": "http://10.0.0.7/x"}))
    app.router.add_get("/to-metadata", reply(status=301, headers={"Location": "http://169.254.169.254/latest/"}))
    app.router.add_get("/to-file", reply(status=302, headers={"Location": "file:///etc/passwd"}))
    app.router.add_get("/loop", reply(status=307, headers={"Location": "/loop"}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_allowed_fetch_works(origin: str) -> None:
    assert await fetch_bytes(ALLOW_LOOPBACK, origin + "/img.png") == PNG
    assert await fetch_bytes(ALLOW_LOOPBACK, origin + "/no-type") == PNG
    assert await fetch_bytes(ALLOW_LOOPBACK, origin + "/to-img") == PNG  # redirect re-checked and followed


async def test_loopback_refused_without_allowlist(origin: str) -> None:
    with pytest.raises(BadRequest, match="loopback") as info:
        await fetch_bytes(FetchPolicy(), origin + "/img.png", field_name="messages[0].content[1].image_url")
    assert info.value.code == "media_fetch_refused" and info.value.param == "messages[0].content[1].image_url"
    port = origin.rsplit(":", 1)[1]
    for url in (f"http://localhost:{port}/img.png", f"http://[::ffff:127.0.0.1]:{port}/img.png"):
        with pytest.raises(BadRequest, match="loopback"):
            await fetch_bytes(FetchPolicy(), url)


@pytest.mark.parametrize(
    "url,reason",
    [
        ("http://10.1.2.3/cat.png", "private"),
        ("http://192.168.0.1/cat.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/x.png", "link-local"),
        ("http://0.0.0.0/x.png", "unspecified"),
        ("http://100.64.0.1/x.png", "non-public"),
    ],
)
async def test_private_targets_refused_before_connecting(url: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        await fetch_bytes(ALLOW_LOOPBACK, url)


async def test_redirects_to_private_addresses_refused(origin: str) -> None:
    with pytest.raises(BadRequest, match="private"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/to-private")
    with pytest.raises(BadRequest, match="link-local"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/to-metadata")
    with pytest.raises(BadRequest, match="file: URL is not followed"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/to-file")
    with pytest.raises(BadRequest, match="redirects") as info:
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/loop")
    assert info.value.code == "media_fetch_too_many_redirects"


async def test_oversize_cut_off(origin: str) -> None:
    with pytest.raises(PayloadTooLarge, match="200000 bytes"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/big-declared")
    with pytest.raises(PayloadTooLarge, match="cut off"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/big")


async def test_timeout_type_and_status_errors(origin: str) -> None:
    quick = FetchPolicy(allow=("127.0.0.1",), timeout=0.3)
    with pytest.raises(BadRequest, match=r"longer than 0\.3s") as info:
        await fetch_bytes(quick, origin + "/slow")
    assert info.value.code == "media_fetch_timeout"
    with pytest.raises(BadRequest, match="text/html"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/page")
    with pytest.raises(BadRequest, match="HTTP 404"):
        await fetch_bytes(ALLOW_LOOPBACK, origin + "/missing")
    with pytest.raises(BadRequest, match="not enabled"):
        await fetch_bytes(FetchPolicy(enabled=False, allow=("127.0.0.1",)), origin + "/img.png")
    with pytest.raises(BadRequest, match="scheme"):
        await fetch_bytes(ALLOW_LOOPBACK, "ftp://127.0.0.1/x.png")


async def test_allowlist_by_host_name(origin: str) -> None:
    port = origin.rsplit(":", 1)[1]
    policy = FetchPolicy(allow=("localhost",), timeout=2.0)
    try:
        assert await fetch_bytes(policy, f"http://localhost:{port}/img.png") == PNG
    except BadRequest as exc:  # a host whose localhost resolves to ::1 only cannot reach a 127.0.0.1 server
        assert exc.code == "media_fetch_failed"


async def test_file_urls_only_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path.parent / "outside.png").write_bytes(PNG)
    policy = FetchPolicy(file_root=str(tmp_path))
    assert await fetch_bytes(policy, f"file://{tmp_path}/a.png") == PNG
    with pytest.raises(BadRequest, match="only served from under"):
        await fetch_bytes(policy, f"file://{tmp_path}/../outside.png")
    with pytest.raises(BadRequest, match="not enabled"):
        await fetch_bytes(FetchPolicy(), f"file://{tmp_path}/a.png")
    with pytest.raises(BadRequest, match="not found"):
        await fetch_bytes(policy, f"file://{tmp_path}/missing.png")


def test_blocked_reason_table() -> None:
    assert blocked_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert blocked_reason(ipaddress.ip_address("2606:4700::1111")) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1")) == "private"
    assert blocked_reason(ipaddress.ip_address("::1")) == "loopback"
    assert blocked_reason(ipaddress.ip_address("224.0.0.1")) == "multicast"
    assert blocked_reason(ipaddress.ip_address("fd00::1")) == "private"
