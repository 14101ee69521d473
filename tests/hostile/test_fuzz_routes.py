"""Property run over every route: schemathesis with its negative and fuzzing phases (examples, coverage and fuzzing
phases; positive and negative data) against a real server on the embedded default models (SmolLM2, RapidOCR,
MiniLM) under the memory cap, with API keys on and a valid admin key on every request. Every response must be
below 500, none may take longer than HANG_S (a hang), and the server with its runners must come back within
50 MB of its resident size after warm-up once the run is over.

The tests run in file order: the schema check and the baseline (after warm-up) first, one parametrized test per
operation, the figures last. Run with `-s` to see them (requests, statuses per class and per code, RSS
start/peak/end, runtime):

    .venv/bin/python -m pytest -q -s tests/hostile/test_fuzz_routes.py
"""

from __future__ import annotations

import base64
import os
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import requests
import schemathesis
from conftest import MEMORY_CAP_MB, rss_bytes, text_image
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from server_process import ServerProcess, running_server

from vlmserve.api.app import create_app
from vlmserve.config import load_settings

pytestmark = pytest.mark.slow
MB = 2**20
KEY = "vs-test-fuzz-routes-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EXAMPLES = int(os.environ.get("VLMSERVE_FUZZ_EXAMPLES", "12"))  # fuzzing phase, per operation
RANDOM = bool(os.environ.get("VLMSERVE_FUZZ_RANDOM"))  # new cases each run (a deeper local hunt); else the same
HANG_S = 30.0  # no single request may take longer: a hang
RSS_SLACK = 50 * MB
SETTLE_S = 30.0  # how long the server may take to give its memory back after the run
CONFIG: dict[str, Any] = {"api_keys": [KEY], "log_level": "warning"}  # the embedded models, auth on
# Generation length is not what this run is about (its bounds have their tests in test_edge_bounds.py), but a
# valid case may ask SmolLM2 for 256 tokens (its default) or its whole 2048-token context: seconds to minutes each
# on 2 cores shared with other work, read as hangs. So every generation is cut to GENERATE_AT_MOST tokens before
# sending: a valid length above it (or Ollama's -1/-2/0, unbounded/whole context/default) is lowered, a missing one
# set; anything out of range or of the wrong type goes as generated (it must still be refused). The length fields
# are found in each operation's request schema, so a new route is covered without a list to keep up to date.
GENERATE_AT_MOST = 2
LENGTH_NAMES = ("max_tokens", "max_completion_tokens", "max_new_tokens", "num_predict")
# A generated model name is almost never a real one: every request would stop at the catalog's 404 and no fuzzed
# body would reach an engine. So half of the strings in a model field (the half picked by a hash of the value,
# the same each run) name one of the embedded models, which one also picked by the hash; other types are left.
MODELS = ("smollm2", "rapidocr", "smollm2-ocr", "all-minilm")
MODEL_FIELDS = ("model", "name", "model_id", "from", "source")  # body, path and query; `name` of a key is harmless


@dataclass
class Run:
    """What the run saw, shared by the tests of this module (they run in file order)."""

    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    classes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    server_errors: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    slowest: tuple[float, str] = (0.0, "")
    rss_start: int = 0
    started: float = 0.0
    sampler: RssSampler | None = None


