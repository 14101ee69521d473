"""The replaced systems' own documented requests (../shared/seeds/), verbatim but for host and model names,
against a real server with the embedded models, asserting the response fields each system documents:

- the Flask vision wrapper (seed 000): POST /process, GET /health {"status": "healthy", "ollama", "model"},
  its README's Ollama probe GET /api/health;
- the VLM deployment service (seed 001): ollama.chat with images, the OpenAI client with a data: URI,
  POST /analyze, /analyze/upload?prompt=..., /analyze/optimized -> {"result"}, /analyze/async + /job/{id},
  its init script's GET /api/tags + `ollama pull` of a model already there;
- the multi-model AI server (seed 003): POST /generate/<model> (text, vision, audio, omni) and the five admin
  routes, errors {"error", "details"};
- Ollama serving notes (seed 002): GET / "Ollama is running", /api/generate with options, /v1 with a dummy key;
- the Ollama batch server (seed 004): /v1/files + /v1/batches + the output file, /health, /metrics.
Model names changed: llava:7b / Qwen2-VL / qwen_vl -> rapidocr (reads text in images) or smollm2-ocr,
deepseek / mistral / gemma3 -> smollm2.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from conftest import text_image
from fake_upstreams import FakeUpstream
from PIL import Image
from server_process import ServerProcess, free_port, running_server

RECEIPT = text_image("TOTAL 12.50")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seed-clients-data")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[ServerProcess]:
    # 4 frames per video: an image and a video together stay within rapidocr's 8 images per request
    with running_server({"data_dir": str(data_dir), "video_frames": 4}) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def jpeg(data: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def text_video(path: Path) -> bytes:
    """A short MJPG .avi whose frames read "FRAME 1", "FRAME 2"."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4.0, (480, 120))
    for label in (1, 2):
        frame = np.full((120, 480, 3), 255, np.uint8)
        cv2.putText(frame, f"FRAME {label}", (20, 85), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (0, 0, 0), 5)
        writer.write(frame)
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def wav(seconds: float = 0.5) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return out.getvalue()


# --- the Flask vision wrapper ---------------------------------------------------------------------------------


def test_flask_wrapper_process_and_health(http: httpx.Client) -> None:
    answer = http.post(
        "/process", files={"image": ("receipt.png", RECEIPT, "image/png")}, data={"message": "What is the total?"}
    )
    assert answer.status_code == 200 and isinstance(answer.json()["response"], str) and answer.json()["response"]
    health = http.get("/health")
    assert health.status_code == 200
    assert {k: health.json()[k] for k in ("status", "ollama", "model")} == {
        "status": "healthy",
        "ollama": "connected",
        "model": "smollm2-ocr",
    }
    assert health.json()["engines"]["smollm2"]["ready"] is True  # vlmserve's own fields stay
    assert http.get("/api/health").json()["status"] == "healthy"  # `curl http://localhost:11434/api/health`


def test_health_is_a_readiness_probe() -> None:
    """503 "unhealthy" while the model /process uses cannot serve (its engine is down), 200 once it can; a
    down engine of another model is "degraded", still 200. GET / stays 200 throughout (liveness)."""
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeUpstream() as live:
        models = [
            {
                "name": "llava",
                "engine": "ollama",
                "url": dead,
                "capabilities": ["completion", "vision"],
                "connect_timeout": 1.0,
            },
            {"name": "other", "engine": "ollama", "url": live.url},
        ]
        with running_server({"embedded_models": False, "models": models, "default_vision_model": "llava"}) as proc:
            down = httpx.get(proc.url + "/health", timeout=30)
            assert down.status_code == 503, down.text
            assert (down.json()["status"], down.json()["ollama"], down.json()["model"]) == (
                "unhealthy",
                "disconnected",
                "llava",
            )
            assert httpx.get(proc.url + "/").status_code == 200
        models[0]["url"], models[1]["url"] = live.url, dead
        with running_server({"embedded_models": False, "models": models, "default_vision_model": "llava"}) as proc:
            up = httpx.get(proc.url + "/health", timeout=30)
            assert up.status_code == 200 and up.json()["status"] == "degraded" and up.json()["ollama"] == "connected"


