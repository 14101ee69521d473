"""A config naming model files that are not there, or remote hosts that take no connection, starts (the other
models serve) but says so at once: one WARNING line per problem in the start-up log, and the same problems in
/health's `warnings`, before any request for those models (it said nothing until the first one failed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_upstreams import FakeUpstream
from server_process import ServerProcess, free_port, running_server


@pytest.fixture(scope="module")
def misconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("config-checks")
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_text("{}")  # present: only the missing files are named
    with FakeUpstream() as near:
        closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        paths = {"gguf": str(folder / "gone.gguf"), "mmproj": str(folder / "gone-mmproj.gguf"),
                 "onnx": str(folder / "gone.onnx"), "closed": closed, "near": near.url}  # fmt: skip
        models = [
            {"name": "gone-vlm", "engine": "llamacpp", "path": paths["gguf"], "mmproj": paths["mmproj"]},
            {"name": "gone-embed", "engine": "onnx-embed", "path": paths["onnx"], "tokenizer": str(tokenizer)},
            {"name": "far", "engine": "openai", "url": f"{closed}/v1", "capabilities": ["completion"]},
            {"name": "near", "engine": "openai", "url": f"{near.url}/v1", "replicas": [f"{closed}/v1"]},
        ]
        config = {"embedded_models": False, "default_model": "near", "models": models}
        with running_server(config) as server:
            yield server, paths


def _config_check_lines(server: ServerProcess, count: int) -> list[str]:
    """The start-up check's log lines, once `count` of them are there (it runs beside start-up)."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line.split(" config check: ", 1)[1] for line in server.log().splitlines() if " config check: " in line]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} config check lines:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def test_start_up_log_names_missing_files_and_unreachable_hosts(
    misconfigured: tuple[ServerProcess, dict[str, str]],
) -> None:
    server, paths = misconfigured
    assert _config_check_lines(server, 5) == [
        f"model 'gone-vlm': path {paths['gguf']} not found",
        f"model 'gone-vlm': mmproj {paths['mmproj']} not found",
        f"model 'gone-embed': path {paths['onnx']} not found",
        f"model 'far': {paths['closed']}/v1 is not reachable (Connection refused)",
        f"model 'near': {paths['closed']}/v1 is not reachable (Connection refused)",  # its second replica
    ]
    warning_lines = [line for line in server.log().splitlines() if " config check: " in line]
    assert all(" WARNING " in line for line in warning_lines), warning_lines


def test_health_lists_the_same_problems(misconfigured: tuple[ServerProcess, dict[str, str]]) -> None:
    server, paths = misconfigured
    health = httpx.get(server.url + "/health", timeout=30)
    body = health.json()
    # readiness follows the model /process uses: the vision default, gone-vlm, whose files are missing
    assert health.status_code == 503
    assert body["status"] == "unhealthy"
    assert body["model"] == "gone-vlm"
    assert body["warnings"] == [
        f"model 'gone-vlm': path {paths['gguf']} not found",
        f"model 'gone-vlm': mmproj {paths['mmproj']} not found",
        f"model 'gone-embed': path {paths['onnx']} not found",
        f"model 'far': its engine at {paths['closed']}/v1 does not answer",
    ]
    assert body["engines"]["gone-vlm"]["ready"] is False
    assert body["engines"]["near"]["ready"] is True


def test_a_file_that_appears_leaves_the_warnings(misconfigured: tuple[ServerProcess, dict[str, str]]) -> None:
    """/health reads the files on each call: the warnings are what is wrong now, not what was at start."""
    server, paths = misconfigured
    Path(paths["mmproj"]).write_bytes(b"")
    try:
        warnings = httpx.get(server.url + "/health", timeout=30).json()["warnings"]
    finally:
        Path(paths["mmproj"]).unlink()
    assert [w for w in warnings if "gone-vlm" in w] == [f"model 'gone-vlm': path {paths['gguf']} not found"]
