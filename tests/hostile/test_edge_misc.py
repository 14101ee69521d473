"""Edge findings of the hostile-input review that are not about bodies, Unicode or numbers: image URL schemes on
the Ollama surface, the media fetch allowlist's ports, and the API key's model allowlist on listing routes."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import MEMORY_CAP_MB
from PIL import Image
from server_process import ServerProcess, running_server


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("image", "scheme"),
    [("file:///etc/passwd", "file"), ("gopher://example.com/x", "gopher"), ("FTP://example.com/a.png", "ftp")],
)
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_ollama_image_url_with_another_scheme_names_it(
    capped_server: ServerProcess, path: str, image: str, scheme: str
) -> None:
    if path == "/api/chat":
        body = {"model": "rapidocr", "messages": [{"role": "user", "content": "read", "images": [image]}]}
    else:
        body = {"model": "rapidocr", "prompt": "read", "images": [image]}
    response = httpx.post(capped_server.url + path, json={**body, "stream": False}, timeout=60)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert scheme in message.lower() and "base64" not in message, message


class _Images(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data = _png()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def image_origins() -> Iterator[tuple[int, int]]:
    """Two loopback image servers: the allowlist names the first one's port only."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Images) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers[0].server_address[1], servers[1].server_address[1]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_fetch_allowlist_entry_with_a_port(image_origins: tuple[int, int]) -> None:
    allowed, other = image_origins
    config = {"media_fetch_allow": [f"127.0.0.1:{allowed}"]}
    with running_server(config, memory_cap_mb=MEMORY_CAP_MB) as server:

        def ask(port: int) -> httpx.Response:
            content = [{"type": "text", "text": "read"},
                       {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{port}/a.png"}}]  # fmt: skip
            body = {"model": "rapidocr", "messages": [{"role": "user", "content": content}]}
            return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)

        ok = ask(allowed)
        assert ok.status_code == 200, ok.text
        refused = ask(other)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "media_fetch_refused"


@pytest.mark.parametrize("entry", ["http://images.internal", "*.example.com", "images.internal:99999"])
def test_fetch_allowlist_entry_that_can_never_match_stops_the_start(entry: str) -> None:
    with pytest.raises(RuntimeError, match="media_fetch_allow") as info:  # noqa: SIM117
        with running_server({"media_fetch_allow": [entry]}, startup_timeout=30):
            pass
    assert entry in str(info.value)


ADMIN_KEY = "vs-edge-admin"
SMOL_KEY = "vs-edge-smollm2-only"


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerProcess]:
    keys = [{"key": ADMIN_KEY, "id": "edge-admin"},
            {"key": SMOL_KEY, "id": "edge-smol", "scopes": ["inference"], "models": ["smollm2"]}]  # fmt: skip
    with running_server({"api_keys": keys}, memory_cap_mb=MEMORY_CAP_MB) as server:
        yield server


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_model_lists_show_only_the_keys_models(keyed_server: ServerProcess) -> None:
    url = keyed_server.url
    everything = {m["id"] for m in httpx.get(url + "/v1/models", headers=_as(ADMIN_KEY)).json()["data"]}
    assert {"smollm2", "rapidocr", "all-minilm"} <= everything
    assert [m["id"] for m in httpx.get(url + "/v1/models", headers=_as(SMOL_KEY)).json()["data"]] == ["smollm2"]
    tags = httpx.get(url + "/api/tags", headers=_as(SMOL_KEY)).json()["models"]
    assert [m["name"] for m in tags] == ["smollm2:latest"]
    # load two models, then /api/ps shows the key only its own
    for model in ("smollm2", "all-minilm"):
        loaded = httpx.post(url + f"/admin/models/{model}/load", headers=_as(ADMIN_KEY), timeout=120)
        assert loaded.status_code == 200, loaded.text
    running = {m["name"] for m in httpx.get(url + "/api/ps", headers=_as(ADMIN_KEY)).json()["models"]}
    assert {"smollm2:latest", "all-minilm:latest"} <= running
    assert [m["name"] for m in httpx.get(url + "/api/ps", headers=_as(SMOL_KEY)).json()["models"]] == ["smollm2:latest"]


def test_a_model_outside_the_allowlist_is_403_as_for_chat(keyed_server: ServerProcess) -> None:
    url = keyed_server.url
    image = base64.b64encode(_png()).decode()
    message = {"role": "user", "content": "x", "images": [image]}
    chat = httpx.post(url + "/api/chat", headers=_as(SMOL_KEY), json={"model": "rapidocr", "messages": [message]})
    assert chat.status_code == 403, chat.text  # what the server already answers for chat
    show = httpx.post(url + "/api/show", headers=_as(SMOL_KEY), json={"model": "rapidocr"})
    assert show.status_code == 403 and "rapidocr" in show.json()["error"], show.text
    card = httpx.get(url + "/v1/models/rapidocr", headers=_as(SMOL_KEY))
    assert card.status_code == 403 and card.json()["error"]["code"] == "model_not_allowed", card.text
    assert httpx.post(url + "/api/show", headers=_as(SMOL_KEY), json={"model": "smollm2"}).status_code == 200
    assert httpx.get(url + "/v1/models/smollm2", headers=_as(SMOL_KEY)).status_code == 200
