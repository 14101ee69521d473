"""Shared fixtures: one vlmserve process with the embedded models for the contract tests.

Hostile-input tests (tests/hostile/): their servers run under an address-space cap (`ulimit -v`), inherited by
the runners: a regression that makes a process balloon then fails the test (the allocation fails, the runner
dies) instead of taking the machine's memory. Each finding of the hostile-input review has a test there that
failed before its fix. Their helpers live here, not in a tests/hostile/conftest.py: without packages every
conftest is the module `conftest`, and a second one replaced this one for `from conftest import ...`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from server_process import ServerProcess, running_server

# Per process: the server peaks near 0.7 GB of address space, the RapidOCR runner near 1.7 GB.
MEMORY_CAP_MB = 4096


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the server and its runners)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(child) for child in children)
    return total


@pytest.fixture(scope="module")
def capped_server() -> Iterator[ServerProcess]:
    """The embedded default (SmolLM2, RapidOCR, MiniLM) under the memory cap, one per test module."""
    with running_server(None, memory_cap_mb=MEMORY_CAP_MB) as proc:
        yield proc


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    """The embedded default (SmolLM2, RapidOCR, MiniLM), started exactly as a user would."""
    with running_server(None) as proc:
        yield proc


def text_image(text: str, size: tuple[int, int] = (480, 120), fmt: str = "PNG") -> bytes:
    """An image with `text` drawn large and black on white, for real OCR reads."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((16, size[1] // 2 - 24), text, fill="black", font=ImageFont.load_default(size=44))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


_SERVICE_VARIABLES = ("VLMSERVE_TEST_POSTGRES_DSN", "VLMSERVE_TEST_REDIS_URL")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line saying which tests skipped for want of PostgreSQL/Redis and how to run them (CI sets both)."""
    skipped = [
        report.nodeid
        for report in terminalreporter.stats.get("skipped", [])
        if any(name in str(report.longrepr) for name in _SERVICE_VARIABLES)
    ]
    if skipped:
        files = sorted({nodeid.split("::")[0] for nodeid in skipped})
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped without PostgreSQL/Redis ({', '.join(files)}); run them with "
            "VLMSERVE_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test "
            "VLMSERVE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 make test",
            yellow=True,
        )
