"""The command line in-process through Typer's CliRunner: help everywhere, usage and configuration errors
(exit code 2, one helpful line), `config show` with its sources, and the server-address rules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from server_process import free_port
from typer.testing import CliRunner, Result

from vlmserve.cli import app, main
from vlmserve.cli.common import server_url
from vlmserve.cli.settings_flags import NOT_FLAGS, flag_name
from vlmserve.config import Settings

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # rich would otherwise wrap help at 80 columns


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No VLMSERVE_* or OLLAMA_HOST from the machine: each test says what it sets."""
    import os

    for name in list(os.environ):
        if name.startswith("VLMSERVE_") or name == "OLLAMA_HOST":
            monkeypatch.delenv(name)
    yield


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def test_help_names_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("serve", "ask", "models", "pull", "batch", "keys", "config"):
        assert command in result.stdout


COMMANDS = [["serve"], ["ask"], ["models"], ["pull"], ["batch", "submit"], ["keys", "create"], ["keys", "list"],
            ["keys", "revoke"], ["config", "show"]]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: vlmserve " + " ".join(command) in " ".join(result.stdout.split())


def test_serve_help_has_a_flag_for_every_setting() -> None:
    result = run("serve", "--help")
    assert result.exit_code == 0
    missing = [f for f in Settings.model_fields if f not in NOT_FLAGS and flag_name(f) not in result.stdout]
    assert missing == []
    assert "VLMSERVE_EMBEDDED_MODELS" in result.stdout


def test_invalid_setting_is_one_line_and_exit_2() -> None:
    result = run("serve", "--port", "abc", "--embedded-models", "maybe")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "invalid configuration" in lines[0] and "port" in lines[0] and "embedded_models" in lines[0]


