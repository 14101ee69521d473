"""Upload endpoints (/process, /analyze, /analyze/upload), /health, and runner supervision, over raw HTTP."""

from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from conftest import text_image
from server_process import ServerProcess, runner_pids


def test_process_multipart(server: ServerProcess) -> None:
    response = httpx.post(
        server.url + "/process",
        timeout=120,
        files={"image": ("receipt.png", text_image("TOTAL 42.50 EUR"), "image/png")},
        data={"message": "What is the total amount?"},
    )
    assert response.status_code == 200, response.text
    assert "42.50" in response.json()["response"]


def test_ocr_pipeline_uses_the_chat_models_greedy_defaults(server: ServerProcess) -> None:
    """smollm2 is greedy by default; the pipeline must hand it those defaults, so one question gets one answer."""
    answers = {
        httpx.post(
            server.url + "/process",
            timeout=120,
            files={"image": ("receipt.png", text_image("TOTAL 17.25 EUR"), "image/png")},
            data={"message": "What is the total amount?", "model": "smollm2-ocr"},
        ).json()["response"]
        for _ in range(3)
    }
    assert len(answers) == 1, answers


def test_process_with_explicit_ocr_model(server: ServerProcess) -> None:
    response = httpx.post(
        server.url + "/process",
        timeout=60,
        files={"image": ("a.png", text_image("MANGO 9"), "image/png")},
        data={"message": "read", "model": "rapidocr"},
    )
    assert "MANGO" in response.json()["response"] and list(response.json()) == ["response"]


def test_analyze_json_and_upload(server: ServerProcess) -> None:
    b64 = base64.b64encode(text_image("LEMON 31")).decode()
    reply = httpx.post(
        server.url + "/analyze", json={"prompt": "read", "image_base64": b64, "model": "ocr"}, timeout=60
    )
    assert reply.status_code == 200 and "LEMON" in reply.json()["response"] and "31" in reply.json()["response"]
    assert reply.json()["model"] == "ocr" and reply.json()["usage"]["prompt_tokens"] == 1
    data_uri = "data:image/png;base64," + b64  # seeds accepted data URIs here too
    assert (
        "31"
        in httpx.post(server.url + "/analyze", json={"image_base64": data_uri, "model": "rapidocr"}, timeout=60).json()[
            "response"
        ]
    )
    upload = httpx.post(
        server.url + "/analyze/upload",
        timeout=60,
        data={"prompt": "read", "model": "rapidocr"},
        files={"file": ("x.png", text_image("PEACH 8"), "image/png")},
    )
    assert "PEACH" in upload.json()["response"]


@pytest.mark.parametrize(
    "kwargs,status",
    [
        ({"data": {"message": "no image"}}, 400),
        ({"files": {"image": ("e.png", b"", "image/png")}}, 400),
        ({"files": {"image": ("t.jpg", b"this is a text file", "image/jpeg")}}, 400),
        ({"files": {"image": ("i.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")}}, 400),
        ({"json": {"message": "wrong content type"}}, 400),
    ],
)
def test_process_bad_input_is_400(server: ServerProcess, kwargs: dict[str, object], status: int) -> None:
    response = httpx.post(server.url + "/process", timeout=30, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_analyze_bad_base64_is_400(server: ServerProcess) -> None:
    response = httpx.post(server.url + "/analyze", json={"image_base64": "!!!"})
    assert response.status_code == 400 and "base64" in response.json()["error"]
    assert httpx.post(server.url + "/analyze", json={"prompt": "x"}).status_code == 400


def test_health_reports_engines(server: ServerProcess) -> None:
    answer = httpx.get(server.url + "/health", timeout=30)
    health = answer.json()
    assert answer.status_code == 200 and health["status"] == "healthy" and health["ready"] is True
    assert health["ollama"] == "connected" and health["model"] == "smollm2-ocr"
    assert health["default_model"] == "smollm2"
    assert health["default_vision_model"] == "smollm2-ocr"
    assert health["engines"]["smollm2"]["engine"] == "llamacpp"
    assert health["warnings"] == []  # the embedded models' files are all there


def test_unknown_route_is_404(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(server.url + "/api/nothing").status_code == 404


def _cpu_ticks(pid: int) -> int:
    """User + system CPU clock ticks of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def test_crashed_runner_gives_502_and_next_request_recovers(server: ServerProcess) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
        "max_tokens": 2000,
        "temperature": 0.8,
        "stream": True,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert "chat.completion.chunk" in first
        pids = runner_pids(server, "smollm2")
        assert pids, "no runner process found for smollm2"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        rest = [line for line in lines if line.startswith("data:")]
    errors = [line for line in rest if '"error"' in line]
    assert errors and "engine_error" in errors[0]  # in-band error: the status was already sent
    assert rest[-1] == "data: [DONE]"
    # the server stays up, and the next request starts a fresh runner
    deadline = time.monotonic() + 60
    while True:
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            timeout=60,
            json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        )
        if reply.status_code == 200 or time.monotonic() > deadline:
            break
    assert reply.status_code == 200, reply.text
    assert runner_pids(server, "smollm2") and set(runner_pids(server, "smollm2")).isdisjoint(pids)


def test_non_stream_request_to_dying_runner_is_502(server: ServerProcess) -> None:
    httpx.post(
        server.url + "/v1/chat/completions",
        timeout=60,
        json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
    )
    pids = runner_pids(server, "smollm2")

    def kill_soon() -> None:
        """Kill the runner once it has spent 0.2 s of CPU on the long request: it is generating by then."""
        start = sum(_cpu_ticks(pid) for pid in pids)
        deadline = time.monotonic() + 60
        while sum(_cpu_ticks(pid) for pid in pids) - start < 0.2 * os.sysconf("SC_CLK_TCK"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    import threading

    killer = threading.Thread(target=kill_soon)
    killer.start()
    reply = httpx.post(  # 400 tokens: seconds of runner CPU, so the kill lands mid-answer; and the retry ends
        server.url + "/v1/chat/completions",
        timeout=180,
        json={
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Write a very long essay about mountains."}],
            "max_tokens": 400,
        },
    )
    killer.join()
    if reply.status_code == 200:  # died before its first byte: retried once on a fresh runner
        assert reply.json()["choices"][0]["message"]["content"]
        return
    assert reply.status_code == 502, reply.text
    assert reply.json()["error"]["type"] == "engine_error"
    assert "crashed" in reply.json()["error"]["message"]