# --- the VLM deployment service -------------------------------------------------------------------------------


def test_deployment_service_clients(server: ServerProcess) -> None:
    image_data = b64(RECEIPT)
    with ollama.Client(host=server.url) as client:
        response = client.chat(
            model="rapidocr", messages=[{"role": "user", "content": "Describe this image", "images": [image_data]}]
        )
        assert "TOTAL" in response["message"]["content"].upper()
        # init-models.sh: wait for /api/tags, then `ollama pull` a model the server already has
        assert httpx.get(server.url + "/api/tags").status_code == 200
        assert client.pull("smollm2")["status"] == "success"
    content: Any = [
        {"type": "text", "text": "Describe this image"},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64(jpeg(RECEIPT))}"}},
    ]
    with openai.OpenAI(api_key="not-needed", base_url=server.url + "/v1", max_retries=0) as oai:
        reply = oai.chat.completions.create(
            model="rapidocr",
            messages=[{"role": "user", "content": content}],
        )
    assert "TOTAL" in (reply.choices[0].message.content or "").upper()


def test_deployment_service_analyze_routes(http: httpx.Client) -> None:
    body = {"prompt": "Describe this image", "image_base64": b64(RECEIPT), "model": "rapidocr"}
    for path in ("/analyze", "/analyze/optimized"):
        answer = http.post(path, json=body)
        assert answer.status_code == 200, answer.text
        assert "TOTAL" in answer.json()["result"].upper()  # AnalyzeResponse(result=...)
    # analyze_uploaded_image(prompt: str, file: UploadFile): the prompt is a query parameter
    long_prompt = "Read every word on this receipt and tell me the total amount due, please. " * 3
    asked = {}
    for prompt in ("Hi", long_prompt):
        answer = http.post(
            "/analyze/upload", params={"prompt": prompt}, files={"file": ("photo.jpg", jpeg(RECEIPT), "image/jpeg")}
        )
        assert answer.status_code == 200, answer.text
        assert isinstance(answer.json()["result"], str) and answer.json()["model"] == "smollm2-ocr"
        asked[prompt] = answer.json()["usage"]["prompt_tokens"]
    assert asked[long_prompt] > asked["Hi"] + 20  # the query's prompt reached the model


