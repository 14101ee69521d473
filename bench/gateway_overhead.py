"""Gateway overhead: an instant OpenAI-compatible upstream called directly vs through vlmserve, in one run.

    python bench/gateway_overhead.py [--json figures.json] [--rounds 3] [--plot chart.png]

Three phases, each run as interleaved rounds (direct, gateway, direct, gateway, ...) so drift hits both sides:
  1. concurrency 1, non-stream chat completions: p50/p90/p99 latency; added p50 (target <= 1 ms)
  2. concurrency 64, non-stream: requests/s, gateway/direct ratio (target >= 0.10)
  3. concurrency 64, 50-token SSE streams (read to `[DONE]`): streams/s ratio (target >= 0.05)

Processes: the fake upstream (tests/fake_upstreams.py --instant) runs in its own process, vlmserve in its own
(tests/server_process.running_server) and the load client in this one, so client work never shares an event
loop with the upstream. On 2 cores, direct = client + upstream, gateway = client + gateway + upstream on the
same cores: the gateway's CPU is part of what is measured, as on a shared box. No CPU pinning: three busy
processes pinned on two cores would starve one of them. The machine's load average is printed: other work on
the box skews every figure.

Load client: a minimal asyncio HTTP/1.1 keep-alive client (RawConnection, default). httpx.AsyncClient was tried
first: against the same instant fake it made ~140 req/s at concurrency 64 (its connection pool dominates) vs
~6000 req/s for the raw client, so with httpx the client is what gets measured. `--client httpx` keeps that
option. Non-stream requests are non-stream on both paths (vlmserve asks its engine for one JSON answer).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_upstreams import upstream_process  # noqa: E402
from plotting import Panel, save_panels  # noqa: E402
from server_process import running_server  # noqa: E402

STREAM_TOKENS = 50
NON_STREAM_TOKENS = 16
MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass
class Load:
    latencies: list[float]  # seconds per request
    elapsed: float
    errors: int

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def fake_upstream_process() -> contextlib.AbstractContextManager[str]:
    return upstream_process("--instant", "--tokens", str(STREAM_TOKENS))


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection: prebuilt request bytes, Content-Length or chunked bodies.

    It costs a few tens of microseconds per request, so the load generator is never what is measured."""

    def __init__(self, url: str) -> None:
        parsed = httpx.URL(url)
        self.host, self.port, self.path = parsed.host, parsed.port or 80, parsed.raw_path.decode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request_bytes(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        return head.encode() + b"Content-Length: %d\r\n\r\n" % len(payload) + payload

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await self._reader.readexactly(size + 2))[:-2])
            await self._reader.readuntil(b"\r\n")
            body = b"".join(parts)
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(head[0].split(" ")[1]), body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None


def request_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake", "messages": MESSAGES}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    else:
        body["max_tokens"] = NON_STREAM_TOKENS
    return body


async def one_httpx(client: httpx.AsyncClient, url: str, body: dict[str, Any], stream: bool) -> bool:
    if not stream:
        response = await client.post(url, json=body)
        return response.status_code == 200 and b'"choices"' in response.content
    async with client.stream("POST", url, json=body) as response:
        tail = b""
        async for data in response.aiter_bytes():
            tail = (tail + data)[-64:]
        return response.status_code == 200 and b"[DONE]" in tail


async def run_load(url: str, *, n: int, concurrency: int, stream: bool, use_httpx: bool) -> Load:
    body = request_body(stream)
    latencies: list[float] = []
    errors = issued = 0
    expect = b"[DONE]" if stream else b'"choices"'
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient | None) -> None:
        nonlocal issued, errors
        conn = RawConnection(url)
        request = conn.request_bytes(body)
        try:
            while issued < n:
                issued += 1
                began = time.perf_counter()
                try:
                    if client is not None:
                        ok = await one_httpx(client, url, body, stream)
                    else:
                        status, data = await conn.send(request)
                        ok = status == 200 and expect in data
                except (OSError, asyncio.IncompleteReadError, httpx.HTTPError):
                    ok = False
                    await conn.close()
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
        finally:
            await conn.close()

    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client if use_httpx else None) for _ in range(concurrency)))
        return Load(latencies, time.perf_counter() - began, errors)


async def interleaved(
    urls: dict[str, str], *, n: int, concurrency: int, stream: bool, rounds: int, use_httpx: bool
) -> dict[str, Load]:
    totals = {name: Load([], 0.0, 0) for name in urls}
    for url in urls.values():  # warm-up: connections, caches, the gateway's code paths
        await run_load(url, n=max(50, concurrency), concurrency=concurrency, stream=stream, use_httpx=use_httpx)
    for _ in range(rounds):
        for name, url in urls.items():
            load = await run_load(url, n=n, concurrency=concurrency, stream=stream, use_httpx=use_httpx)
            totals[name].latencies += load.latencies
            totals[name].elapsed += load.elapsed
            totals[name].errors += load.errors
    return totals


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000 if ordered else float("nan")


