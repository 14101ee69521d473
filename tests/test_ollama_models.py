"""Ollama's model management through the official `ollama` client against a real server and the Hub
imitation (tests/hub_imitation.py, HF_ENDPOINT): pull with progress, a pulled model answering a chat with no
restart, pull of a model already there, copy, create (from a path, from uploaded blobs, from a catalog model;
GGUF + mmproj with the tiny LLaVA), delete and its files, ps, POST /admin/reload of an edited config file,
and the admin scope once API keys exist. The GGUF served by the imitation is SmolLM2's real one."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
import yaml
from hub_imitation import Hub, running_hub
from PIL import Image
from server_process import ServerProcess, running_server

from vlmserve.service.catalog import embedded_specs

SMOL = next(s for s in embedded_specs() if s.name == "smollm2").path
assert SMOL is not None
REPO = "acme/SmolLM2-GGUF"
QUANT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REF = f"hf.co/{REPO}:Q4_1"
SAY = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    weights = Path(SMOL).read_bytes()
    files = {QUANT_FILE: weights, "SmolLM2-135M-Instruct.Q8_0.gguf": weights, "README.md": b"# smol\n"}
    with running_hub(Hub({REPO: files})) as served:
        yield served


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ollama-models-data")


@pytest.fixture(scope="module")
def server(hub: Hub, data_dir: Path) -> Iterator[ServerProcess]:
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(data_dir.parent / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with running_server({"data_dir": str(data_dir), "keep_alive": 600}, env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url, timeout=300) as c:
        yield c


def names(client: ollama.Client) -> set[str]:
    return {m.model.removesuffix(":latest") for m in client.list().models if m.model}  # Ollama adds the tag


def test_pull_streams_progress_and_the_model_answers_without_a_restart(client: ollama.Client, hub: Hub) -> None:
    lines = list(client.pull(REF, stream=True))
    statuses = [line.status for line in lines]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    layer = [line for line in lines if line.digest]
    size = Path(SMOL).stat().st_size
    assert layer and all(line.total == size for line in layer)
    assert layer[-1].completed == size and layer[-1].status == f"pulling {layer[-1].digest[7:19]}"
    assert hub.gets("SmolLM2-135M-Instruct.Q8_0.gguf") == []  # only the quantisation asked for
    assert REF in names(client)
    reply = client.chat(model=REF, messages=SAY, options={"num_predict": 8})
    assert reply.message.content and reply.model == REF
    running = {m.model: m for m in client.ps().models}
    assert REF in running and running[REF].size and running[REF].expires_at is not None


def test_pull_of_a_model_already_there_is_success_at_once(client: ollama.Client, hub: Hub) -> None:
    asked = len(hub.requests)
    assert client.pull(REF).status == "success"  # stream: false
    assert client.pull("smollm2").status == "success"  # embedded: never on the Hub
    assert [line.status for line in client.pull("smollm2:135m", stream=True)] == ["pulling manifest", "success"]
    assert len(hub.requests) == asked


@pytest.mark.parametrize(
    ("reference", "status", "words"),
    [
        ("hf.co/acme/nothing-here", 404, "no model repository"),
        ("llava:7b", 404, "Hugging Face Hub"),
        (f"hf.co/{REPO}:Q5_K_M", 404, "matches no GGUF file"),
        ("hf.co/not a repo", 400, "not a Hub repository"),
    ],
)
def test_pull_errors(client: ollama.Client, reference: str, status: int, words: str) -> None:
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as raised:
            list(client.pull(reference, stream=True)) if stream else client.pull(reference)
        assert raised.value.status_code == status and words in raised.value.error, raised.value.error


def test_copy_then_delete_keeps_the_shared_files_until_the_last_user(client: ollama.Client, data_dir: Path) -> None:
    client.pull(REF)
    stored = data_dir / "models" / "acme--SmolLM2-GGUF" / QUANT_FILE
    assert client.copy(REF, "smol-copy").status == "success"
    assert {REF, "smol-copy"} <= names(client)
    assert client.show("smol-copy").modelfile and "copy of" in str(client.show("smol-copy").modelinfo)
    assert client.delete("smol-copy").status == "success"
    assert "smol-copy" not in names(client) and stored.is_file()
    assert client.delete(REF).status == "success"
    assert REF not in names(client) and not stored.exists() and not stored.parent.exists()
    with pytest.raises(ollama.ResponseError) as gone:
        client.chat(model=REF, messages=SAY)
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as again:
        client.delete(REF)
    assert again.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as embedded:
        client.delete("smollm2")
    assert embedded.value.status_code == 400 and "config" in embedded.value.error
    assert Path(SMOL).is_file()


def test_create_from_a_path_from_blobs_and_from_a_model(client: ollama.Client, data_dir: Path) -> None:
    made = client.create(model="made", from_=SMOL, parameters={"temperature": 0, "num_predict": 4, "num_ctx": 1024})
    assert made.status == "success"
    shown = client.show("made")
    assert "temperature 0" in (shown.parameters or "") and shown.modelinfo["general.context_length"] == 1024
    assert (client.chat(model="made", messages=SAY).eval_count or 99) <= 4  # its num_predict default

    digest = client.create_blob(SMOL)
    assert httpx.head(f"{client._client.base_url}/api/blobs/{digest}").status_code == 200
    lines = list(client.create(model="from-blob", files={"smol.gguf": digest}, stream=True))
    assert lines[-1].status == "success"
    blob = data_dir / "blobs" / f"sha256-{digest[7:]}"
    assert blob.is_file() and client.show("from-blob").modelfile.count(str(blob)) == 1

    assert client.create(model="greedy", from_="made", parameters={"seed": 7}).status == "success"
    assert "seed 7" in (client.show("greedy").parameters or "")
    with pytest.raises(ollama.ResponseError) as redefined:  # "made" has a runner: the scheduler knows it
        client.create(model="made", from_=SMOL, parameters={"temperature": 1})
    assert redefined.value.status_code == 409
    assert client.delete("from-blob").status == "success" and not blob.exists()  # a blob no model uses


@pytest.mark.parametrize(
    ("body", "words", "status"),
    [
        ({"model": "x", "from": "/no/such/file.gguf"}, "no such file", 400),
        ({"model": "x", "from": "relative.gguf"}, "absolute path", 400),
        ({"model": "x", "files": {"a.gguf": "sha256:" + "0" * 64}}, "upload it first", 400),
        ({"model": "x", "files": {"a.gguf": "sha256:xyz"}}, "not a blob digest", 400),
        ({"model": "x", "from": "smollm2", "system": "You are terse."}, "system prompt", 400),
        ({"model": "x", "from": "smollm2", "parameters": {"mirostat": 2}}, "unsupported parameters: mirostat", 400),
        ({"model": "x", "from": "smollm2", "parameters": {"temperature": 1e9}}, "parameters.temperature", 400),
        ({"model": "x", "modelfile": "FROM smollm2"}, "modelfile", 400),
        ({"model": "bad name!", "from": "smollm2"}, "invalid model name", 400),
        ({"model": "smollm2", "from": "all-minilm"}, "declared in the configuration", 409),
        ({"model": "x"}, "nothing to create from", 400),
    ],
)
def test_create_errors_name_the_problem(server: ServerProcess, body: dict[str, Any], words: str, status: int) -> None:
    """409 only where the model exists and its kind forbids it: a configured one is not replaced over the API."""
    answer = httpx.post(server.url + "/api/create", json={**body, "stream": False}, timeout=30)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"], answer.text


def test_create_refuses_a_file_that_is_not_gguf(client: ollama.Client, tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a model at all")
    with pytest.raises(ollama.ResponseError) as refused:
        client.create(model="fake", files={"model.gguf": str(fake)})
    assert refused.value.status_code == 400 and "not a GGUF file" in refused.value.error
    with pytest.raises(ollama.ResponseError) as mismatch:  # bytes that are not the digest named
        client._request_raw("POST", "/api/blobs/sha256:" + "1" * 64, content=b"other bytes")
    assert mismatch.value.status_code == 400 and "digest mismatch" in mismatch.value.error
    host, port = str(client._client.base_url.host), int(client._client.base_url.port or 80)
    with socket.create_connection((host, port), timeout=30) as sock:  # 512 GiB announced: more than the disk holds
        sock.sendall(
            b"POST /api/blobs/sha256:" + b"2" * 64 + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % 2**39
        )
        head = ""
        while "free disk space" not in head and (chunk := sock.recv(65536)):  # until the body came, or EOF
            head += chunk.decode()
    assert head.startswith("HTTP/1.1 413") and "free disk space" in head


def test_reload_serves_an_edited_config_file(server: ServerProcess, client: ollama.Client) -> None:
    config_path = server.log_path.parent / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["models"] = [{"name": "from-config", "engine": "llamacpp", "path": SMOL, "context_size": 512}]
    config_path.write_text(yaml.safe_dump(config))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        _edit_and_reload(http, client, config_path, config)


def _edit_and_reload(http: httpx.Client, client: ollama.Client, config_path: Path, config: dict[str, Any]) -> None:
    added = http.post("/admin/reload").json()
    assert added["added"] == ["from-config"] and added["restart_needed"] == [] and "from-config" in names(client)
    config["models"][0]["context_size"] = 1024
    config_path.write_text(yaml.safe_dump(config))
    changed = http.post("/admin/reload").json()
    assert (
        changed["changed"] == ["from-config"] and client.show("from-config").modelinfo["general.context_length"] == 1024
    )
    assert client.chat(model="from-config", messages=SAY, options={"num_predict": 2}).message.content
    config["models"][0]["context_size"] = 2048  # the scheduler runs it now: the old definition stays until a restart
    config_path.write_text(yaml.safe_dump(config))
    kept = http.post("/admin/reload").json()
    assert kept["changed"] == kept["restart_needed"] == ["from-config"]
    assert client.show("from-config").modelinfo["general.context_length"] == 1024
    config_path.write_text("models: [{name: broken}]\n")
    broken = http.post("/admin/reload")
    assert broken.status_code == 400 and "models.0" in broken.json()["error"] and "from-config" in names(client)
    del config["models"]
    config_path.write_text(yaml.safe_dump(config))
    assert http.post("/admin/reload").json()["removed"] == ["from-config"] and "from-config" not in names(client)


def test_model_management_needs_the_admin_scope(tmp_path: Path) -> None:
    keys = ["vs-admin-key", {"key": "vs-inference-key", "scopes": ["inference"]}]
    with running_server({"embedded_models": False, "api_keys": keys, "data_dir": str(tmp_path)}) as proc:
        for key, status in (("vs-inference-key", 403), ("vs-admin-key", 404)):
            with ollama.Client(host=proc.url, headers={"Authorization": f"Bearer {key}"}) as c:
                with pytest.raises(ollama.ResponseError) as refused:
                    c.pull("some-model")
                assert refused.value.status_code == status
                with pytest.raises(ollama.ResponseError) as deleted:
                    c.delete("some-model")
                assert deleted.value.status_code == status
        assert httpx.get(proc.url + "/api/health").status_code == 503  # open to all; no model to serve


@pytest.mark.transformers
def test_create_a_vlm_from_gguf_and_mmproj(client: ollama.Client, tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny_models = pytest.importorskip("tiny_models")
    if not tiny_models.converter_available():
        pytest.skip("llama.cpp converter not fetched (run scripts/fetch_llama_convert.sh)")
    root = tmp_path_factory.mktemp("tiny-llava")
    gguf, mmproj = tiny_models.build_tiny_llava_gguf(tiny_models.build_tiny_llava(root / "hf"), root / "gguf")
    client.create(model="tiny-vlm", files={"model.gguf": str(gguf), "projector.gguf": str(mmproj)})
    assert "vision" in (client.show("tiny-vlm").capabilities or [])
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture, format="PNG")
    with_image = client.chat(
        model="tiny-vlm",
        options={"num_predict": 2},
        messages=[{"role": "user", "content": "describe", "images": [picture.getvalue()]}],
    )
    text_only = client.chat(
        model="tiny-vlm", options={"num_predict": 2}, messages=[{"role": "user", "content": "describe"}]
    )
    assert (with_image.prompt_eval_count or 0) > (text_only.prompt_eval_count or 0)  # the image became tokens
