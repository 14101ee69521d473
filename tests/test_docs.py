"""The docs stay true: the configuration reference matches the declarations, every route is in api.md, relative
links resolve, YAML examples load with the real Settings, and the runnable examples run against a real server.

A fenced block is runnable when the line before it is an HTML comment `<!-- doc-test -->` (bash or python),
optionally `<!-- doc-test expect: REGEX -->` (the output must match); `<!-- doc-test: config -->` before a yaml
block means "loads as a vlmserve config file". Examples are written for http://127.0.0.1:11434; the test
points them at its own server by rewriting that address. Blocks of one page share a working folder, in order,
with the sample images receipt.png / receipt.jpg (a receipt line "TOTAL 12.50").
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_help import serve_help
from conftest import text_image
from server_process import ServerProcess

from vlmserve.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_ADDRESS = "127.0.0.1:11434"
RUNNABLE_PAGES = ["from-ollama.md", "from-flask-wrapper.md", "batch-jobs.md", "troubleshooting.md", "api.md"]
CONFIG_PAGES = ["from-litellm.md"]
LINKED_PAGES = [*RUNNABLE_PAGES, *CONFIG_PAGES, "docker.md", "batches.md", "configuration.md"]
FENCED = re.compile(
    r"<!-- doc-test(?P<config>: config)?(?: expect: (?P<expect>.+?))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@dataclass(frozen=True)
class Example:
    lang: str
    body: str
    expect: str | None
    config: bool


def examples(page: str) -> list[Example]:
    text = (DOCS / page).read_text()
    return [Example(m["lang"], m["body"], m["expect"], bool(m["config"])) for m in FENCED.finditer(text)]


def load_generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current() -> None:
    generator = load_generator()
    expected = generator.render()  # type: ignore[attr-defined]
    current = (DOCS / "configuration.md").read_text()
    assert current == expected, "docs/configuration.md is out of date: run `make docs`"


def test_configuration_reference_lists_every_setting_with_a_working_flag() -> None:
    text = (DOCS / "configuration.md").read_text()
    help_text = serve_help()
    for name in Settings.model_fields:
        assert f"| `{name}` | `VLMSERVE_{name.upper()}` |" in text, f"{name} missing: run `make docs`"
    flags = set(re.findall(r"`(--[a-z0-9-]+)`", text))
    assert "--memory-budget-mb" in flags
    missing = sorted(flag for flag in flags if flag not in help_text)
    assert not missing, f"flags in docs/configuration.md that `vlmserve serve` does not take: {missing}"


def test_api_reference_lists_every_route() -> None:
    from vlmserve.api.app import create_app

    paths = create_app(Settings(embedded_models=False)).openapi()["paths"]
    text = (DOCS / "api.md").read_text()
    operations = [(method.upper(), path) for path, item in paths.items() for method in item]
    assert len(operations) > 30
    missing = [f"{method} {path}" for method, path in operations if f"{method} {path}" not in text]
    assert not missing, f"routes missing from docs/api.md: {missing}"


# POST routes that take no body: an action named by the path alone
BODYLESS_POSTS = {
    "/v1/batches/{batch_id}/cancel", "/v1/responses/{response_id}/cancel", "/admin/cleanup_temp",
    "/admin/emergency_cleanup", "/admin/reload",
    "/admin/models/{name}/load", "/admin/models/{name}/unload", "/admin/unload-all",
}  # fmt: skip


def test_every_route_that_reads_a_body_declares_it() -> None:
    """Routes that read their form or stream themselves (/v1/files, audio, /process, blobs) declare it too, so
    clients generated from /openapi.json and schemathesis send one."""
    from vlmserve.api.app import create_app

    paths = create_app(Settings(embedded_models=False)).openapi()["paths"]
    undeclared = [
        path for path, item in paths.items() for method, operation in item.items()
        if method in ("post", "put", "patch") and "requestBody" not in operation and path not in BODYLESS_POSTS
    ]  # fmt: skip
    assert not undeclared, f"operations without a request body in /openapi.json: {undeclared}"
    form = paths["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"]
    assert "purpose" in form["properties"]


@pytest.mark.parametrize("page", [*LINKED_PAGES, "../README.md"])
def test_relative_links_resolve(page: str) -> None:
    source = (DOCS / page).resolve()
    broken = [
        link for link in LINK.findall(source.read_text())
        if "://" not in link and not link.startswith("mailto:") and not (source.parent / link).exists()
    ]  # fmt: skip
    assert not broken, f"{source.name} links to missing files: {broken}"


@pytest.mark.parametrize("page", CONFIG_PAGES)
def test_config_examples_load(page: str, tmp_path: Path) -> None:
    blocks = [example for example in examples(page) if example.config]
    assert blocks, f"{page} has no `doc-test: config` block"
    for index, example in enumerate(blocks):
        path = tmp_path / f"example{index}.yaml"
        path.write_text(example.body)
        settings = load_settings(path)
        assert settings.models, f"{page} example {index} declares no model"


def test_config_examples_are_checked(tmp_path: Path) -> None:
    """A misspelt key must fail the check above: the examples are validated, not just parsed."""
    import pydantic

    bad = "models:\n  - name: x\n    engine: openai\n    url: http://h/v1\n    replica: [http://g/v1]\n"
    path = tmp_path / "bad-example.yaml"
    path.write_text(bad)
    with pytest.raises(pydantic.ValidationError):
        load_settings(path)


def run_example(example: Example, workdir: Path, address: str) -> str:
    body = example.body.replace(DOC_ADDRESS, address)
    inherited = os.environ.items()
    env = {k: v for k, v in inherited if not k.startswith(("VLMSERVE_", "OLLAMA_")) and "proxy" not in k.lower()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if example.lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", body]
    elif example.lang == "python":
        command = [sys.executable, "-c", body]
    else:
        raise AssertionError(f"doc-test block in {example.lang!r}: only bash and python run")
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"example failed ({result.returncode}):\n{body}\n--- stdout\n{result.stdout}" \
                                   f"\n--- stderr\n{result.stderr}"  # fmt: skip
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_doc_examples_run(page: str, server: ServerProcess, tmp_path: Path) -> None:
    runnable = [example for example in examples(page) if not example.config]
    assert runnable, f"{page} has no doc-test block"
    (tmp_path / "receipt.png").write_bytes(text_image("TOTAL 12.50"))
    (tmp_path / "receipt.jpg").write_bytes(text_image("TOTAL 12.50", fmt="JPEG"))
    address = server.url.removeprefix("http://")
    for example in runnable:
        output = run_example(example, tmp_path, address)
        assert output.strip(), f"example printed nothing:\n{example.body}"
        if example.expect:
            assert re.search(example.expect, output, re.M), f"expected /{example.expect}/ in:\n{output}"
