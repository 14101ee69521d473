"""An upstream engine's `api_key` is a secret: it reaches the engine and the catalog file the server writes,
never a response, `config show`, a digest or a spec dump. The app runs in process (tests/inprocess_app.py);
the upstream is a one-file HTTP server here that records the Authorization header of each request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from inprocess_app import in_process_client
from pydantic import SecretStr
from typer.testing import CliRunner

from vlmserve.cli import app as cli_app
from vlmserve.domain.spec import ModelSpec

KEY = "sk-upstream-0123456789abcdef"
OTHER_KEY = "sk-upstream-rotated-fedcba"
PASSWORD = "url-password-9876"


class Upstream:
    """Answers every request 200 `{}` (enough for health probes) and keeps each request's Authorization header."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
                await reader.readexactly(int(headers.get("content-length") or 0))
                self.authorizations.append(headers.get("authorization"))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream() as up:
        yield up


def _models(url: str, key: str, remote_model: str = "remote-one") -> list[dict[str, Any]]:
    with_password = "http://user:" + PASSWORD + "@127.0.0.1:9/v1"  # nothing listens: never probed successfully
    return [
        {"name": "up", "engine": "openai", "url": url, "remote_model": remote_model, "api_key": key},
        {"name": "pw", "engine": "openai", "url": with_password, "remote_model": "remote-two"},
    ]


async def _digests(url: str, key: str, tmp_path: Path, remote_model: str = "remote-one") -> dict[str, str]:
    async with in_process_client({"models": _models(url, key, remote_model)}, tmp_path) as client:
        tags = (await client.get("/api/tags")).json()["models"]
    return {entry["name"]: entry["digest"] for entry in tags}


async def test_the_key_reaches_the_upstream_and_no_answer(upstream: Upstream, tmp_path: Path) -> None:
    async with in_process_client({"models": _models(upstream.url, KEY)}, tmp_path) as client:
        health = await client.get("/health")
        assert health.json()["engines"]["up"]["reachable"] is True
        assert set(upstream.authorizations) == {f"Bearer {KEY}"}
        answers = [
            health,
            await client.get("/api/tags"),
            await client.post("/api/show", json={"model": "up"}),
            await client.post("/api/show", json={"model": "pw"}),
            await client.get("/v1/models"),
            await client.get("/v1/models/up"),
            await client.get("/admin/models"),
            await client.get("/admin/status"),
        ]
        # all served: /health is 200 (its model, `up`, answers) though `pw`'s host takes no connection
        assert [answer.status_code for answer in answers] == [200] * len(answers), [a.text for a in answers]
        for answer in answers:
            assert KEY not in answer.text, answer.request.url
            assert PASSWORD not in answer.text, answer.request.url
        assert "127.0.0.1:9/v1" in answers[3].json()["modelfile"]  # the URL is shown, without its password

        copied = await client.post("/api/copy", json={"source": "up", "destination": "up-copy"})
        assert copied.status_code == 200, copied.text
        upstream.authorizations.clear()
        assert (await client.get("/health")).json()["engines"]["up-copy"]["reachable"] is True
        assert set(upstream.authorizations) == {f"Bearer {KEY}"}  # the copy sends the key too
    written = yaml.safe_load((tmp_path / "pulled.yaml").read_text())["models"]
    assert [m["api_key"] for m in written if m["name"] == "up-copy"] == [KEY]  # the file it loads at start


async def test_digests_do_not_change_with_the_key_alone(upstream: Upstream, tmp_path: Path) -> None:
    first = await _digests(upstream.url, KEY, tmp_path / "a")
    rotated = await _digests(upstream.url, OTHER_KEY, tmp_path / "b")
    elsewhere = await _digests(upstream.url, KEY, tmp_path / "c", remote_model="remote-other")
    assert set(first) == {"up:latest", "pw:latest"}
    assert rotated == first
    assert elsewhere["up:latest"] != first["up:latest"]
    assert elsewhere["pw:latest"] == first["pw:latest"]


def test_spec_dumps_mask_the_key() -> None:
    spec = ModelSpec(name="up", engine="openai", url="http://127.0.0.1:9/v1", api_key=SecretStr(KEY))
    assert spec.api_key is not None
    assert spec.api_key.get_secret_value() == KEY
    for dump in (spec.model_dump_json(), repr(spec), str(spec.model_dump()), json.dumps(spec.model_dump(mode="json"))):
        assert KEY not in dump
    assert ModelSpec.model_validate(spec.model_dump()) == spec  # a copy keeps the key (in Python, not in JSON)


def test_config_show_never_prints_an_upstream_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VLMSERVE_CONFIG", "VLMSERVE_OPENAI_API_KEY", "VLMSERVE_OPENAI_BASE_URL", "VLMSERVE_OPENAI_MODELS"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "vlmserve.yaml"
    config.write_text(yaml.safe_dump({"embedded_models": False, "models": _models("http://127.0.0.1:9/v1", KEY)}))
    env = {"VLMSERVE_OPENAI_API_KEY": OTHER_KEY, "VLMSERVE_OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
           "VLMSERVE_OPENAI_MODELS": "env-model", "COLUMNS": "250"}  # fmt: skip
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["config", "show", "--config", str(config), "--json"], env=env)
    table = runner.invoke(cli_app, ["config", "show", "--config", str(config)], env=env)
    assert shown.exit_code == 0, shown.output
    assert table.exit_code == 0, table.output
    settings = json.loads(shown.stdout)["settings"]
    assert settings["openai_api_key"]["value"] == "****"
    assert [m.get("api_key") for m in settings["models"]["value"]] == ["****", None]
    for output in (shown.output, table.output):
        for secret in (KEY, OTHER_KEY, PASSWORD):
            assert secret not in output
