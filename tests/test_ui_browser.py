"""The browser UI end to end: Debian's chromium, headless, driven by Playwright against a running server; and
the JSON its status page polls (GET /admin/status), over plain HTTP.

The playground reads an image set through its file input and streams the OCR model's answer, then streams a
SmolLM2 answer; the status page shows the model as loaded and the requests just made. With API keys on, the
pages load without a key but their API calls show the 401 until a key is typed in; the Stop button aborts a
stream. Every page load checks that no request leaves the server's origin and nothing is logged as an error.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import text_image
from fake_upstreams import Behaviour, FakeUpstream
from server_process import ServerProcess, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"]
ADMIN = "vs-ui-admin-secret"
INFER = "vs-ui-inference-secret"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (`make browser-deps` installs it)"
)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
expect = sync_api.expect
expect.set_options(timeout=120_000)  # first loads of models on two shared cores: no speed assumed


@dataclass
class Watched:
    """A page, with every request it made and every console error or uncaught exception it logged."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        self.requests.append(request.url)
        if request.url.endswith("/v1/chat/completions") and request.post_data:
            self.chat_bodies.append(json.loads(request.post_data))

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith((self.origin + "/", "data:", "blob:"))]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _watch(browser: Any, server: ServerProcess) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(120_000)
    watched = Watched(context.new_page(), server.url)
    watched.page.on("request", watched.on_request)
    watched.page.on("console", lambda msg: watched.errors.append(msg.text) if msg.type == "error" else None)
    watched.page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
    yield watched
    context.close()


@pytest.fixture
def watched(browser: Any, server: ServerProcess) -> Iterator[Watched]:
    yield from _watch(browser, server)


def _ask(page: Any, model: str, prompt: str, max_tokens: int = 256) -> None:
    page.select_option("#model", model)
    page.fill("#prompt", prompt)
    page.fill("#max-tokens", str(max_tokens))
    page.click("#send")


# counts changes to the answer box: a streamed answer is drawn once per arriving piece
COUNT_RENDERS = """() => { window.renders = 0;
  new MutationObserver(() => { window.renders += 1; })
    .observe(document.getElementById("output"), {childList: true, characterData: true, subtree: true}); }"""


def _stats(page: Any) -> dict[str, str]:
    return {name: page.inner_text(f"#stat-{name}") for name in ("ttft", "tps", "total", "usage")}


# visible <img> elements that show nothing (no source, or one that failed): the browser's broken-image box
EMPTY_IMAGES = """() => [...document.images]
  .filter(img => img.getClientRects().length > 0 && !(img.complete && img.naturalWidth > 0))
  .map(img => img.id || img.alt)"""


@needs_chromium
def test_playground_idle_page_shows_no_empty_boxes(watched: Watched, server: ServerProcess) -> None:
    """Before anything is attached or asked: no image box (`.thumb { display: flex }` overrode `hidden`), no
    error box, the drop hint, the idle state and empty figures."""
    page = watched.page
    page.goto(server.url + "/ui")
    expect(page.locator("#model option")).to_contain_text(["smollm2", "rapidocr"])
    expect(page.locator("#thumb")).to_be_hidden()
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("#drop-hint")).to_be_visible()
    expect(page.locator("#run-state")).to_have_text("idle")
    assert page.evaluate(EMPTY_IMAGES) == []
    assert _stats(page) == {"ttft": "–", "tps": "–", "total": "–", "usage": "–"}
    assert page.inner_text("#output") == ""
    assert watched.foreign_requests() == []
    assert watched.errors == []