class RssSampler:
    """Samples the RSS of the server and its runners every 100 ms in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, int(rss_bytes(pid))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, int(rss_bytes(self.pid)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


RUN = Run()


def _app_schema() -> dict[str, Any]:
    return create_app(load_settings(None)).openapi()


def _resolved(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a $ref (also one inside anyOf, pydantic's `X | None`) followed to its component."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "$ref" in option:
            return _resolved(doc, doc["components"]["schemas"][option["$ref"].rsplit("/", 1)[1]])
    return schema


def _length_fields(doc: dict[str, Any]) -> dict[tuple[str, str], tuple[bool, list[str]]]:
    """(method, path) -> (in `options`, the generation-length fields its request body declares)."""
    found: dict[tuple[str, str], tuple[bool, list[str]]] = {}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                properties = _resolved(doc, content.get("schema", {})).get("properties", {})
                options = _resolved(doc, properties.get("options", {})).get("properties", {})
                if names := [name for name in LENGTH_NAMES if name in properties]:
                    found[(method.upper(), path)] = (False, names)
                elif names := [name for name in LENGTH_NAMES if name in options]:
                    found[(method.upper(), path)] = (True, names)
    return found


# Built from the app at collection time (parametrize needs it then); the first test checks that the running server
# serves exactly this document. No operation is skipped: none shuts the server down or is otherwise destructive
# to the run (unloading models, revoking unknown keys and cancelling unknown batches are all fair game: the
# figures test loads the models again before it measures). The stateful phase (schemathesis' state machine over
# links between operations) is not something `parametrize` runs.
PHASES = {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
          "stateful": {"enabled": False}}  # fmt: skip
FUZZ = {"generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "no-shrink": True}, "phases": PHASES}
DOCUMENT = _app_schema()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_dict(FUZZ))
LENGTH_FIELDS = _length_fields(DOCUMENT)


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    with running_server(CONFIG, memory_cap_mb=MEMORY_CAP_MB) as proc:
        yield proc


def _warm(url: str) -> None:
    """Load every embedded model and take each surface once through its working path, so the baseline is the
    server at work, not the server before its first request."""
    image = base64.b64encode(text_image("42 OK")).decode()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": "smollm2", "max_tokens": 8,
                                  "messages": [{"role": "user", "content": "hi"}]}),
        ("/api/generate", {"model": "rapidocr", "prompt": "read", "images": [image], "stream": False}),
        ("/analyze", {"prompt": "what does it say?", "image_base64": image, "max_tokens": 8}),
        ("/v1/embeddings", {"model": "all-minilm", "input": ["a cat sat on the mat"]}),
        ("/api/chat", {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                       "options": {"num_predict": 8}}),
    ]  # fmt: skip
    for path, body in calls:
        response = httpx.post(url + path, json=body, headers=AUTH, timeout=120)
        assert response.status_code == 200, (path, response.text)


def test_the_server_serves_this_schema(fuzz_server: ServerProcess) -> None:
    served = httpx.get(fuzz_server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    assert served == orjson.loads(orjson.dumps(DOCUMENT)) and len(served["paths"]) >= 30


def test_baseline(fuzz_server: ServerProcess) -> None:
    _warm(fuzz_server.url)
    RUN.rss_start, RUN.started = rss_bytes(fuzz_server.proc.pid), time.monotonic()
    RUN.sampler = RssSampler(fuzz_server.proc.pid)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=not RANDOM, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_route(case: schemathesis.Case[Any], fuzz_server: ServerProcess) -> None:
    label = case.operation.label
    _shorten(case)
    _name_real_models(case)
    started = time.monotonic()
    try:
        response = case.call(base_url=fuzz_server.url, headers=AUTH, timeout=HANG_S)
    except (requests.Timeout, TimeoutError) as exc:
        RUN.hangs.append(f"{label}: {type(exc).__name__}")
        pytest.fail(f"no answer in {HANG_S:g} s to {_described(case)}")
    elapsed = time.monotonic() - started
    RUN.statuses[response.status_code] += 1
    RUN.per_operation[label] += 1
    RUN.classes[label][f"{response.status_code // 100}xx"] += 1
    RUN.slowest = max(RUN.slowest, (elapsed, label))
    RUN.seconds[label] += elapsed
    if elapsed >= HANG_S:  # an event stream still going is cut short at HANG_S
        RUN.hangs.append(f"{label}: {elapsed:.0f} s")
    if response.status_code >= 500:
        RUN.server_errors.append(f"{label}: {response.status_code} {response.text[:200]}")
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]} to {_described(case)}"
    assert elapsed < HANG_S, f"answered after {elapsed:.0f} s: {_described(case)}"


def _described(case: schemathesis.Case[Any]) -> str:
    """The request, unfiltered (schemathesis' curl command hides every field with 'token' in its name)."""
    return f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}"[:1500]