async def measure(urls: dict[str, str], rounds: int, use_httpx: bool) -> dict[str, Any]:
    lat = await interleaved(urls, n=500, concurrency=1, stream=False, rounds=rounds, use_httpx=use_httpx)
    thr = await interleaved(urls, n=1500, concurrency=64, stream=False, rounds=rounds, use_httpx=use_httpx)
    sse = await interleaved(urls, n=400, concurrency=64, stream=True, rounds=rounds, use_httpx=use_httpx)
    d, g = lat["direct"].latencies, lat["gateway"].latencies
    return {
        "latency_c1": {
            name: {f"p{q}_ms": round(pct(load.latencies, q), 3) for q in (50, 90, 99)} | {"n": len(load.latencies)}
            for name, load in lat.items()
        },
        "added_p50_ms": round(pct(g, 50) - pct(d, 50), 3),
        "added_mean_ms": round((statistics.fmean(g) - statistics.fmean(d)) * 1000, 3),
        "throughput_c64_rps": {name: round(load.rate, 1) for name, load in thr.items()},
        "throughput_ratio": round(thr["gateway"].rate / thr["direct"].rate, 3),
        "streams_c64_per_s": {name: round(load.rate, 1) for name, load in sse.items()},
        "streams_ratio": round(sse["gateway"].rate / sse["direct"].rate, 3),
        "tokens_per_stream": STREAM_TOKENS,
        "errors": {ph: {k: ld.errors for k, ld in r.items()} for ph, r in (("c1", lat), ("c64", thr), ("sse", sse))},
        "rounds": rounds,
        "client": "httpx" if use_httpx else "raw",
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(fig: dict[str, Any]) -> str:
    lc = fig["latency_c1"]
    rows = [
        ("c=1 non-stream p50 (ms)", lc["direct"]["p50_ms"], lc["gateway"]["p50_ms"], "", ""),
        ("c=1 non-stream p90 (ms)", lc["direct"]["p90_ms"], lc["gateway"]["p90_ms"], "", ""),
        ("c=1 non-stream p99 (ms)", lc["direct"]["p99_ms"], lc["gateway"]["p99_ms"], "", ""),
        ("c=1 added p50 (ms)", "", fig["added_p50_ms"], "<= 1 ms", verdict(fig["added_p50_ms"] <= 1.0)),
        ("c=64 non-stream req/s", fig["throughput_c64_rps"]["direct"], fig["throughput_c64_rps"]["gateway"], "", ""),
        ("c=64 req/s ratio", "", fig["throughput_ratio"], ">= 0.10", verdict(fig["throughput_ratio"] >= 0.10)),
        (
            f"c=64 {STREAM_TOKENS}-token streams/s",
            fig["streams_c64_per_s"]["direct"],
            fig["streams_c64_per_s"]["gateway"],
            "",
            "",
        ),
        ("c=64 streams/s ratio", "", fig["streams_ratio"], ">= 0.05", verdict(fig["streams_ratio"] >= 0.05)),
    ]
    lines = [f"{'metric':<30}{'direct':>12}{'gateway':>12}  {'target':<10}{'result':<6}", "-" * 72]
    lines += [f"{m:<30}{d!s:>12}{g!s:>12}  {t:<10}{r:<6}" for m, d, g, t, r in rows]
    errors = fig["errors"]
    if any(v for phase in errors.values() for v in phase.values()):
        lines.append(f"errors: {errors}")
    return "\n".join(lines)


def plot(fig: dict[str, Any], path: str) -> None:
    lc, rps, sse = fig["latency_c1"], fig["throughput_c64_rps"], fig["streams_c64_per_s"]
    labels = ("direct", "via vlmserve")
    save_panels(path, "Gateway overhead: an instant OpenAI-compatible engine, direct vs through vlmserve", [
        Panel("c=1 latency p50", labels, [lc["direct"]["p50_ms"], lc["gateway"]["p50_ms"]], "ms", "{:.2f}",
              lower_is_better=True),
        Panel("c=64 non-stream", labels, [rps["direct"], rps["gateway"]], "requests/s", "{:.0f}"),
        Panel(f"c=64 {STREAM_TOKENS}-token streams", labels, [sse["direct"], sse["gateway"]], "streams/s", "{:.0f}"),
    ], note=f"added p50 {fig['added_p50_ms']:.2f} ms; throughput ratio {fig['throughput_ratio']:.2f}, "
            f"streams ratio {fig['streams_ratio']:.2f} (engine, gateway and client share the cores)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per phase")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="load client (default: raw)")
    args = parser.parse_args()
    began = time.monotonic()
    with fake_upstream_process() as upstream:
        config = {
            "embedded_models": False,
            "log_level": "warning",
            "models": [{"name": "fake", "engine": "openai", "url": f"{upstream}/v1", "remote_model": "fake"}],
        }
        with running_server(config) as gateway:
            urls = {"direct": f"{upstream}/v1/chat/completions", "gateway": f"{gateway.url}/v1/chat/completions"}
            figures = asyncio.run(measure(urls, args.rounds, args.client == "httpx"))
    figures["wall_seconds"] = round(time.monotonic() - began, 1)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(
        f"gateway overhead vs an instant OpenAI-compatible upstream: client={figures['client']}, "
        f"{os.cpu_count()} cores, load average {figures['load_average_1m']}, {figures['wall_seconds']} s"
    )
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.plot:
        plot(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
