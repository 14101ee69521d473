"""The media pipeline through a real server process: URL fetching (allowlisted loopback fixture), the hostile
corpus on every surface (a 4xx each, never a 5xx), and bounded memory while a bomb is rejected."""

from __future__ import annotations

import base64
import http.server
import io
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import media_corpus as corpus
import pillow_heif
import pytest
from conftest import data_uri, text_image
from PIL import Image
from server_process import ServerProcess, running_server

PNG_TEXT = text_image("PAPAYA 77")


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG_TEXT)))
        self.end_headers()
        self.wfile.write(PNG_TEXT)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("media-root")
    (root / "note.png").write_bytes(PNG_TEXT)
    config = {"embedded_models": True, "media_fetch_allow": ["127.0.0.1/32"], "media_file_root": str(root)}
    with running_server(config) as server:
        server.media_root = root  # type: ignore[attr-defined]
        yield server


def chat(server: ServerProcess, url: str) -> httpx.Response:
    body = {
        "model": "rapidocr",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "read"}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ],
    }
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


def test_image_url_is_fetched_and_read(media_server: ServerProcess, origin: str) -> None:
    reply = chat(media_server, origin + "/papaya.png")
    assert reply.status_code == 200, reply.text
    assert "PAPAYA" in reply.json()["choices"][0]["message"]["content"]
    ollama = httpx.post(
        media_server.url + "/api/chat",
        timeout=120,
        json={
            "model": "rapidocr",
            "stream": False,
            "messages": [{"role": "user", "content": "read", "images": [origin + "/again.png"]}],
        },
    )
    assert ollama.status_code == 200 and "PAPAYA" in ollama.json()["message"]["content"]


def test_file_url_under_the_root(media_server: ServerProcess) -> None:
    root: Path = media_server.media_root  # type: ignore[attr-defined]
    assert "PAPAYA" in chat(media_server, f"file://{root}/note.png").json()["choices"][0]["message"]["content"]
    refused = chat(media_server, "file:///etc/hostname")
    assert refused.status_code == 400 and "only served from under" in refused.json()["error"]["message"]


def test_redirect_to_metadata_refused(media_server: ServerProcess, origin: str) -> None:
    reply = chat(media_server, origin + "/to-metadata")
    assert reply.status_code == 400 and "link-local" in reply.json()["error"]["message"]
    assert reply.json()["error"]["code"] == "media_fetch_refused"


@pytest.mark.parametrize("url", ["http://10.0.0.1/x.png", "http://169.254.169.254/latest/meta-data/"])
def test_private_urls_refused(media_server: ServerProcess, url: str) -> None:
    reply = chat(media_server, url)
    assert reply.status_code == 400 and "refusing to fetch" in reply.json()["error"]["message"]


def test_loopback_refused_without_allowlist(origin: str) -> None:
    with running_server({"embedded_models": True}) as server:
        reply = chat(server, origin + "/papaya.png")
        assert reply.status_code == 400 and "loopback" in reply.json()["error"]["message"]


BAD = {
    "truncated JPEG": (corpus.truncated_jpeg, 400),
    "PNG claiming 100000x100000": (corpus.png_claiming_huge, 413),
    "zip bomb PNG": (corpus.png_zip_bomb, 413),
    "text named .jpg": (lambda: corpus.TEXT_NAMED_JPG, 400),
    "SVG": (lambda: corpus.SVG, 400),
}


@pytest.mark.parametrize("name", list(BAD))
def test_corpus_is_4xx_on_every_surface(media_server: ServerProcess, name: str) -> None:
    make, status = BAD[name]
    data = make()
    openai = chat(media_server, data_uri(data, "image/jpeg"))
    ollama = httpx.post(
        media_server.url + "/api/generate",
        timeout=60,
        json={"model": "rapidocr", "prompt": "read", "stream": False, "images": [base64.b64encode(data).decode()]},
    )
    upload = httpx.post(
        media_server.url + "/process",
        timeout=60,
        files={"image": ("photo.jpg", data, "image/jpeg")},
        data={"model": "rapidocr"},
    )
    assert [openai.status_code, ollama.status_code, upload.status_code] == [status] * 3, openai.text


def test_empty_upload_is_400(media_server: ServerProcess) -> None:
    upload = httpx.post(media_server.url + "/process", timeout=60, files={"image": ("a.jpg", b"", "image/jpeg")})
    assert upload.status_code == 400
    reply = chat(media_server, "data:image/png;base64,")
    assert reply.status_code == 400


@pytest.mark.parametrize(
    "make",
    [corpus.exif_rotated_jpeg, corpus.cmyk_jpeg, corpus.png_16bit, corpus.palette_transparent_png, corpus.animated_gif],
)
def test_awkward_images_are_accepted(media_server: ServerProcess, make: object) -> None:
    data = make()  # type: ignore[operator]
    assert chat(media_server, data_uri(data)).status_code == 200


def test_heic_photo_is_read_on_both_surfaces(media_server: ServerProcess) -> None:
    """An iPhone-style HEIC with text in it: decoded server-side (pillow-heif), so OCR reads it on each surface."""
    pillow_heif.register_heif_opener()  # Pillow saves HEIF through it (the server registers it for itself)
    buffer = io.BytesIO()
    Image.open(io.BytesIO(text_image("HEIC 7291"))).convert("RGB").save(buffer, format="HEIF", quality=95)
    heic = buffer.getvalue()
    reply = chat(media_server, data_uri(heic, "image/heic"))
    assert reply.status_code == 200 and "7291" in reply.json()["choices"][0]["message"]["content"], reply.text
    ollama = httpx.post(
        media_server.url + "/api/generate",
        json={"model": "rapidocr", "prompt": "read", "stream": False, "images": [base64.b64encode(heic).decode()]},
        timeout=120,
    )
    assert ollama.status_code == 200 and "7291" in ollama.json()["response"], ollama.text


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_rss_stays_bounded_while_bombs_are_rejected(media_server: ServerProcess) -> None:
    bomb = data_uri(corpus.png_zip_bomb(), "image/png")
    send = partial(chat, media_server, bomb)
    assert send().status_code == 413  # warm-up: buffers of this request size exist from now on
    before = _rss_kb(media_server.proc.pid)
    for _ in range(3):
        assert send().status_code == 413
    grown_mb = (_rss_kb(media_server.proc.pid) - before) / 1024
    assert grown_mb < 30, f"server RSS grew {grown_mb:.1f} MB rejecting bombs (256 MB decoded each)"