def test_missing_config_file_and_unknown_yaml_key_exit_2(tmp_path: Path) -> None:
    missing = run("serve", "--config", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "config file not found" in missing.stderr
    (tmp_path / "bad.yaml").write_text("port: 1\nno_such_setting: 3\n")
    unknown = run("config", "show", "--config", str(tmp_path / "bad.yaml"))
    assert unknown.exit_code == 2 and "no_such_setting" in unknown.stderr


def test_unknown_command_and_option_are_usage_errors() -> None:
    assert run("frobnicate").exit_code == 2
    assert run("serve", "--no-such-flag", "1").exit_code == 2
    assert main(["--help"]) == 0 and main(["frobnicate"]) == 2


def test_config_show_names_the_source_of_each_value(tmp_path: Path) -> None:
    config = tmp_path / "vlmserve.yaml"
    config.write_text(yaml.safe_dump({
        "port": 9000, "default_model": "from-yaml", "log_level": "debug", "api_keys": ["yaml-secret-1"],
        "database_url": "postgresql://app:db-password@db.example:5432/vlm",
    }))  # fmt: skip
    env = {"VLMSERVE_LOG_LEVEL": "warning", "VLMSERVE_OPENAI_API_KEY": "env-secret-2"}
    result = run("config", "show", "--config", str(config), "--port", "9100", "--json", env=env)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["settings"]
    assert shown["port"] == {"value": 9100, "source": "flag --port"}
    assert shown["log_level"] == {"value": "warning", "source": "env VLMSERVE_LOG_LEVEL"}
    assert shown["default_model"] == {"value": "from-yaml", "source": f"yaml {config}"}
    assert shown["keep_alive"] == {"value": 300.0, "source": "default"}
    assert shown["api_keys"]["value"] == ["****"] and shown["openai_api_key"]["value"] == "****"
    assert shown["database_url"]["value"] == "postgresql://app:****@db.example:5432/vlm"
    for secret in ("yaml-secret-1", "env-secret-2", "db-password"):
        assert secret not in result.stdout
    table = run("config", "show", "--config", str(config), "--changed", env=env)
    assert table.exit_code == 0
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == {"port", "log_level", "default_model", "api_keys", "database_url", "openai_api_key"}
    assert "env VLMSERVE_LOG_LEVEL" in rows["log_level"] and "yaml" in rows["port"]


def test_config_show_changed_with_nothing_changed_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    result = run("config", "show", "--config", str(empty), "--changed", env={"VLMSERVE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "nothing differs from the defaults"
    assert "this shell's VLMSERVE_* variables" in result.stderr  # not the settings of a server already running


def test_config_show_reads_vlmserve_config_env(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("max_queue: 7\n")
    result = run("config", "show", "--json", env={"VLMSERVE_CONFIG": str(config)})
    assert json.loads(result.stdout)["settings"]["max_queue"] == {"value": 7, "source": f"yaml {config}"}


ADDRESSES = [("http://gpu:8000", "http://gpu:8000"), ("gpu:8000", "http://gpu:8000"), ("gpu", "http://gpu:11434"),
             ("0.0.0.0", "http://127.0.0.1:11434"), ("https://box.example/", "https://box.example"),
             ("0.0.0.0:9999", "http://127.0.0.1:9999")]  # fmt: skip


@pytest.mark.parametrize(("given", "expected"), ADDRESSES)
def test_server_address_forms(given: str, expected: str) -> None:
    assert server_url(given) == expected


def test_ask_refuses_a_missing_image_and_an_unreachable_server(tmp_path: Path) -> None:
    missing = run("ask", "--image", str(tmp_path / "nope.png"), "hello")
    assert missing.exit_code == 2 and "no such image file" in missing.stderr
    port = free_port()
    down = run("ask", "hello", env={"VLMSERVE_HOST_URL": f"127.0.0.1:{port}"})
    assert down.exit_code == 1
    assert f"cannot reach a vlmserve server at http://127.0.0.1:{port}" in down.stderr
    assert run("models", "--host", f"http://127.0.0.1:{port}").exit_code == 1


def test_pull_and_keys_usage_errors(tmp_path: Path) -> None:
    bad_repo = run("pull", "not a repo", "--data-dir", str(tmp_path))
    assert bad_repo.exit_code == 2 and "owner/name" in bad_repo.stderr
    bad_scope = run("keys", "--data-dir", str(tmp_path), "create", "--scope", "root")
    assert bad_scope.exit_code == 2 and "unknown scope 'root'" in bad_scope.stderr
    missing = run("batch", "submit", str(tmp_path / "none.jsonl"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_keys_round_trip_in_process(tmp_path: Path) -> None:
    where = ["keys", "--data-dir", str(tmp_path)]
    created = run(*where, "create", "--name", "ci", "--scope", "batch", "--scope", "inference")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip()
    key_id = created.stderr.split()[1]
    assert secret.startswith("vs-") and key_id.startswith("key_")
    listed = run(*where, "list")
    assert key_id in listed.stdout and "batch,inference" in listed.stdout and secret not in listed.stdout
    assert run(*where, "revoke", key_id).exit_code == 0
    assert run(*where, "revoke", key_id).exit_code == 1
    assert key_id not in run(*where, "list").stdout and "REVOKED" in run(*where, "list", "--all").stdout


def test_serve_refuses_a_broken_pulled_catalog(tmp_path: Path) -> None:
    (tmp_path / "pulled.yaml").write_text("models:\n- name: half\n  engine: llamacpp\n")  # no path
    result = run("serve", "--data-dir", str(tmp_path), "--embedded-models", "false")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "needs `path`" in result.stderr


@pytest.mark.parametrize("flag", ["--rpm", "--tpm", "--concurrency"])
def test_keys_create_refuses_limits_the_key_table_cannot_hold(tmp_path: Path, flag: str) -> None:
    where = ["keys", "--data-dir", str(tmp_path)]
    too_big = run(*where, "create", flag, str(2**63))
    assert too_big.exit_code == 2
    assert f"Invalid value for '{flag}'" in too_big.stderr and str(2**63 - 1) in too_big.stderr
    assert "Traceback" not in too_big.output and run(*where, "list").stdout == ""  # nothing was stored
    largest = run(*where, "create", flag, str(2**63 - 1))
    assert largest.exit_code == 0, largest.output
    assert f"{flag[2:]}={2**63 - 1}" in run(*where, "list").stdout


async def test_the_key_store_refuses_them_for_any_caller(tmp_path: Path) -> None:
    from vlmserve.jobs.db import open_driver
    from vlmserve.security.keys import KeyStore

    driver = await open_driver(None, tmp_path, None)
    try:
        with pytest.raises(ValueError, match=rf"tpm must be between 0 and {2**63 - 1} \(got {2**63}\)"):
            await KeyStore(driver).create(scopes=["inference"], tpm=2**63)
        assert await KeyStore(driver).list() == []
    finally:
        await driver.close()
