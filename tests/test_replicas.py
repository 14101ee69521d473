"""Two replicas, server-level: two vlmserve processes on one PostgreSQL schema and one Redis share files,
batches, API keys and rate limits, and both serve live requests; nginx (docs/nginx.conf, run for real when
installed) spreads requests over both and streams tokens through as they come.

Needs VLMSERVE_TEST_POSTGRES_DSN and VLMSERVE_TEST_REDIS_URL (skips without them); the nginx test also needs an
`nginx` binary (`apt-get install nginx-light`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from batch_helpers import POSTGRES_DSN, chat_line, drop_schema, fresh_schema, jsonl, output_lines, wait_batch
from fake_upstreams import Behaviour, FakeUpstream
from openai import OpenAI
from server_process import ServerProcess, free_port, running_server

REDIS_URL = os.environ.get("VLMSERVE_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(
    not (POSTGRES_DSN and REDIS_URL), reason="VLMSERVE_TEST_POSTGRES_DSN and VLMSERVE_TEST_REDIS_URL are not set"
)
RUN = uuid.uuid4().hex[:8]  # key ids name the Redis counters: unique per run
ADMIN = f"vs-test-replicas-admin-{RUN}"
LIMITED = [f"vs-test-replicas-rpm-{RUN}-{n}" for n in range(2)]  # a second for an attempt a minute cut in two
RPM = 4
NGINX_CONF = Path(__file__).parent.parent / "docs" / "nginx.conf"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    assert POSTGRES_DSN and REDIS_URL
    schema = fresh_schema()
    with FakeUpstream() as fast, FakeUpstream(Behaviour(tokens=6, token_delay=0.3)) as slow:
        models = [{"name": "fast", "engine": "openai", "url": fast.url, "remote_model": "fake"},
                  {"name": "slow", "engine": "openai", "url": slow.url, "remote_model": "fake"}]  # fmt: skip
        config: dict[str, Any] = {
            "embedded_models": False, "models": models, "database_url": POSTGRES_DSN, "database_schema": schema,
            "redis_url": REDIS_URL, "batch_poll_interval": 0.1, "key_refresh_interval": 0.5,
            "api_keys": [{"key": ADMIN, "id": f"admin-{RUN}"},
                         *({"key": key, "id": f"rpm-{RUN}-{n}", "rpm": RPM} for n, key in enumerate(LIMITED))],
        }  # fmt: skip
        try:
            with running_server(config) as a, running_server(config) as b:
                yield a, b
        finally:
            drop_schema(POSTGRES_DSN, schema)


def _openai(server: ServerProcess, key: str = ADMIN) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def _auth(key: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _chat(model: str = "fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}


def test_file_uploaded_through_a_downloads_through_b(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    content = os.urandom(9 * 2**20)  # three 4 MiB chunks of the file table
    uploaded = _openai(a).files.create(file=("blob.bin", content), purpose="user_data")
    assert _openai(b).files.retrieve(uploaded.id).bytes == len(content)
    assert _openai(b).files.content(uploaded.id).content == content
    assert uploaded.id in {f.id for f in _openai(b).files.list()}
    _openai(b).files.delete(uploaded.id)
    assert httpx.get(f"{a.url}/v1/files/{uploaded.id}", headers=_auth()).status_code == 404


def test_batch_created_through_a_completes_and_reads_through_b(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    lines = [chat_line(f"line-{i}", "fast") for i in range(12)]
    file = _openai(a).files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    batch = _openai(a).batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_batch(_openai(b), batch.id)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 12
    results = output_lines(_openai(b), done.output_file_id)
    assert sorted(r["custom_id"] for r in results) == sorted(f"line-{i}" for i in range(12))
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["choices"] for r in results)
    assert batch.id in {x.id for x in _openai(b).batches.list()}


def _spend_and_refuse(a: ServerProcess, b: ServerProcess, key: str) -> tuple[list[int], list[httpx.Response]]:
    statuses = []
    for i in range(RPM):
        server = (a, b)[i % 2]
        statuses.append(httpx.post(server.url + "/v1/chat/completions", json=_chat(), headers=_auth(key),
                                   timeout=30).status_code)  # fmt: skip
    # the budget is spent on both together: each replica now refuses
    return statuses, [httpx.post(s.url + "/v1/chat/completions", json=_chat(), headers=_auth(key), timeout=30)
                      for s in (a, b)]  # fmt: skip


def test_rate_limit_holds_across_replicas(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    """Limits count in clock-aligned minutes (the servers' wall clock, not one the test can move): an attempt
    that a new minute cut in two proves nothing, and the next, on a fresh key, has the whole minute after it."""
    a, b = replicas
    for key in LIMITED:
        minute = time.time() // 60
        statuses, refusals = _spend_and_refuse(a, b, key)
        if time.time() // 60 == minute:
            break
    assert statuses == [200] * RPM
    for refused in refusals:
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.json()["error"]["code"] == "rate_limit_requests"
    assert httpx.post(a.url + "/v1/chat/completions", json=_chat(), headers=_auth(), timeout=30).status_code == 200


def test_live_requests_on_either_replica(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    for server in replicas:
        answer = _openai(server).chat.completions.create(model="fast", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
        ollama = httpx.post(server.url + "/api/chat", json={**_chat(), "stream": False}, headers=_auth(), timeout=30)
        assert ollama.status_code == 200 and ollama.json()["done"] is True


def test_a_key_made_on_a_works_on_b(replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    made = httpx.post(a.url + "/admin/keys", json={"name": "replica", "scopes": ["inference"]}, headers=_auth())
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    deadline = time.monotonic() + 10  # B reloads the key table every key_refresh_interval
    while httpx.get(b.url + "/v1/models", headers=_auth(secret)).status_code != 200:
        assert time.monotonic() < deadline, "a key made on replica A never worked on B"
        time.sleep(0.1)


@contextlib.contextmanager
def _nginx(replicas: tuple[ServerProcess, ServerProcess], workdir: Path) -> Iterator[str]:
    """nginx running docs/nginx.conf with the replicas' ports and a free listen port; yields its URL."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    ports = [server.url.rsplit(":", 1)[1] for server in replicas]
    site = NGINX_CONF.read_text()
    site = site.replace("127.0.0.1:11434", f"127.0.0.1:{ports[0]}").replace("127.0.0.1:11435", f"127.0.0.1:{ports[1]}")
    listen = free_port()
    site, n = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", site)
    assert n == 1
    (workdir / "site.conf").write_text(site)
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    main = f"""daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {temp["body"]}; proxy_temp_path {temp["proxy"]};
  fastcgi_temp_path {temp["fastcgi"]}; uwsgi_temp_path {temp["uwsgi"]}; scgi_temp_path {temp["scgi"]};
  include {workdir}/site.conf; }}
"""
    (workdir / "nginx.conf").write_text(main)
    checked = subprocess.run([binary, "-t", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(workdir / "nginx.conf")])
    url = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, (workdir / "error.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_nginx_spreads_requests_and_streams(replicas: tuple[ServerProcess, ServerProcess], tmp_path: Path) -> None:
    with _nginx(replicas, tmp_path) as url, httpx.Client(base_url=url, timeout=60) as http:
        ids = [f"via-nginx-{RUN}-{i}" for i in range(8)]
        for rid in ids:
            answer = http.post("/v1/chat/completions", json=_chat(), headers={**_auth(), "X-Request-ID": rid})
            assert answer.status_code == 200 and answer.headers["x-request-id"] == rid
        deadline = time.monotonic() + 10  # access lines are written as each response ends
        while sum(sum(f"[{rid}]" in server.log() for rid in ids) for server in replicas) < len(ids):
            assert time.monotonic() < deadline, "an access line never appeared"
            time.sleep(0.05)
        served = [sum(f"[{rid}]" in server.log() for rid in ids) for server in replicas]
        assert sum(served) == len(ids) and min(served) >= 1, served  # each request once, both replicas used

        arrivals: list[float] = []
        began = time.monotonic()
        body = _chat("slow", stream=True, max_tokens=6)
        with http.stream("POST", "/v1/chat/completions", json=body, headers=_auth()) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic() - began)
        # 6 tokens 0.3 s apart: unbuffered, the first event arrives well before the last (buffered: all at once)
        assert len(arrivals) >= 7 and arrivals[-1] - arrivals[0] > 0.8, arrivals
        big = http.post("/v1/files", files={"file": ("x.bin", os.urandom(3 * 2**20))}, data={"purpose": "user_data"},
                        headers=_auth())  # fmt: skip
        assert big.status_code == 200 and big.json()["bytes"] == 3 * 2**20  # past nginx's default 1 MB cap
