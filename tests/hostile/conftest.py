"""Hostile-input tests: every server here runs under an address-space cap (`ulimit -v`), inherited by its runners.

A regression that makes a process balloon then fails the test (the allocation fails, the runner dies) instead of
taking the machine's memory. Each finding of the hostile-input review has a test in this folder that failed
before its fix; the corpus of hostile payloads lives in hostile_corpus.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
