"""Property-based API checks: schemathesis generates requests (valid and invalid) for every operation of the
running server's /openapi.json and asserts no 5xx other than 503 under load-free conditions, and that responses
match the schemas the app declares.

The server has two remote models on a fake engine (chat + vision, embeddings), so chat, completion and embedding
operations run end to end in milliseconds: no operation is skipped. A bounded number of examples per operation
(derandomized: the same cases every run) keeps it under a minute or two on a small machine.

    .venv/bin/python -m pytest tests/test_schemathesis.py -q
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from fake_upstreams import FakeUpstream
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from server_process import ServerProcess, running_server

from vlmserve.api.app import create_app
from vlmserve.config import load_settings

pytestmark = pytest.mark.slow
MAX_EXAMPLES = int(os.environ.get("VLMSERVE_SCHEMATHESIS_EXAMPLES", "10"))  # more for a deeper local run
KEY = "vs-test-schemathesis-admin"
CASES: Counter[tuple[str, int]] = Counter()  # (operation, status) -> cases sent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with FakeUpstream() as upstream:
        models = [
            {"name": "chat", "engine": "openai", "url": upstream.url, "remote_model": "fake",
             "capabilities": ["completion", "vision"]},
            {"name": "embed", "engine": "openai", "url": upstream.url, "remote_model": "fake",
             "capabilities": ["embedding"]},
        ]  # fmt: skip
        config = {
            "embedded_models": False, "models": models, "default_model": "chat", "default_vision_model": "chat",
            "default_embedding_model": "embed", "data_dir": str(tmp_path_factory.mktemp("schemathesis-data")),
            "media_fetch_enabled": False, "log_level": "warning", "api_keys": [KEY],
        }  # fmt: skip
        with running_server(config) as proc:
            yield proc


def _app_schema() -> dict[str, Any]:
    return create_app(load_settings(None, embedded_models=False)).openapi()


# built from the app at collection time (schemathesis' lazy `from_fixture` does not run on pytest 9); the first
# test checks that the running server serves exactly this document at /openapi.json
schema = schemathesis.openapi.from_dict(_app_schema())


def test_the_server_serves_this_schema(server: ServerProcess) -> None:
    served = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert served == orjson.loads(orjson.dumps(_app_schema())) and len(served["paths"]) >= 30


def test_found_key_limits_beyond_bigint(server: ServerProcess) -> None:
    """Found by schemathesis: an rpm past 64 bits was a 500 (OverflowError from the database driver)."""
    body = {"name": "x", "scopes": ["inference"], "rpm": 2**70}
    answer = httpx.post(server.url + "/admin/keys", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 400 and answer.json()["error"].startswith("rpm:"), answer.text


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_api(case: schemathesis.Case, server: ServerProcess) -> None:
    _call(case, server)


def _call(case: schemathesis.Case, server: ServerProcess) -> None:
    response = case.call_and_validate(
        base_url=server.url,
        headers={"Authorization": f"Bearer {KEY}"},  # POST /admin/keys makes keys: a key is needed from then on
        checks=[not_a_server_error, response_schema_conformance],
        timeout=30,
    )
    CASES[(case.operation.label, response.status_code)] += 1


def _exercise_once(operation: Any, server: ServerProcess) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=1, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def once(case: schemathesis.Case) -> None:
        _call(case, server)

    once()


def test_every_operation_was_exercised(server: ServerProcess) -> None:
    """No operation is left out: prints the figures (`-s`). Order-free: an operation test_api has not run yet
    (this test run alone, first, or under -k) is exercised here with one generated case."""
    for operation in schema.get_all_operations():
        if not any(label == operation.ok().label for label, _ in CASES):
            _exercise_once(operation.ok(), server)
    per_operation = Counter[str]()
    for (label, _), count in CASES.items():
        per_operation[label] += count
    statuses = Counter[int]()
    for (_, status), count in CASES.items():
        statuses[status] += count
    print(f"\nschemathesis: {len(per_operation)} operations, {sum(per_operation.values())} cases; "
          f"statuses {dict(sorted(statuses.items()))}")  # fmt: skip
    for label, count in sorted(per_operation.items()):
        print(f"  {count:4d}  {label}")
    assert set(per_operation) == {op.ok().label for op in schema.get_all_operations()}