def _shorten(case: schemathesis.Case[Any]) -> None:
    """Cut the generation length of a case's body to GENERATE_AT_MOST tokens, in place (see LENGTH_NAMES)."""
    in_options, names = LENGTH_FIELDS.get((case.method.upper(), case.operation.path), (False, []))
    body = case.body
    if not names or not isinstance(body, dict):
        return
    if in_options and body.get("options") is None:  # absent or null
        body["options"] = {}
    target: object = body["options"] if in_options else body
    if not isinstance(target, dict):
        return
    for name in names:
        value = target.get(name)
        unbounded = name == "num_predict" and type(value) is int and -2 <= value <= 0
        if (type(value) is int and value > GENERATE_AT_MOST) or unbounded:
            target[name] = GENERATE_AT_MOST
    if all(target.get(name) is None for name in names):
        target[names[0]] = GENERATE_AT_MOST


def _name_real_models(case: schemathesis.Case[Any]) -> None:
    """Point half of the string model fields of a case at an embedded model, in place (see MODELS)."""
    for where in (case.body, case.path_parameters, case.query):
        if not isinstance(where, dict):
            continue
        for key in MODEL_FIELDS:
            value = where.get(key)
            if isinstance(value, str):
                pick = zlib.crc32(value.encode("utf-8", "surrogatepass")) % (2 * len(MODELS))
                if pick < len(MODELS):
                    where[key] = MODELS[pick]


def _settle(pid: int, target: int) -> int:
    """Poll the tree's RSS until it is at or below `target` or SETTLE_S passes; the last reading."""
    deadline = time.monotonic() + SETTLE_S
    value = int(rss_bytes(pid))
    while value > target and time.monotonic() < deadline:
        time.sleep(0.25)
        value = int(rss_bytes(pid))
    return value


def test_figures_and_memory(fuzz_server: ServerProcess) -> None:
    """Runs after every operation's test: prints the figures and checks the run as a whole."""
    assert RUN.sampler is not None, "the baseline test did not run first"
    pid = fuzz_server.proc.pid
    _warm(fuzz_server.url)  # the run may have unloaded models: the same models loaded as at the baseline
    end = _settle(pid, RUN.rss_start + RSS_SLACK)
    peak = RUN.sampler.stop()
    classes = Counter[str]()
    for status, count in RUN.statuses.items():
        classes[f"{status // 100}xx"] += count
    print(
        f"\nfuzz run: {sum(RUN.statuses.values())} requests over {len(RUN.per_operation)} operations in "
        f"{time.monotonic() - RUN.started:.0f} s; by class {dict(sorted(classes.items()))}, "
        f"by status {dict(sorted(RUN.statuses.items()))}; {len(RUN.hangs)} hangs (slowest answer "
        f"{RUN.slowest[0]:.1f} s, {RUN.slowest[1]}); server + runners RSS start {RUN.rss_start / MB:.0f} MB, "
        f"peak {peak / MB:.0f} MB, end {end / MB:.0f} MB"
    )
    for label, count in sorted(RUN.per_operation.items()):
        print(f"  {count:4d} in {RUN.seconds[label]:5.1f} s  {label}  {dict(sorted(RUN.classes[label].items()))}")
    assert not RUN.server_errors, RUN.server_errors
    assert not RUN.hangs, RUN.hangs
    operations = [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]
    assert len(operations) == len(list(schema.get_all_operations())), "an operation of the schema did not load"
    assert set(RUN.per_operation) == {operation.label for operation in operations}, "an operation was left out"
    assert end - RUN.rss_start <= RSS_SLACK, f"RSS grew by {(end - RUN.rss_start) / MB:.0f} MB and stayed"
