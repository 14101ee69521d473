"""Streaming relay cost: realistic token streams direct from an engine vs through vlmserve, on both surfaces.

    python bench/stream_relay.py [--streams 1000] [--rounds 2] [--json figures.json] [--plot chart.png]

The engine is the fake upstream (tests/fake_upstreams.py) with a realistic pace: 20 ms to the first token, then
2 ms per token, 50 tokens. It serves both protocols, so each surface has a direct baseline: OpenAI's
`/v1/chat/completions` (SSE) and Ollama's `/api/chat` (NDJSON). vlmserve talks to it as an OpenAI-compatible
engine either way (the Ollama surface translates).

Two figures per surface:
  1. relay CPU per streamed token: the gateway process's CPU time (user + system, /proc/<pid>/stat) over
     `--streams` streams at concurrency 16, divided by the tokens relayed (goal <= 20 us);
  2. 64 concurrent streams: streams/s through vlmserve over streams/s direct, interleaved rounds (goal >= 0.9).
Engine, gateway and load client share this machine's cores, as they would on a small box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_upstreams import upstream_process  # noqa: E402
from gateway_overhead import RawConnection  # noqa: E402
from plotting import Panel, save_panels  # noqa: E402
from server_process import free_port, running_server  # noqa: E402

TOKENS = 50
PACE = ("--tokens", str(TOKENS), "--initial-delay", "0.02", "--token-delay", "0.002")
MESSAGES = [{"role": "user", "content": "Say hello."}]
SURFACES: dict[str, tuple[str, dict[str, Any], bytes]] = {  # path, body, the bytes that end a whole answer
    "openai": ("/v1/chat/completions", {"model": "fake", "messages": MESSAGES, "stream": True}, b"[DONE]"),
    "ollama": ("/api/chat", {"model": "fake", "messages": MESSAGES, "stream": True}, b'"done":true'),
}
TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT = 30.0  # seconds: a stream that takes longer counts as failed (the figures say how many)


class _Pipe(asyncio.Protocol):
    """One side of a bare TCP relay: bytes in on one socket are written to the other, nothing else."""

    def __init__(self, peer: _Pipe | None = None) -> None:
        self.peer, self.transport, self.pending = peer, None, bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:  # a client came: connect its upstream side
            asyncio.get_running_loop().create_task(self._connect())
            return
        self.peer.peer = self  # the upstream side: from now on the client's bytes come straight here
        if self.peer.pending:
            transport.write(bytes(self.peer.pending))  # type: ignore[attr-defined]
            self.peer.pending.clear()

    async def _connect(self) -> None:
        await asyncio.get_running_loop().create_connection(lambda: _Pipe(self), *BARE_UPSTREAM)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending += data

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


BARE_UPSTREAM: tuple[str, int] = ("127.0.0.1", 0)


def bare_relay(port: int, upstream: str) -> None:
    """The floor for any Python relay here: uvloop, one read and one write per chunk, no HTTP parsing."""
    import uvloop

    global BARE_UPSTREAM
    host, _, upstream_port = upstream.removeprefix("http://").partition(":")
    BARE_UPSTREAM = (host, int(upstream_port))

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_Pipe, "127.0.0.1", port)
        print("READY", flush=True)
        await server.serve_forever()

    uvloop.run(serve())


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


async def run_streams(url: str, body: dict[str, Any], end: bytes, *, n: int, concurrency: int) -> tuple[int, float]:
    """(complete streams, seconds) for `n` streams at `concurrency`."""
    done = issued = 0

    async def worker() -> None:
        nonlocal done, issued
        conn = RawConnection(url)
        request = conn.request_bytes(body)
        try:
            while issued < n:
                issued += 1
                try:
                    status, data = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT)
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    await conn.close()
                    continue
                done += status == 200 and end in data[-400:]
        finally:
            await conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - began


async def relay_cpu(url: str, body: dict[str, Any], end: bytes, pid: int, streams: int) -> dict[str, Any]:
    await run_streams(url, body, end, n=64, concurrency=16)  # warm-up
    user, system = process_cpu_seconds(pid)
    done, _ = await run_streams(url, body, end, n=streams, concurrency=16)
    user_after, system_after = process_cpu_seconds(pid)
    tokens = max(done, 1) * TOKENS
    cpu = user_after - user + system_after - system
    return {"streams": done, "of": streams, "user_s": round(user_after - user, 2),
            "system_s": round(system_after - system, 2), "us_per_token": round(cpu / tokens * 1e6, 1)}  # fmt: skip


async def concurrent(urls: dict[str, str], body: dict[str, Any], end: bytes, rounds: int) -> dict[str, Any]:
    """Streams/s at concurrency 64 per contender, interleaved rounds; ratios against direct."""
    totals = {name: [0, 0.0] for name in urls}
    for url in urls.values():
        await run_streams(url, body, end, n=128, concurrency=64)  # warm-up
    for _ in range(rounds):
        for name, url in urls.items():
            done, seconds = await run_streams(url, body, end, n=640, concurrency=64)
            totals[name][0] += done
            totals[name][1] += seconds
    rates = {name: round(done / seconds, 1) for name, (done, seconds) in totals.items()}
    failed = {name: rounds * 640 - int(done) for name, (done, _) in totals.items()}
    ratios = {name: round(rate / rates["direct"], 3) for name, rate in rates.items()}
    return {"streams_per_s": rates, "ratio": ratios, "failed": failed}


async def measure(upstream: str, gateway: str, bare: str, pids: dict[str, int], args: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for surface, (path, body, end) in SURFACES.items():
        relay = {"gateway": await relay_cpu(f"{gateway}{path}", body, end, pids["gateway"], args.streams)}
        relay["bare"] = await relay_cpu(f"{bare}{path}", body, end, pids["bare"], args.streams // 2)
        urls = {"direct": f"{upstream}{path}", "bare": f"{bare}{path}", "gateway": f"{gateway}{path}"}
        figures[surface] = {"relay": relay, "c64": await concurrent(urls, body, end, args.rounds)}
    return figures


def report(figures: dict[str, Any]) -> str:
    head = f"{'surface':<8}{'':<10}{'us CPU/token':>13}{'streams/s at 64':>17}{'of direct':>11}"
    lines = [head, "-" * len(head)]
    for surface in SURFACES:
        relay, c64 = figures[surface]["relay"], figures[surface]["c64"]
        rates, ratios = c64["streams_per_s"], c64["ratio"]
        lines.append(f"{surface:<8}{'direct':<10}{'':>13}{rates['direct']:>17}{'1.0':>11}")
        lines.append(
            f"{'':<8}{'bare relay':<10}{relay['bare']['us_per_token']:>13}{rates['bare']:>17}{ratios['bare']:>11}"
        )
        lines.append(f"{'':<8}{'vlmserve':<10}{relay['gateway']['us_per_token']:>13}{rates['gateway']:>17}"
                     f"{ratios['gateway']:>11}")  # fmt: skip
        failed = {k: v for k, v in c64["failed"].items() if v} | {
            k: r["of"] - r["streams"] for k, r in relay.items() if r["of"] != r["streams"]
        }
        if failed:
            lines.append(f"{'':<8}failed or timed-out streams: {failed}")
    lines.append("goals: vlmserve <= 20 us CPU per token, >= 0.9 of direct at 64 streams; 'bare relay' is a uvloop")
    lines.append("byte pipe (one read + one write per chunk, no HTTP): the floor for any Python relay on this machine")
    return "\n".join(lines)


def plot(figures: dict[str, Any], path: str) -> None:
    panels = []
    for surface in SURFACES:
        relay, c64 = figures[surface]["relay"], figures[surface]["c64"]["streams_per_s"]
        panels.append(Panel(f"{surface}: 64 concurrent streams", ("direct", "bare relay", "via vlmserve"),
                            [c64["direct"], c64["bare"], c64["gateway"]], "streams/s", "{:.0f}"))  # fmt: skip
        panels.append(Panel(f"{surface}: relay CPU per token", ("goal", "bare relay", "vlmserve"),
                            [20.0, relay["bare"]["us_per_token"], relay["gateway"]["us_per_token"]], "us", "{:.1f}",
                            lower_is_better=True))  # fmt: skip
    save_panels(path, f"Streaming relay: {TOKENS}-token streams at 20 ms + 2 ms/token", panels,
                note="relay CPU = the relay process's CPU time / tokens relayed")  # fmt: skip


@contextlib.contextmanager
def bare_relay_process(upstream: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--bare-relay", str(port), upstream], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise RuntimeError("the bare relay did not start")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=1000, help="streams per surface for the CPU figure")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of 640 streams at concurrency 64")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PATH")
    parser.add_argument("--bare-relay", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_relay:
        bare_relay(int(args.bare_relay[0]), args.bare_relay[1])
        return 0
    began = time.monotonic()
    with upstream_process(*PACE) as upstream, bare_relay_process(upstream) as (bare, bare_pid):
        config = {
            "embedded_models": False,
            "log_level": "warning",
            "models": [{"name": "fake", "engine": "openai", "url": f"{upstream}/v1", "remote_model": "fake"}],
        }
        with running_server(config) as gateway:
            pids = {"gateway": gateway.proc.pid, "bare": bare_pid}
            figures = asyncio.run(measure(upstream, gateway.url, bare, pids, args))
    figures["wall_seconds"] = round(time.monotonic() - began, 1)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(f"streaming relay, {TOKENS}-token streams (20 ms + 2 ms/token): {os.cpu_count()} cores, "
          f"load average {figures['load_average_1m']}, {figures['wall_seconds']} s")  # fmt: skip
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.plot:
        plot(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
