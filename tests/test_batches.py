"""OpenAI Files + Batches and async jobs through the official `openai` client, against a real server process
whose model `slow` is a fake OpenAI-compatible engine (tests/fake_upstreams.py) with a fixed latency."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from batch_helpers import chat_line, jsonl, output_lines, wait_batch
from fake_upstreams import Behaviour, FakeUpstream, expected_text, fake_embedding
from openai import OpenAI
from PIL import Image
from server_process import ServerProcess, running_server

LATENCY = 0.02


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream(Behaviour(tokens=3, initial_delay=LATENCY)) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> None:
    fake.reset(Behaviour(tokens=3, initial_delay=LATENCY))


@pytest.fixture(scope="module")
def server(fake: FakeUpstream) -> Iterator[ServerProcess]:
    remote = {"engine": "openai", "url": f"{fake.url}/v1", "parallel": 8}
    models = [
        {"name": "slow", "remote_model": "fake", "capabilities": ["completion", "vision"], **remote},
        {"name": "slow-embed", "remote_model": "fake-embed", "capabilities": ["embedding"], **remote},
    ]
    config = {
        "embedded_models": False,
        "models": models,
        "default_vision_model": "slow",
        "batch_poll_interval": 0.1,
        "batch_max_attempts": 2,
    }
    with running_server(config) as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _submit(client: OpenAI, lines: list[bytes], endpoint: str = "/v1/chat/completions", window: str = "24h") -> str:
    file = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
        metadata={"suite": "test_batches"},
    )
    assert batch.status == "validating"
    return batch.id


def test_chat_batch_end_to_end(client: OpenAI) -> None:
    batch_id = _submit(client, [chat_line(f"req-{i}") for i in range(40)])
    batch = wait_batch(client, batch_id)
    assert batch.status == "completed", batch
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (40, 40, 0)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.error_file_id is None
    assert batch.metadata == {"suite": "test_batches"}
    assert batch.usage is not None and batch.usage.output_tokens == 40 * 3
    out = output_lines(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in out) == sorted(f"req-{i}" for i in range(40))
    first = out[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == expected_text(3)
    assert first["response"]["body"]["object"] == "chat.completion"
    output_file = client.files.retrieve(batch.output_file_id or "")
    assert output_file.purpose == "batch_output" and output_file.bytes > 0


def test_embeddings_batch(client: OpenAI) -> None:
    lines = [
        orjson.dumps(
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "slow-embed", "input": f"text {i}"},
            }
        )
        for i in range(5)
    ]
    batch = wait_batch(client, _submit(client, lines, endpoint="/v1/embeddings"))
    assert batch.status == "completed"
    out = {line["custom_id"]: line for line in output_lines(client, batch.output_file_id)}
    assert out["e3"]["response"]["body"]["data"][0]["embedding"] == fake_embedding("text 3")


@pytest.mark.parametrize(
    ("bad_line", "code"),
    [
        (b'{"custom_id": "x", "method": "POST", "url": ', "invalid_json_line"),
        (chat_line("req-0"), "duplicate_custom_id"),
        (chat_line("other", url="/v1/embeddings"), "mismatched_url"),
        (chat_line("nomodel", model="no-such-model"), "model_not_found"),
    ],
)
def test_validation_failures_report_line_numbers(client: OpenAI, bad_line: bytes, code: str) -> None:
    lines = [chat_line("req-0"), chat_line("req-1"), bad_line, chat_line("req-3")]
    batch = wait_batch(client, _submit(client, lines))
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data
    error = batch.errors.data[0]
    assert (error.code, error.line) == (code, 3)
    assert batch.request_counts is not None and batch.request_counts.total == 0


def test_validation_failure_runs_nothing(client: OpenAI, fake: FakeUpstream) -> None:
    batch = wait_batch(client, _submit(client, [chat_line("a"), chat_line("a")]))
    assert batch.status == "failed"
    assert not [r for r in fake.requests if r.path == "/v1/chat/completions"]


def test_cancel_keeps_partial_results(client: OpenAI, fake: FakeUpstream) -> None:
    fake.behaviour.initial_delay = 0.2
    batch_id = _submit(client, [chat_line(f"c{i}") for i in range(200)])
    wait_batch(client, batch_id, until={"in_progress"})
    deadline = time.monotonic() + 30
    while (counts := client.batches.retrieve(batch_id).request_counts) is None or counts.completed < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    batch = wait_batch(client, batch_id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None
    done, failed = batch.request_counts.completed, batch.request_counts.failed
    assert 8 <= done < 200 and done + failed == 200
    ok = output_lines(client, batch.output_file_id)
    errors = output_lines(client, batch.error_file_id)
    assert len(ok) == done and len(errors) == failed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert len({line["custom_id"] for line in ok + errors}) == 200
    assert client.batches.cancel(batch_id).status == "cancelled"  # cancelling twice is harmless


def test_engine_errors_become_line_errors(client: OpenAI, fake: FakeUpstream) -> None:
    fake.behaviour.error_status = 503  # transient: retried batch_max_attempts (2) times, then recorded
    batch = wait_batch(client, _submit(client, [chat_line(f"f{i}") for i in range(3)]))
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.failed == 3
    assert batch.output_file_id is None
    errors = output_lines(client, batch.error_file_id)
    assert len(errors) == 3 and all(e["response"]["status_code"] == 503 for e in errors)
    assert errors[0]["error"]["message"]
    assert len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 6


def test_expired_batch(client: OpenAI, fake: FakeUpstream) -> None:
    fake.behaviour.initial_delay = 0.3
    batch = wait_batch(client, _submit(client, [chat_line(f"x{i}") for i in range(100)], window="1s"))
    assert batch.status == "expired" and batch.expired_at is not None
    errors = output_lines(client, batch.error_file_id)
    expired = [e for e in errors if e["error"]["code"] == "batch_expired"]
    assert expired and len(errors) + len(output_lines(client, batch.output_file_id)) == 100


def test_list_files_and_batches_with_pagination(client: OpenAI) -> None:
    ids = [client.files.create(file=(f"u{i}.txt", b"x" * (i + 1)), purpose="user_data").id for i in range(3)]
    page = client.files.list(purpose="user_data", limit=2, order="asc")
    assert [f.id for f in page.data] == ids[:2] and page.has_more
    rest = client.files.list(purpose="user_data", limit=2, order="asc", after=ids[1])
    assert [f.id for f in rest.data] == ids[2:] and not rest.has_more
    assert [f.id for f in client.files.list(purpose="user_data", limit=1)][:3] == ids[::-1]  # auto-paginates
    batches = [_submit(client, [chat_line("p")]) for _ in range(3)]
    listed = [b.id for b in client.batches.list(limit=1)]  # newest first, one per page
    assert listed[:3] == batches[::-1]


def test_file_retrieve_content_delete(client: OpenAI) -> None:
    file = client.files.create(file=("notes.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert client.files.retrieve(file.id).filename == "notes.jsonl"
    assert client.files.content(file.id).content == b'{"a": 1}\n'
    deleted = client.files.delete(file.id)
    assert deleted.deleted and deleted.id == file.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def _png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def test_async_analyze_job(server: ServerProcess) -> None:
    submitted = httpx.post(f"{server.url}/analyze/async", json={"prompt": "what?", "image_base64": _png()})
    assert submitted.status_code == 202 and submitted.json()["status"] == "pending"
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{server.url}/job/{job_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job["status"] == "complete", job
    assert job["result"] == expected_text(3) and job["model"] == "slow"  # the deployment service's `result` text
    failed = httpx.post(f"{server.url}/analyze/async", json={"image_base64": _png(), "model": "nope"}).json()
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{server.url}/job/{failed['id']}").json())["status"] == "pending":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "failed" and "nope" in job["error"] and job["error_info"]["status"] == 404
    assert httpx.get(f"{server.url}/job/job-missing").status_code == 404
    assert httpx.post(f"{server.url}/analyze/async", json={"image_base64": "%%%"}).status_code == 400


def test_cli_batch_submit_waits_and_writes_output(server: ServerProcess, tmp_path: Path) -> None:
    import subprocess
    import sys

    source = tmp_path / "jobs.jsonl"
    source.write_bytes(jsonl([chat_line(f"cli-{i}") for i in range(12)]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmserve",
            "batch",
            "submit",
            str(source),
            "--url",
            server.url,
            "--wait",
            "--poll",
            "0.1",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "12/12 done, 0 failed" in done.stderr.decode()
    results = [orjson.loads(line) for line in source.with_suffix(".output.jsonl").read_bytes().splitlines()]
    assert sorted(r["custom_id"] for r in results) == sorted(f"cli-{i}" for i in range(12))
    assert all(r["response"]["status_code"] == 200 for r in results)


def test_cli_batch_submit_reports_a_missing_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "vlmserve", "batch", "submit", f"{tmp_path}/nope.jsonl"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and b"no such file" in done.stderr
