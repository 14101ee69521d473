"""What every runner shares: announce readiness, and live exactly as long as the gateway's pipe."""

from __future__ import annotations

import sys
import threading

READY_PREFIX = "VLMSERVE_RUNNER_READY "


def announce_ready(url: str) -> None:
    sys.stdout.write(f"{READY_PREFIX}{url}\n")
    sys.stdout.flush()


def wait_for_parent_exit() -> None:
    """Block until stdin reaches EOF: the gateway closed it (unload) or died."""
    while sys.stdin.buffer.read(65536):
        pass


def on_parent_exit(callback: object) -> threading.Thread:
    def watch() -> None:
        wait_for_parent_exit()
        if callable(callback):
            callback()

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
