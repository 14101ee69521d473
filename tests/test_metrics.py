"""/metrics, server-level: Prometheus text with requests by surface/model/status, latency, first token, tokens,
queue depth and wait, loaded models and memory, loads/unloads by reason, engine errors, batch lines by state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import MappingProxyType, SimpleNamespace
from typing import Any

import httpx
import pytest
from batch_helpers import chat_line, jsonl, wait_batch
from fake_upstreams import Behaviour, FakeUpstream
from openai import OpenAI
from server_process import ServerProcess, running_server

from vlmserve.api.metrics import Metrics
from vlmserve.scheduler.snapshot import SchedulerSnapshot

ADMIN = "vs-test-metrics-admin"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with FakeUpstream(Behaviour(tokens=4)) as good, FakeUpstream(Behaviour(error_status=500)) as bad:
        models = [{"name": "m1", "engine": "openai", "url": good.url, "remote_model": "fake"},
                  {"name": "broken", "engine": "openai", "url": bad.url, "remote_model": "fake"}]  # fmt: skip
        config = {"embedded_models": False, "api_keys": [ADMIN], "batch_poll_interval": 0.1, "models": models}
        with running_server(config) as proc:
            yield proc


def _value(text: str, name: str, **labels: str) -> float:
    """The sample `name` whose labels include `labels` (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def test_metrics_cover_requests_tokens_scheduler_and_batches(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    client = OpenAI(base_url=server.url + "/v1", api_key=ADMIN, max_retries=0)
    with httpx.Client(base_url=server.url, timeout=30, headers=auth) as http:
        body = {"model": "m1", "messages": [{"role": "user", "content": "hello there"}]}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        assert http.post("/v1/chat/completions", json={**body, "stream": True}).status_code == 200
        assert http.post("/api/chat", json={**body, "stream": False}).status_code == 200
        assert http.post("/v1/chat/completions", json={**body, "model": "broken"}).status_code == 502  # EngineError
        assert http.post("/admin/models/m1/unload").status_code == 200
        upload = client.files.create(file=("in.jsonl", jsonl([chat_line("a", "m1"), chat_line("b", "m1")])),
                                     purpose="batch")  # fmt: skip
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")  # fmt: skip
        assert wait_batch(client, batch.id).status == "completed"
        assert httpx.get(server.url + "/metrics").status_code == 401
        scrape = http.get("/metrics")
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert _value(text, "vlmserve_requests_total", surface="openai", model="m1", status="200") == 2
    assert _value(text, "vlmserve_requests_total", surface="ollama", model="m1", status="200") == 1
    assert _value(text, "vlmserve_requests_total", surface="openai", model="", status="401") == 0  # /metrics: admin
    assert _value(text, "vlmserve_requests_total", surface="simple", model="", status="401") == 1
    assert _value(text, "vlmserve_request_seconds_count", surface="openai", model="m1", status="200") == 2
    assert _value(text, "vlmserve_time_to_first_token_seconds_count", model="m1") == 3
    assert _value(text, "vlmserve_queue_wait_seconds_count", model="m1") == 3
    assert _value(text, "vlmserve_tokens_total", model="m1", direction="out") == 12
    assert _value(text, "vlmserve_tokens_total", model="m1", direction="in") > 0
    assert _value(text, "vlmserve_engine_errors_total", type="engine_error") == 1
    assert _value(text, "vlmserve_requests_total", surface="openai", model="broken", status="502") == 1
    assert 'vlmserve_queue_depth{model="m1"} 0.0' in text
    assert 'vlmserve_model_loaded{model="m1"}' in text and 'vlmserve_model_memory_bytes{model="m1"}' in text
    assert "# TYPE vlmserve_model_loads_total counter" in text and "# TYPE vlmserve_model_unloads_total counter" in text
    assert _value(text, "vlmserve_batch_lines", state="succeeded") == 2


async def test_load_and_unload_counters_come_from_the_scheduler() -> None:
    """Remote models never load; the scheduler's counters (kind, model, reason) are rendered as they are."""
    counters = {("load", "m1", "request"): 3, ("unload", "m1", "idle"): 2, ("unload", "m1", "evicted"): 1}
    snapshot = SchedulerSnapshot(0.0, MappingProxyType({}), 0, 2**30, MappingProxyType(counters))
    gpu = {"index": 0, "name": "G", "total_bytes": 8 * 2**30, "used_bytes": 5 * 2**30, "free_bytes": 3 * 2**30,
           "budget_bytes": 7 * 2**30, "models": {"m1": 2 * 2**30}}  # fmt: skip
    scheduler: Any = SimpleNamespace(snapshot=lambda: snapshot, gpu_report=lambda: [gpu])
    metrics = Metrics()
    metrics.attach(scheduler)
    text = (await metrics.render(None)).decode()
    assert _value(text, "vlmserve_model_loads_total", model="m1", reason="request") == 3
    assert _value(text, "vlmserve_model_unloads_total", model="m1", reason="idle") == 2
    assert _value(text, "vlmserve_model_unloads_total", model="m1", reason="evicted") == 1
    assert _value(text, "vlmserve_memory_budget_bytes") == 2**30
    assert _value(text, "vlmserve_gpu_memory_budget_bytes", gpu="0") == 7 * 2**30
    assert _value(text, "vlmserve_gpu_memory_used_bytes", gpu="0") == 5 * 2**30
    assert _value(text, "vlmserve_model_gpu_memory_bytes", model="m1", gpu="0") == 2 * 2**30


def test_request_metrics_labels_stay_bounded(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for i in range(20):  # unknown models and paths must not become label values
        httpx.post(server.url + "/v1/chat/completions", headers=auth, json={"model": f"nope-{i}", "messages": []})
        httpx.get(server.url + f"/no/such/path/{i}", headers=auth)
    text = httpx.get(server.url + "/metrics", headers=auth).text
    assert "nope-" not in text and "/no/such" not in text