@needs_chromium
def test_playground_reads_an_uploaded_image_and_streams_text(watched: Watched, server: ServerProcess) -> None:
    page = watched.page
    page.goto(server.url + "/ui")
    expect(page.locator("#model option")).to_contain_text(["smollm2", "rapidocr"])
    word, number = random.choice(["PAPAYA", "LEMON", "MANGO", "GUAVA"]), random.randint(100, 999)
    page.set_input_files("#file", files=[{"name": "note.png", "mimeType": "image/png",
                                          "buffer": text_image(f"{word} {number}")}])  # fmt: skip
    expect(page.locator("#thumb")).to_be_visible()
    assert page.get_attribute("#thumb-img", "src", timeout=5_000).startswith("data:image/png;base64,")
    _ask(page, "rapidocr", "Read the text.")
    expect(page.locator("#run-state")).to_have_text("done")
    assert word in page.inner_text("#output") and str(number) in page.inner_text("#output")
    stats = _stats(page)
    assert float(stats["tps"]) > 0 and re.fullmatch(r"\d+ / \d+", stats["usage"]), stats
    assert re.fullmatch(r"[\d.]+ m?s", stats["ttft"]) and re.fullmatch(r"[\d.]+ m?s", stats["total"]), stats
    sent = watched.chat_bodies[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")

    page.click("#clear-image")
    expect(page.locator("#thumb")).to_be_hidden()
    assert page.evaluate(EMPTY_IMAGES) == []
    page.evaluate(COUNT_RENDERS)
    _ask(page, "smollm2", "Name one colour.", max_tokens=16)
    expect(page.locator("#run-state")).to_have_text("done")
    assert page.evaluate("window.renders") >= 3  # cleared, then drawn piece by piece as the stream arrives
    answer = page.inner_text("#output")
    completion = int(_stats(page)["usage"].split(" / ")[1])
    assert answer.strip() and 0 < completion <= 16 and float(_stats(page)["tps"]) > 0
    assert isinstance(watched.chat_bodies[-1]["messages"][0]["content"], str)
    assert watched.foreign_requests() == [] and watched.errors == []


@needs_chromium
def test_status_page_shows_loaded_model_and_recent_requests(watched: Watched, server: ServerProcess) -> None:
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert httpx.post(server.url + "/v1/chat/completions", json=chat, timeout=120).status_code == 200
    page = watched.page
    page.goto(server.url + "/ui/status")
    expect(page.locator('#models tr[data-model="smollm2"]')).to_have_attribute("data-state", "loaded")
    row = page.locator('#models tr[data-model="smollm2"]')
    expect(row).to_contain_text("llamacpp")
    expect(page.locator("#requests")).to_contain_text("POST /v1/chat/completions")
    expect(page.locator("#memory-text")).to_contain_text(" used (")
    assert float(page.eval_on_selector("#memory-bar", "el => parseFloat(el.style.width)")) > 0
    first = page.inner_text("#live")
    expect(page.locator("#live")).not_to_have_text(first, timeout=10_000)  # it refreshes on its own
    assert watched.foreign_requests() == [] and watched.errors == []


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """API keys on; one fast text model and one slow one (a fake upstream), no embedded models."""
    with FakeUpstream(Behaviour(tokens=400, token_delay=0.05)) as upstream:
        models = [{"name": "slow", "engine": "openai", "url": upstream.url, "remote_model": "fake",
                   "capabilities": ["completion"]}]  # fmt: skip
        config = {"embedded_models": False, "data_dir": str(tmp_path_factory.mktemp("ui-keys")), "models": models,
                  "api_keys": [ADMIN, {"key": INFER, "id": "ui-infer", "scopes": ["inference"]}]}  # fmt: skip
        with running_server(config) as proc:
            yield proc


def _refusals_only(errors: list[str]) -> list[str]:
    """Console errors other than Chromium's own line for an HTTP error status the test caused on purpose."""
    return [e for e in errors if not re.search(r"status of (400|401|403)", e)]


@needs_chromium
def test_keys_needed_for_api_calls_and_stop_aborts(browser: Any, keyed_server: ServerProcess) -> None:
    for watched in _watch(browser, keyed_server):
        page = watched.page
        page.goto(keyed_server.url + "/ui")  # the page itself loads without a key
        expect(page.locator("#error")).to_contain_text("401: missing API key")
        page.fill("#api-key", INFER)
        page.dispatch_event("#api-key", "change")
        expect(page.locator("#model option")).to_have_text(["slow"])
        page.set_input_files("#file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": text_image("X")}])
        expect(page.locator("#drop")).to_have_class(re.compile(r"\bwarn\b"))  # the model has no vision
        _ask(page, "slow", "Describe it.")
        refusal = "400: model 'slow' does not support images (unsupported_capability)"  # the API's own words
        expect(page.locator("#error")).to_contain_text(refusal)
        page.click("#clear-image")
        _ask(page, "slow", "Count slowly.")
        expect(page.locator("#output")).to_contain_text("tok3")
        page.click("#stop")
        expect(page.locator("#run-state")).to_have_text("stopped")
        stopped_at = page.inner_text("#output")
        assert "tok399" not in stopped_at and page.is_enabled("#send")
        page.wait_for_timeout(500)
        assert page.inner_text("#output") == stopped_at  # nothing arrives after the stop

        page.goto(keyed_server.url + "/ui/status")  # the key is remembered; an inference key lacks 'admin'
        expect(page.locator("#error")).to_contain_text("403: this API key lacks the 'admin' scope")
        page.fill("#api-key", ADMIN)
        page.dispatch_event("#api-key", "change")
        expect(page.locator('#models tr[data-model="slow"]')).to_have_attribute("data-state", "remote")
        expect(page.locator("#error")).to_be_hidden()
        assert watched.foreign_requests() == [] and _refusals_only(watched.errors) == []


def test_status_json_keeps_a_bounded_list_of_requests_without_bodies(server: ServerProcess) -> None:
    marker = f"SECRET-{random.randint(10**8, 10**9)}"
    with httpx.Client(base_url=server.url, timeout=120) as http:
        chat = {"model": "smollm2", "messages": [{"role": "user", "content": marker}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
        for path in ("/ui", "/ui/static/app.js", "/admin/status", "/metrics", "/health"):
            assert http.get(path).status_code == 200
        status = http.get("/admin/status")
        assert status.status_code == 200 and marker not in status.text
        body = status.json()
        latest = body["recent_requests"][0]  # the page's own polling and probes are not listed
        assert (latest["method"], latest["path"], latest["model"], latest["status"]) == (
            "POST", "/v1/chat/completions", "smollm2", 200)  # fmt: skip
        assert 0 < latest["tokens_out"] <= 2 and latest["tokens_in"] > 0
        assert latest["first_token_ms"] is not None and latest["duration_ms"] >= latest["first_token_ms"]
        smollm2 = next(m for m in body["models"] if m["name"] == "smollm2")
        assert smollm2["state"] == "loaded" and smollm2["memory_bytes"] > 0 and smollm2["queued"] == 0
        assert body["memory"]["used_bytes"] >= smollm2["memory_bytes"] and body["memory"]["budget_bytes"] > 0
        assert http.get("/v1/models/nope").status_code == 404
        refused = http.get("/admin/status").json()["recent_requests"][0]
        assert (refused["path"], refused["status"], refused["model"]) == ("/v1/models/nope", 404, "")
        for _ in range(60):
            http.get("/v1/models")
        recent = http.get("/admin/status").json()["recent_requests"]
        assert len(recent) == 50 and {r["path"] for r in recent} == {"/v1/models"}
