"""`vlmserve ask` and `vlmserve models` as real subprocesses against the session server with the embedded
models: the streamed answer is the model's answer, images travel from files, errors are the server's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
from conftest import text_image
from server_process import ServerProcess, running_server


def vlmserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VLMSERVE_") and k != "OLLAMA_HOST"}
    return subprocess.run([sys.executable, "-m", "vlmserve", *args], capture_output=True, text=True, timeout=180,
                          env={**clean, **(env or {})}, check=False)  # fmt: skip


def test_ask_streams_the_models_answer(server: ServerProcess) -> None:
    question = "Name three colours."
    done = vlmserve("ask", "--host", server.url, "--model", "smollm2", "--max-tokens", "24", question)
    assert done.returncode == 0, done.stderr
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        direct = client.chat.completions.create(
            model="smollm2", max_tokens=24, messages=[{"role": "user", "content": question}]
        )
    # smollm2 is greedy by default, so the streamed answer must be exactly the non-streamed one
    assert done.stdout.strip() == (direct.choices[0].message.content or "").strip()
    assert done.stdout.strip() != ""
    timings = done.stderr.strip().split(" · ")
    assert timings[0] == "smollm2"
    assert re.fullmatch(r"\d+ tokens in \d+\.\d\d s", timings[1]), timings
    assert re.fullmatch(r"first token after \d+\.\d\d s", timings[2]), timings
    assert re.fullmatch(r"\d+\.\d tokens/s", timings[3]), timings  # llama.cpp streams token by token


def test_ask_reads_an_image_file_with_ocr(server: ServerProcess, tmp_path: Path) -> None:
    picture = tmp_path / "label.png"
    picture.write_bytes(text_image("MANGO 8812"))
    done = vlmserve("ask", "-m", "rapidocr", "--image", str(picture), "read the label",
                    env={"OLLAMA_HOST": server.url.removeprefix("http://")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "8812" in done.stdout
    assert "MANGO" in done.stdout.upper()
    # OCR answers in one piece: no tokens/s to report (it printed "84204.1 tokens/s" from one chunk)
    timings = done.stderr.strip().split(" · ")
    assert timings[0] == "rapidocr"
    assert len(timings) == 3, timings
    assert timings[2].startswith("first token after "), timings


def test_ask_json_and_prompt_from_stdin(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "vlmserve", "ask", "--host", server.url, "-m", "smollm2", "--max-tokens", "4", "--json"],
        input="Say hi.",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "smollm2"
    assert answer["usage"]["completion_tokens"] >= 1


def test_ask_unknown_model_is_the_servers_error(server: ServerProcess) -> None:
    done = vlmserve("ask", "--host", server.url, "-m", "no-such-model", "hello")
    assert done.returncode == 1
    assert "server answered 404" in done.stderr
    assert "no-such-model" in done.stderr
    assert done.stdout == ""


def test_models_lists_the_catalog_and_what_is_loaded(server: ServerProcess) -> None:
    warm = httpx.post(
        server.url + "/v1/chat/completions",
        timeout=120,
        json={"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert warm.status_code == 200  # fmt: skip
    table = vlmserve("models", "--host", server.url)
    assert table.returncode == 0, table.stderr
    assert "smollm2" in table.stdout
    assert "rapidocr" in table.stdout
    assert "llamacpp" in table.stdout
    listed = vlmserve("models", "--host", server.url, "--json")
    rows = {row["name"]: row for row in json.loads(listed.stdout)["models"]}
    assert rows["smollm2"]["engine"] == "llamacpp"
    assert "completion" in rows["smollm2"]["capabilities"]
    assert rows["smollm2"]["state"] == "loaded"
    assert rows["smollm2"]["memory_bytes"] > 0
    assert rows["all-minilm"]["capabilities"] == ["embedding"]


def test_models_with_a_non_admin_key_shows_what_is_loaded() -> None:
    """Without the admin scope `models` reads /api/ps, whose names carry Ollama's tag (`smollm2:latest`)."""
    key = "sk-cli-inference-only"
    config = {"api_keys": [{"key": key, "id": "cli-infer", "scopes": ["inference"]}]}
    with running_server(config) as keyed:
        headers = {"authorization": f"Bearer {key}"}
        assert httpx.get(keyed.url + "/admin/models", headers=headers).status_code == 403  # so /api/ps is read
        hello = {"model": "smollm2", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
        warm = httpx.post(keyed.url + "/v1/chat/completions", headers=headers, timeout=120, json=hello)
        assert warm.status_code == 200, warm.text
        listed = vlmserve("models", "--host", keyed.url, "--api-key", key, "--json")
        table = vlmserve("models", "--host", keyed.url, "--api-key", key)
    assert listed.returncode == 0, listed.stderr
    states = {row["name"]: row["state"] for row in json.loads(listed.stdout)["models"]}
    assert states == {"smollm2": "loaded", "rapidocr": "unloaded", "smollm2-ocr": "unloaded",
                      "all-minilm": "unloaded"}  # fmt: skip
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("smollm2 "))
    assert row[3] == "yes", table.stdout
