"""Start vlmserve as a real process on a free port, for contract tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _address_space_cap(megabytes: int) -> Any:
    limit = megabytes * 2**20

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


@contextlib.contextmanager
def running_server(
    config: dict[str, Any] | None = None,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 60.0,
    memory_cap_mb: int | None = None,
) -> Iterator[ServerProcess]:
    """Yield a started server; `config` becomes its YAML config file. Stops it (and its runners) on exit.

    `memory_cap_mb` caps the address space of the server and of every runner it starts (`ulimit -v`, inherited
    by children): a request that makes a process balloon fails the test instead of exhausting the machine."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="vlmserve-test-"))
    args = [sys.executable, "-m", "vlmserve", "serve", "--port", str(port), "--log-level", "info"]
    if config is not None:
        config_path = workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        args += ["--config", str(config_path)]
    log_path = workdir / "server.log"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("VLMSERVE_")}
    if not (config or {}).get("data_dir") and "VLMSERVE_DATA_DIR" not in (env or {}):
        clean_env["VLMSERVE_DATA_DIR"] = str(workdir / "data")  # its own batch database unless told otherwise
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**clean_env, **(env or {})},
            preexec_fn=None if memory_cap_mb is None else _address_space_cap(memory_cap_mb),
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(server.url + "/", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start in {startup_timeout}s:\n{server.log()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def runner_pids(server: ServerProcess, model: str) -> list[int]:
    """Live runner processes of `model` started by this server (its children only: other servers on the machine,
    of other tests, run runners of the same model). Their command line carries the spec."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == server.proc.pid and state != "Z" and f'"name":"{model}"' in cmdline:
            pids.append(int(entry.name))
    return pids
