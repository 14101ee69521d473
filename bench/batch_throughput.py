"""Batch throughput: a 1000-line chat batch against an engine with capacity 8 and a fixed latency, in one run.

    python bench/batch_throughput.py [--lines 1000] [--latency 0.05] [--capacity 8] [--database-url DSN] [--plot c.png]

Three figures, each a full trip through the Batch API (upload, create, poll every 50 ms, until `completed`):
  1. batch, concurrency = capacity: wall time vs the ideal `lines / capacity x latency` (target >= 0.9 of ideal)
  2. batch, concurrency 1: sequential processing through the same path, for the speed-up
  3. the same sequential work as a plain client loop of live requests (what a user would script without batches)

Processes: the fake engine (tests/fake_upstreams.py --initial-delay) in its own process, vlmserve in its own
(tests/server_process.running_server; SQLite in a temporary data dir unless --database-url), this client in a
third. Wall time includes validation, claiming, storing every result and writing the output file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_upstreams import upstream_process  # noqa: E402
from plotting import BASELINE, VLMSERVE, Panel, save_panels  # noqa: E402
from server_process import running_server  # noqa: E402


def fake_engine(latency: float) -> contextlib.AbstractContextManager[str]:
    return upstream_process("--tokens", "4", "--initial-delay", str(latency))


def _body(i: int) -> dict[str, Any]:
    return {"model": "slow", "messages": [{"role": "user", "content": f"line {i}"}], "max_tokens": 4}


def _input(lines: int) -> bytes:
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": _body(i)}
            for i in range(lines)]  # fmt: skip
    return b"\n".join(orjson.dumps(row) for row in rows) + b"\n"


def run_batch(url: str, lines: int) -> float:
    with httpx.Client(base_url=f"{url}/v1", timeout=60) as client:
        files = {"file": ("in.jsonl", _input(lines))}
        file_id = client.post("/files", files=files, data={"purpose": "batch"}).json()["id"]
        began = time.perf_counter()
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        batch_id = client.post("/batches", json=body).json()["id"]
        while (batch := client.get(f"/batches/{batch_id}").json())["status"] not in ("completed", "failed"):
            time.sleep(0.05)
        elapsed = time.perf_counter() - began
        counts = batch["request_counts"]
        if batch["status"] != "completed" or counts["completed"] != lines:
            raise RuntimeError(f"batch ended {batch['status']} with {counts}")
        out = client.get(f"/files/{batch['output_file_id']}/content").content.splitlines()
        assert len({orjson.loads(line)["custom_id"] for line in out}) == lines
        return elapsed


def run_live_loop(url: str, lines: int) -> float:
    with httpx.Client(base_url=f"{url}/v1", timeout=60) as client:
        began = time.perf_counter()
        for i in range(lines):
            client.post("/chat/completions", json=_body(i)).raise_for_status()
        return time.perf_counter() - began


def server_config(engine_url: str, capacity: int, concurrency: int, data_dir: str, dsn: str | None) -> dict[str, Any]:
    model = {"name": "slow", "engine": "openai", "url": f"{engine_url}/v1", "remote_model": "fake",
             "parallel": capacity}  # fmt: skip
    config: dict[str, Any] = {
        "embedded_models": False,
        "models": [model],
        "log_level": "warning",
        "batch_concurrency": concurrency,
        "batch_poll_interval": 0.1,
        "data_dir": data_dir,
    }
    if dsn:
        config.update(database_url=dsn, database_schema=f"bench_{os.getpid()}")
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="engine seconds per request")
    parser.add_argument("--capacity", type=int, default=8, help="requests the engine runs at once")
    parser.add_argument("--database-url", default=None, help="postgresql://... (default: SQLite)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    args = parser.parse_args()
    ideal = args.lines / args.capacity * args.latency
    sequential_ideal = args.lines * args.latency
    rows: list[tuple[str, int, float, float]] = []
    with fake_engine(args.latency) as engine, tempfile.TemporaryDirectory() as tmp:
        for label, concurrency, ideal_s in (
            (f"batch, concurrency {args.capacity}", args.capacity, ideal),
            ("batch, concurrency 1 (sequential)", 1, sequential_ideal),
        ):
            data_dir = str(Path(tmp) / f"c{concurrency}")
            config = server_config(engine, args.capacity, concurrency, data_dir, args.database_url)
            with running_server(config) as server:
                rows.append((label, concurrency, run_batch(server.url, args.lines), ideal_s))
                if concurrency == 1:
                    rows.append(("live requests, one client loop", 1, run_live_loop(server.url, args.lines),
                                 sequential_ideal))  # fmt: skip
    sequential = rows[1][2]
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\n{args.lines} lines, engine capacity {args.capacity}, latency {args.latency * 1000:.0f} ms, {store};"
          f" ideal = {args.lines}/{args.capacity} x {args.latency}s = {ideal:.2f} s")  # fmt: skip
    print(f"{'mode':<36} {'wall s':>8} {'ideal s':>8} {'of ideal':>9} {'lines/s':>8} {'vs sequential':>14}")
    for label, _conc, wall, ideal_s in rows:
        print(f"{label:<36} {wall:8.2f} {ideal_s:8.2f} {ideal_s / wall:9.2f} {args.lines / wall:8.1f} "
              f"{sequential / wall:13.2f}x")  # fmt: skip
    fraction = ideal / rows[0][2]
    print(f"\nbatch at capacity reaches {fraction:.2f} of the ideal (target >= 0.90): "
          f"{'PASS' if fraction >= 0.9 else 'MISS'}")  # fmt: skip
    if args.plot:
        labels = ["live loop\n1 client", "batch\nconcurrency 1", f"batch\nconcurrency {args.capacity}",
                  f"ideal\n{args.capacity} slots"]  # fmt: skip
        colors = (BASELINE, BASELINE, VLMSERVE, "#dadce0")
        walls = [rows[2][2], rows[1][2], rows[0][2], ideal]
        save_panels(
            args.plot,
            f"{args.lines}-line chat batch, engine with {args.capacity} slots and "
            f"{args.latency * 1000:.0f} ms per request",
            [
                Panel("wall time", labels, walls, "seconds", "{:.1f}", colors, lower_is_better=True),
                Panel("throughput", labels, [args.lines / w for w in walls], "lines/s", "{:.0f}", colors),
            ],
            note=f"batch at capacity: {fraction:.2f} of the ideal, {sequential / rows[0][2]:.1f}x sequential; {store}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
