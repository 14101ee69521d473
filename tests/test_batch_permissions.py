"""Batches and API keys, server-level: a batch is validated against the model allowlist of the key that created
it (a line naming another model fails the batch at validation with `model_not_allowed`, as OpenAI fails a batch
whose lines name a model the project cannot use); batch routes need the `batch` scope."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from batch_helpers import chat_line, jsonl, output_lines, wait_batch
from fake_upstreams import FakeUpstream
from openai import OpenAI
from PIL import Image
from server_process import ServerProcess, running_server

from vlmserve.jobs.validate import parse_batch_input

ADMIN = "vs-test-batchperm-admin"
LIMITED = "vs-test-batchperm-m1-only"
INFER_ONLY = "vs-test-batchperm-inference"
LIMITED_BOTH = "vs-test-batchperm-m1-live-and-batch"
URL = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with FakeUpstream() as upstream:
        models = [{"name": n, "engine": "openai", "url": upstream.url, "remote_model": "fake",
                   "capabilities": ["completion", "vision"]} for n in ("m1", "m2")]  # fmt: skip
        config = {
            "embedded_models": False, "models": models, "default_model": "m2", "default_vision_model": "m2",
            "batch_poll_interval": 0.1, "data_dir": str(tmp_path_factory.mktemp("batchperm-data")),
            "api_keys": [ADMIN, {"key": LIMITED, "id": "m1-batcher", "scopes": ["batch"], "models": ["m1"]},
                         {"key": INFER_ONLY, "scopes": ["inference"]},
                         {"key": LIMITED_BOTH, "scopes": ["inference", "batch"], "models": ["m1"]}],
        }  # fmt: skip
        with running_server(config) as proc:
            yield proc


def _client(server: ServerProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def _submit(client: OpenAI, lines: list[bytes]) -> str:
    file = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint=URL, completion_window="24h").id


def test_lines_outside_the_key_allowlist_fail_validation(server: ServerProcess) -> None:
    limited = _client(server, LIMITED)
    batch = wait_batch(limited, _submit(limited, [chat_line("a", "m1"), chat_line("b", "m2"), chat_line("c", "m1")]))
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    [error] = batch.errors.data
    assert error.code == "model_not_allowed" and error.line == 2 and error.param == "body.model"
    assert "may not use model 'm2'" in (error.message or "")
    assert batch.output_file_id is None and batch.request_counts is not None and batch.request_counts.total == 0


def test_the_default_model_counts_too(server: ServerProcess) -> None:
    limited = _client(server, LIMITED)
    line = chat_line("no-model", "m1")
    unnamed = line.replace(b'"model":"m1",', b"")
    assert b'"model"' not in unnamed
    batch = wait_batch(limited, _submit(limited, [unnamed]))
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data is not None
    assert batch.errors.data[0].code == "model_not_allowed" and "'m2'" in (batch.errors.data[0].message or "")


def test_allowed_lines_run_and_unrestricted_keys_run_all(server: ServerProcess) -> None:
    limited = _client(server, LIMITED)
    done = wait_batch(limited, _submit(limited, [chat_line("a", "m1"), chat_line("b", "m1")]))
    assert done.status == "completed", done.errors
    assert sorted(r["custom_id"] for r in output_lines(limited, done.output_file_id)) == ["a", "b"]
    admin = _client(server, ADMIN)
    both = wait_batch(admin, _submit(admin, [chat_line("a", "m1"), chat_line("b", "m2")]))
    assert both.status == "completed" and both.request_counts is not None and both.request_counts.completed == 2


def test_batch_routes_need_the_batch_scope(server: ServerProcess) -> None:
    inference_only = _client(server, INFER_ONLY)
    with pytest.raises(openai.PermissionDeniedError, match="batch"):
        inference_only.files.create(file=("in.jsonl", jsonl([chat_line("a", "m1")])), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError):
        inference_only.batches.list()


def test_access_check_gives_model_not_allowed() -> None:
    content = jsonl([chat_line("a", "m1"), chat_line("b", "m2"), chat_line("c", "m2"), chat_line("d", "gone")])
    calls: list[str] = []

    def exists(endpoint: str, model: str) -> str | None:
        return None if model != "gone" else "model 'gone' not found"

    def access(endpoint: str, model: str) -> str | None:
        calls.append(model)
        return None if model == "m1" else f"this API key may not use model '{model}'"

    lines, errors = parse_batch_input(content, URL, 100, exists, access)
    assert [e.code for e in errors] == ["model_not_allowed", "model_not_allowed", "model_not_found"]
    assert [e.line for e in errors] == [2, 3, 4] and [line.custom_id for line in lines] == ["a"]
    assert calls == ["m1", "m2"]  # once per model; an unknown model is not asked about


# ---- async jobs (POST /analyze/async, GET /job/{id}): the same allowlist, checked at submission


def _png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _post(server: ServerProcess, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _job(server: ServerProcess, job_id: str, key: str) -> httpx.Response:
    return httpx.get(f"{server.url}/job/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _finished(server: ServerProcess, job_id: str, key: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while (job := _job(server, job_id, key).json())["status"] == "pending":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return dict(job)


@pytest.mark.parametrize("model", ["m2", None], ids=["named", "default-model"])
def test_async_job_outside_the_allowlist_is_refused_like_analyze(server: ServerProcess, model: str | None) -> None:
    body = {"prompt": "what?", "image_base64": _png(), **({"model": model} if model else {})}
    live = _post(server, "/analyze", LIMITED_BOTH, body)
    queued = _post(server, "/analyze/async", LIMITED_BOTH, body)
    assert live.status_code == queued.status_code == 403
    assert queued.json() == live.json() == {"error": "this API key may not use model 'm2'"}
    assert _post(server, "/analyze/async", LIMITED, body).status_code == 403  # batch-only key, same allowlist


def test_async_job_on_an_allowed_model_runs_and_only_its_key_reads_it(server: ServerProcess) -> None:
    submitted = _post(server, "/analyze/async", LIMITED, {"image_base64": _png(), "model": "m1"})
    assert submitted.status_code == 202, submitted.text
    job = _finished(server, submitted.json()["id"], LIMITED)
    assert job["status"] == "complete" and job["model"] == "m1", job
    for other in (LIMITED_BOTH, ADMIN):  # another key, even an unrestricted one, cannot tell the job exists
        hidden = _job(server, job["id"], other)
        assert hidden.status_code == 404 and hidden.json() == {"error": f"no job with id '{job['id']}'"}
    unrestricted = _post(server, "/analyze/async", ADMIN, {"image_base64": _png()})
    assert unrestricted.status_code == 202
    assert _finished(server, unrestricted.json()["id"], ADMIN)["model"] == "m2"
    assert _job(server, unrestricted.json()["id"], LIMITED).status_code == 404
