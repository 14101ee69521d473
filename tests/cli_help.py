"""`vlmserve serve --help` as a subprocess prints it: what docs and deployment files are checked against."""

from __future__ import annotations

import os
import subprocess
import sys


def serve_help() -> str:
    env = {**os.environ, "COLUMNS": "400", "TERM": "dumb", "NO_COLOR": "1"}  # one flag per line, no colour codes
    result = subprocess.run(
        [sys.executable, "-m", "vlmserve", "serve", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