def _job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (job := http.get(f"/job/{job_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return dict(job)


def test_deployment_service_jobs(http: httpx.Client) -> None:
    submitted = http.post(
        "/analyze/async", json={"prompt": "Describe this", "image_base64": b64(RECEIPT), "model": "rapidocr"}
    )
    assert submitted.status_code == 202 and submitted.json()["job_id"]
    job = _job(http, submitted.json()["job_id"])
    assert job["status"] == "complete" and isinstance(job["result"], str) and "TOTAL" in job["result"].upper()
    failing = http.post("/analyze/async", json={"prompt": "x", "image_base64": b64(RECEIPT), "model": "nope"})
    job = _job(http, failing.json()["job_id"])
    assert job["status"] == "failed" and isinstance(job["error"], str) and "nope" in job["error"]
    missing = http.get("/job/job-does-not-exist")
    assert missing.status_code == 404 and missing.json()["error"]


# --- the multi-model AI server --------------------------------------------------------------------------------


def test_multi_model_generate(http: httpx.Client) -> None:
    hello = http.post(
        "/generate/smollm2", headers={"Content-Type": "application/json"}, content='{"prompt": "Hello, world!"}'
    )
    assert hello.status_code == 200 and isinstance(hello.json()["response"], str)
    explained = http.post(
        "/generate/smollm2",
        json={"prompt": "Explain quantum computing in simple terms", "max_new_tokens": 8, "temperature": 0.7},
    )
    result = explained.json()
    assert explained.status_code == 200 and result["usage"]["completion_tokens"] <= 8
    assert (result["model_type"], result["generation_method"], result["memory_optimized"]) == (
        "smollm2",
        "text_cpu",
        True,
    )
    image_b64 = b64(jpeg(RECEIPT))
    for model in ("rapidocr", "smollm2-ocr"):  # qwen_vl, blip_vqa
        vision = http.post(f"/generate/{model}", json={"prompt": "Describe this image", "image": image_b64})
        assert vision.status_code == 200, vision.text
        assert vision.json()["generation_method"] == "vision_cpu" and vision.json()["response"]
    assert (
        "TOTAL"
        in http.post("/generate/rapidocr", json={"prompt": "What color is the car?", "image": image_b64})
        .json()["response"]
        .upper()
    )


def test_multi_model_errors(http: httpx.Client) -> None:
    audio = {"prompt": "Transcribe this audio", "audio": b64(wav()), "max_new_tokens": 512}
    refused = http.post("/generate/smollm2", json=audio)  # no model here takes audio
    assert refused.status_code == 400 and "audio" in refused.json()["error"] and refused.json()["details"]
    unknown = http.post("/generate/deepseek", json={"prompt": "Hello, world!"})
    assert unknown.status_code == 404 and set(unknown.json()) == {"error", "details"}
    assert "smollm2" in unknown.json()["details"]
    garbage = http.post("/generate/rapidocr", json={"prompt": "x", "video": b64(b"not a video")})
    assert garbage.status_code == 400 and "video" in garbage.json()["error"]
    missing = http.post("/generate/smollm2", json={"max_new_tokens": 8})
    assert missing.status_code == 400 and missing.json()["error"].startswith("prompt") and missing.json()["details"]


def test_multi_model_omni(http: httpx.Client, tmp_path: Path) -> None:
    omni = {
        "prompt": "Analyze this multimedia content",
        "image": b64(RECEIPT),
        "audio": b64(wav()),
        "video": b64(text_video(tmp_path / "clip.avi")),
        "max_new_tokens": 512,
    }
    refused = http.post("/generate/rapidocr", json=omni)  # rapidocr reads images and video frames, not audio
    assert refused.status_code == 400 and "audio" in refused.json()["error"]
    del omni["audio"]
    answer = http.post("/generate/rapidocr", json=omni)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert {"response", "model_type", "generation_method", "memory_optimized"} <= set(result)
    assert (result["model_type"], result["generation_method"], result["memory_optimized"]) == (
        "rapidocr",
        "multimodal_cpu",
        True,
    )
    assert "TOTAL" in result["response"].upper() and "FRAME" in result["response"].upper()


def test_multi_model_admin_routes(http: httpx.Client, data_dir: Path) -> None:
    assert http.post("/generate/smollm2", json={"prompt": "hi", "max_new_tokens": 2}).status_code == 200
    memory = http.get("/admin/memory_status").json()
    for field in (
        "timestamp",
        "gpu_available",
        "gpu_total_gb",
        "gpu_allocated_gb",
        "gpu_free_gb",
        "memory_warning",
        "multimodal_safe",
    ):
        assert field in memory, field
    assert memory["gpu_available"] is False and memory["budget_used_gb"] > 0 and "smollm2" in memory["loaded_models"]
    status = http.get("/admin/model_status").json()
    assert {"smollm2", "rapidocr", "smollm2-ocr", "all-minilm"} <= set(status["available_models"])
    smol = status["model_configs"]["smollm2"]
    assert (smol["type"], smol["path_exists"], smol["quant_bits"]) == ("text", True, 4) and smol["path"].endswith(
        ".gguf"
    )
    assert status["model_configs"]["all-minilm"]["type"] == "embedding"

    # temporary files: an interrupted pull from long ago, and one changed just now (may still be written)
    cache = data_dir / "models" / "acme--m-GGUF" / ".cache" / "huggingface" / "download"
    cache.mkdir(parents=True)
    (cache / "old.incomplete").write_bytes(b"x" * 1000)
    os.utime(cache / "old.incomplete", (time.time() - 7200, time.time() - 7200))
    (cache / "new.incomplete").write_bytes(b"y" * 10)
    temp = http.get("/admin/temp_status").json()
    assert temp["categories"]["partial_pulls"] == {"files": 2, "bytes": 1010, "in_use": 1}
    cleaned = http.post("/admin/cleanup_temp").json()
    assert (cleaned["removed_files"], cleaned["freed_bytes"], cleaned["kept_in_use"]) == (1, 1000, 1)
    assert not (cache / "old.incomplete").exists() and (cache / "new.incomplete").exists()

    loaded = http.get("/admin/memory_status").json()["loaded_models"]
    emergency = http.post("/admin/emergency_cleanup")
    assert emergency.status_code == 200 and "smollm2" in loaded and emergency.json()["unloaded"] == loaded
    assert http.get("/admin/memory_status").json()["loaded_models"] == []


def test_multi_model_memory_status_reads_the_gpu_report(tmp_path: Path) -> None:
    """With a GPU the scheduler manages (a scripted one: nothing runs there), the GPU fields are its report."""
    gpus = [{"name": "scripted 24 GB", "total_mb": 24 * 1024, "used_mb": 1024}]
    config = {"gpu_probe": "scripted", "scripted_gpus": gpus, "data_dir": str(tmp_path)}
    with running_server(config) as proc, httpx.Client(base_url=proc.url, timeout=120) as http:
        idle = http.get("/admin/memory_status").json()
        assert (idle["gpu_available"], idle["gpu_total_gb"], idle["gpu_free_gb"], idle["device"]) == (
            True,
            24.0,
            23.0,
            "cuda",
        )
        assert idle["gpu_allocated_gb"] == 0.0
        answer = http.post("/generate/smollm2", json={"prompt": "Hello, world!", "max_new_tokens": 2}).json()
        assert answer["generation_method"] == "text_gpu"  # the scheduler placed it on the GPU
        assert http.get("/admin/memory_status").json()["gpu_allocated_gb"] > 0


# --- Ollama serving notes, and the batch server ---------------------------------------------------------------


def test_ollama_notes_requests(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/").text == "Ollama is running"
    payload = {
        "model": "smollm2",
        "prompt": "What is the capital of France?",
        "system": "",
        "options": {"temperature": 0.7, "max_tokens": 100, "num_predict": 16},
    }
    lines = [
        json.loads(line)
        for line in httpx.post(server.url + "/api/generate", json=payload, timeout=120).text.splitlines()
    ]
    assert all({"response", "model", "created_at"} <= set(line) for line in lines) and lines[-1]["done"] is True
    question = {"role": "user", "content": "What is the capital of France?"}
    body = {"model": "smollm2", "messages": [question], "max_tokens": 8}
    chat = httpx.post(
        server.url + "/v1/chat/completions", headers={"Authorization": "Bearer dummy"}, json=body, timeout=120
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]


def test_batch_server_requests(http: httpx.Client) -> None:
    lines = [
        {
            "custom_id": "request-1",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "smollm2", "messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8},
        },
        {
            "custom_id": "request-2",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "smollm2",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 8,
            },
        },
    ]
    upload = http.post(
        "/v1/files",
        files={"file": ("batch_requests.jsonl", "\n".join(map(json.dumps, lines)))},
        data={"purpose": "batch"},
    )
    batch = http.post(
        "/v1/batches",
        json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    ).json()
    deadline = time.monotonic() + 120
    while (batch := http.get(f"/v1/batches/{batch['id']}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    output = http.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
    results = {r["custom_id"]: r for r in map(json.loads, output)}
    assert set(results) == {"request-1", "request-2"}
    for result in results.values():
        assert result["error"] is None and result["response"]["status_code"] == 200
        assert result["response"]["body"]["choices"][0]["message"]["content"]
    assert http.get("/health").status_code == 200 and "vlmserve_" in http.get("/metrics").text
