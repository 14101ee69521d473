"""Screenshots of the browser UI for docs/ui.md: docs/img/ui-playground.png and docs/img/ui-status.png.

Starts vlmserve with the embedded models (or uses --url), drives Debian's chromium headless with Playwright
(no browser download): the playground reads a drawn receipt with the OCR model and streams the answer; a
SmolLM2 request and a three-line batch give the status page something to show. Needs `make browser-deps`.

    .venv/bin/python scripts/ui_screenshots.py [--url http://127.0.0.1:11434] [--out docs/img]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFont
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from server_process import running_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RECEIPT = ["CAFE LUNA", "2 x Espresso   5.00", "1 x Croissant  3.20", "TOTAL         8.20"]


def receipt_png() -> bytes:
    image = Image.new("RGB", (520, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=34)
    for row, line in enumerate(RECEIPT):
        draw.text((28, 28 + row * 64), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@contextlib.contextmanager
def server_url(url: str | None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    with running_server(None) as server:
        yield server.url


def give_status_page_data(url: str) -> None:
    """A SmolLM2 answer (a second loaded model, recent requests) and a small batch (the batches table)."""
    with httpx.Client(base_url=url, timeout=300) as http:
        chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12}
        http.post("/v1/chat/completions", json=chat).raise_for_status()
        lines = [json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                             "body": {**chat, "max_tokens": 4}}) for i in range(3)]  # fmt: skip
        upload = http.post("/v1/files", files={"file": ("batch.jsonl", "\n".join(lines).encode())},
                           data={"purpose": "batch"})  # fmt: skip
        upload.raise_for_status()
        batch = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
        http.post("/v1/batches", json=batch).raise_for_status()


def playground(page: Page, url: str, out: Path) -> None:
    page.goto(url + "/ui")
    expect(page.locator("#model option")).not_to_have_count(0)
    page.set_input_files("#file", files=[{"name": "receipt.png", "mimeType": "image/png", "buffer": receipt_png()}])
    page.select_option("#model", "rapidocr")
    page.fill("#prompt", "Read the receipt.")
    page.click("#send")
    expect(page.locator("#run-state")).to_have_text("done")
    page.screenshot(path=str(out / "ui-playground.png"), full_page=True)


def status(page: Page, url: str, out: Path) -> None:
    page.goto(url + "/ui/status")
    expect(page.locator('#models tr[data-model="smollm2"]')).to_have_attribute("data-state", "loaded")
    expect(page.locator("#batches")).to_contain_text("/v1/chat/completions")
    expect(page.locator("#batches")).not_to_contain_text("0 / 0 / 3")  # some lines done: progress to show
    page.screenshot(path=str(out / "ui-status.png"), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running vlmserve (default: start one with the embedded models)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=180_000)
    with server_url(args.url) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-background-networking"])  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 580})
        page.set_default_timeout(180_000)
        playground(page, url, args.out)
        give_status_page_data(url)
        status(page, url, args.out)
        browser.close()
    print(f"wrote {args.out / 'ui-playground.png'} and {args.out / 'ui-status.png'}")


if __name__ == "__main__":
    main()
