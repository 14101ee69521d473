"""API keys, server-level: every non-exempt route refuses a request without a key (in its surface's error
shape), scopes and model allowlists give 403, keys made by the admin API and the CLI work and can be revoked,
a non-loopback host without keys refuses to start, and X-Request-ID travels through responses and logs."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_upstreams import FakeUpstream
from fastapi.routing import APIRoute
from server_process import ServerProcess, running_server
from starlette.routing import Route

from vlmserve.api.app import create_app
from vlmserve.config import load_settings
from vlmserve.security.guard import is_exempt

ADMIN = "vs-test-admin-secret"
INFER = "vs-test-inference-secret"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _models(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [{"name": name, "engine": "openai", "url": upstream.url, "remote_model": "fake"} for name in ("m1", "m2")]


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("auth-data")
    config = {
        "embedded_models": False,
        "data_dir": str(data_dir),
        "key_refresh_interval": 0.3,
        "models": _models(upstream),
        "api_keys": [ADMIN, {"key": INFER, "id": "static-infer", "scopes": ["inference"], "models": ["m1"]}],
    }
    with running_server(config) as proc:
        yield proc


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _flatten(routes: list[Any], prefix: str = "") -> Iterator[Route]:
    for route in routes:
        if isinstance(route, APIRoute | Route):
            yield route if not prefix else Route(prefix + route.path, route.endpoint, methods=list(route.methods or ()))
        else:  # an included router (FastAPI keeps it as one entry of app.routes)
            yield from _flatten(route.original_router.routes, prefix + route.include_context.prefix)


def _routes() -> list[tuple[str, str]]:
    """(method, path with parameters filled) of every route of the app."""
    found = []
    for route in _flatten(create_app(load_settings(None, embedded_models=False)).routes):
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((method, re.sub(r"\{[^}]+\}", "x", route.path)))
    return found


def test_every_route_needs_a_key(server: ServerProcess) -> None:
    routes = _routes()
    paths = {path for _, path in routes}
    assert {"/v1/chat/completions", "/api/chat", "/admin/keys", "/metrics", "/v1/batches", "/job/x"} <= paths
    assert {"/ui", "/ui/status", "/ui/static/app.js", "/admin/status"} <= paths  # UI public, its data is not
    checked = 0
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path in routes:
            response = http.request(method, path, json={})
            if is_exempt(path):  # liveness, docs, and the browser UI's static pages and assets
                assert response.status_code == 200, (method, path, response.text)
                continue
            assert response.status_code == 401, (method, path, response.status_code, response.text)
            bad = http.request(method, path, json={}, headers=_auth("vs-wrong"))
            assert bad.status_code == 401, (method, path)
            error = response.json()["error"]
            if path.startswith("/v1/messages"):  # Anthropic's shape
                assert response.json()["type"] == "error" and error["type"] == "authentication_error"
            elif path.startswith("/v1/"):
                assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
            elif path.startswith("/api/"):
                assert isinstance(error, str) and "API key" in error
            checked += 1
    assert checked >= 30
    assert INFER not in server.log() and ADMIN not in server.log()


def test_scopes_and_model_allowlist(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ok = http.post("/v1/chat/completions", json=_chat("m1"), headers=_auth(INFER))
        assert ok.status_code == 200, ok.text
        other = http.post("/v1/chat/completions", json=_chat("m2"), headers=_auth(INFER))
        assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
        ollama = http.post("/api/chat", json={**_chat("m2"), "stream": False}, headers=_auth(INFER))
        assert ollama.status_code == 403 and "m2" in ollama.json()["error"]
        for method, path in (("GET", "/admin/models"), ("GET", "/v1/files"), ("GET", "/metrics")):
            denied = http.request(method, path, headers=_auth(INFER))
            assert denied.status_code == 403, (path, denied.text)
        assert http.get("/admin/models", headers=_auth(ADMIN)).status_code == 200
        assert http.post("/v1/chat/completions", json=_chat("m2"), headers=_auth(ADMIN)).status_code == 200


def test_admin_api_keys_lifecycle(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        made = http.post("/admin/keys", json={"name": "ci", "scopes": ["inference", "batch"], "models": ["m2"]},
                         headers=_auth(ADMIN))  # fmt: skip
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["key"].startswith("vs-") and key["scopes"] == ["batch", "inference"]
        assert http.post("/v1/chat/completions", json=_chat("m2"), headers=_auth(key["key"])).status_code == 200
        assert http.get("/v1/batches", headers=_auth(key["key"])).status_code == 200
        listed = http.get("/admin/keys", headers=_auth(ADMIN)).json()["data"]
        assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0] and "hash" not in listed[0]
        revoked = http.delete(f"/admin/keys/{key['id']}", headers=_auth(ADMIN))
        assert revoked.json() == {"id": key["id"], "revoked": True}
        assert http.get("/v1/models", headers=_auth(key["key"])).status_code == 401
        assert http.delete(f"/admin/keys/{key['id']}", headers=_auth(ADMIN)).status_code == 404
    assert key["key"] not in server.log()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmserve", "keys", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_cli_keys_reach_a_running_server(server: ServerProcess, tmp_path: Path) -> None:
    data_dir = re.search(r"data_dir: (.+)", (server.log_path.parent / "config.yaml").read_text())
    assert data_dir is not None
    where = ["--data-dir", data_dir.group(1).strip()]
    created = _cli(*where, "create", "--scope", "inference", "--model", "m1", "--name", "cli", "--rpm", "100")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("vs-") and len(secret) > 30
    key_id = re.search(r"created (key_\w+)", created.stderr)
    assert key_id is not None
    listing = _cli(*where, "list")
    assert key_id.group(1) in listing.stdout and secret not in listing.stdout and "models=m1" in listing.stdout
    db = Path(data_dir.group(1).strip()) / "vlmserve.db"
    assert secret.encode() not in db.read_bytes()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("SELECT hash FROM vlm_api_keys WHERE id = ?", (key_id.group(1),)).fetchone()
    assert len(stored) == 64
    answer = httpx.post(server.url + "/v1/chat/completions", json=_chat("m1"), headers=_auth(secret), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-ratelimit-limit-requests"] == "100"
    assert _cli(*where, "revoke", key_id.group(1)).returncode == 0
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/v1/models", headers=_auth(secret)).status_code != 401:
        assert time.monotonic() < deadline, "revocation by the CLI never reached the server"
        time.sleep(0.1)


def test_cli_keys_reset_is_the_way_back_to_no_keys(tmp_path: Path) -> None:
    where = ["--data-dir", str(tmp_path)]
    created = _cli(*where, "create", "--name", "only")
    assert created.returncode == 0, created.stderr
    key_id = re.search(r"created (key_\w+)", created.stderr)
    assert key_id is not None and _cli(*where, "revoke", key_id.group(1)).returncode == 0
    with running_server({"data_dir": str(tmp_path), "key_refresh_interval": 1, "embedded_models": False}) as locked:
        assert httpx.get(locked.url + "/v1/models").status_code == 401  # a revoked last key still locks it
        refused = _cli(*where, "reset")
        assert refused.returncode == 2 and "--yes" in refused.stderr
        assert httpx.get(locked.url + "/v1/models").status_code == 401
        done = _cli(*where, "reset", "--yes")
        assert done.returncode == 0 and "deleted 1 keys" in done.stdout, done.stderr
        deadline = time.monotonic() + 15
        while httpx.get(locked.url + "/v1/models").status_code != 200:
            assert time.monotonic() < deadline, "the reset never reached the running server"
            time.sleep(0.1)


def test_request_id_echoed_and_logged(server: ServerProcess) -> None:
    given = httpx.get(server.url + "/v1/models", headers={"X-Request-ID": "trace-abc-123"})
    assert given.status_code == 401 and given.headers["x-request-id"] == "trace-abc-123"
    made = httpx.get(server.url + "/health")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    deadline = time.monotonic() + 5
    while "[trace-abc-123]" not in server.log():
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.05)
    line = next(line for line in server.log().splitlines() if "[trace-abc-123]" in line)
    assert "/v1/models -> 401" in line


def test_non_loopback_host_needs_keys(upstream: FakeUpstream) -> None:
    config: dict[str, Any] = {"embedded_models": False, "host": "0.0.0.0", "models": _models(upstream)}
    with pytest.raises(RuntimeError, match=r"refusing to serve 0\.0\.0\.0 without API keys"), running_server(config):
        pass
    with running_server({**config, "allow_unauthenticated": True}) as open_server:
        assert httpx.get(open_server.url + "/v1/models").status_code == 200


def test_the_key_id_is_the_scheduler_client() -> None:
    from starlette.requests import Request

    from vlmserve.api.state import client_of
    from vlmserve.context import RequestContext, current

    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions",
                       "headers": [(b"x-client-id", b"header-client")]})  # fmt: skip
    assert client_of(request, "body-user") == "header-client"
    reset = current.set(RequestContext("rid", "openai", 0, key_id="key_abc"))
    try:
        assert client_of(request, "body-user") == "key_abc"
    finally:
        current.reset(reset)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_key_store_on_both_databases(backend: str, tmp_path: Path) -> None:
    from batch_helpers import POSTGRES_DSN, fresh_schema

    from vlmserve.jobs.db import open_driver
    from vlmserve.security.keys import KeyStore, hash_secret

    if backend == "postgres" and not POSTGRES_DSN:
        pytest.skip("VLMSERVE_TEST_POSTGRES_DSN is not set")
    schema = fresh_schema() if backend == "postgres" else None
    driver = await open_driver(POSTGRES_DSN if backend == "postgres" else None, tmp_path, schema)
    try:
        store = KeyStore(driver)
        assert await store.active_by_hash() == ({}, False)
        secret, key = await store.create(name="x", scopes=["batch", "inference"], models=["m1"], rpm=7)
        active, ever = await store.active_by_hash()
        assert ever and active == {hash_secret(secret): key}
        with pytest.raises(ValueError, match="scopes"):
            await store.create(scopes=["root"])
        assert await store.revoke(key.id) and not await store.revoke(key.id)
        assert await store.active_by_hash() == ({}, True)
        assert [k.id for k in await store.list(include_revoked=True)] == [key.id] and await store.list() == []
    finally:
        await driver.close()
        if schema is not None and POSTGRES_DSN:
            import asyncpg

            conn = await asyncpg.connect(POSTGRES_DSN)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
