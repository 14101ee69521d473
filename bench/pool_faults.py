"""Engine pools under injected faults: what a client sees at 0-30 % upstream faults, with and without a pool.

    .venv/bin/python bench/pool_faults.py [--requests 400] [--concurrency 16] [--rates 0,10,20,30]
                                          [--read-timeout 0.5] [--seed 7] [--plot docs/img/bench-pool_faults.png]

For each fault rate every upstream (tests/fake_upstreams.py --instant --fault-rate R, its own process) answers
that fraction of inference requests with a dropped connection, an HTTP 500 or a stall past `read_timeout`, at
random. One vlmserve process (tests/server_process.running_server, embedded_models off) serves three remote
`openai` models per rate, run one after the other with the same load:
  a. direct: one upstream, a plain single-URL model, no retries (what a client calling the engine sees)
  b. retry:  the same upstream with `max_retries: 4` (a pool of one: retries go back to the same host)
  c. pool:   two replicas (the first one is a's upstream) with the default pool settings (4 retries)
Figures per cell: success rate (HTTP 200 with the exact expected text), p50/p99 latency of every request (failed
ones included: a stall costs the client `read_timeout` too), and retries per request from vlmserve's /metrics
(`vlmserve_engine_retries_total`). Non-stream OpenAI chat completions from a raw keep-alive client (the one
gateway_overhead.py uses), so the client costs next to nothing; each cell is preceded by `concurrency` warm-up
requests that are not counted. Ratios: success and latency of b and c vs a, within this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_upstreams import expected_text, upstream_process  # noqa: E402
from gateway_overhead import RawConnection  # noqa: E402
from plotting import PALETTE, finish_figure, pyplot  # noqa: E402
from server_process import running_server  # noqa: E402

SETUPS = {  # model name prefix -> label
    "direct": "a. single, no retries",
    "retry": "b. single, max_retries 4",
    "pool": "c. 2 replicas, defaults",
}
MESSAGES = [{"role": "user", "content": "hello there"}]
TOKENS = 5  # the fake's default answer length
DEFAULT_PLOT = "docs/img/bench-pool_faults.png"
CLIENT_TIMEOUT = 30.0  # a request this slow counts as failed (none should be: read_timeout bounds every attempt)


@dataclass
class Cell:
    latencies: list[float] = field(default_factory=list)  # seconds, every request
    failures: int = 0
    retries: float = 0.0  # from /metrics
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def success(self) -> float:
        return 1 - self.failures / self.requests if self.requests else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


def model_configs(rate_pct: int, first: str, second: str, read_timeout: float) -> list[dict[str, Any]]:
    common = {"engine": "openai", "remote_model": "fake", "read_timeout": read_timeout}
    return [
        {"name": f"direct-{rate_pct}", "url": f"{first}/v1", **common},
        {"name": f"retry-{rate_pct}", "url": f"{first}/v1", "max_retries": 4, **common},
        {"name": f"pool-{rate_pct}", "url": f"{first}/v1", "replicas": [f"{second}/v1"], **common},
    ]


def answered_right(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    try:
        return bool(orjson.loads(body)["choices"][0]["message"]["content"] == expected_text(TOKENS))
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return False


async def run_cell(url: str, model: str, requests: int, concurrency: int) -> Cell:
    """`requests` non-stream chat completions, `concurrency` keep-alive connections each sending one at a time."""
    cell = Cell()
    remaining = iter(range(requests))

    async def worker() -> None:
        connection = RawConnection(url + "/v1/chat/completions")
        request = connection.request_bytes({"model": model, "messages": MESSAGES})
        try:
            for _ in remaining:
                began = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connection.send(request), CLIENT_TIMEOUT)
                    ok = answered_right(status, body)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    await connection.close()  # the next request opens a fresh connection
                    ok = False
                cell.latencies.append(time.perf_counter() - began)
                cell.failures += not ok
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cell.elapsed = time.perf_counter() - began
    return cell


def retries_by_model(metrics_text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "vlmserve_engine_retries_total":
                model = sample.labels.get("model", "")
                totals[model] = totals.get(model, 0.0) + sample.value
    return totals


def measure(args: argparse.Namespace) -> dict[int, dict[str, Cell]]:
    with contextlib.ExitStack() as stack:
        models: list[dict[str, Any]] = []
        for index, rate_pct in enumerate(args.rates):
            flaky = ("--instant", "--fault-rate", str(rate_pct / 100), "--faults", "reset,500,stall")
            first, second = (
                stack.enter_context(upstream_process(*flaky, "--seed", str(args.seed + 2 * index + n))) for n in (0, 1)
            )
            models += model_configs(rate_pct, first, second, args.read_timeout)
        server = stack.enter_context(running_server({"embedded_models": False, "models": models}))
        cells: dict[int, dict[str, Cell]] = {}
        for rate_pct in args.rates:
            cells[rate_pct] = {}
            for setup in SETUPS:
                model = f"{setup}-{rate_pct}"
                asyncio.run(run_cell(server.url, model, args.concurrency, args.concurrency))  # warm-up, not counted
                before = retries_by_model(httpx.get(server.url + "/metrics", timeout=10).text).get(model, 0.0)
                cell = asyncio.run(run_cell(server.url, model, args.requests, args.concurrency))
                after = retries_by_model(httpx.get(server.url + "/metrics", timeout=10).text).get(model, 0.0)
                cell.retries = after - before
                cells[rate_pct][setup] = cell
                print(f"  {rate_pct:>3}% {setup:<7} {cell.elapsed:5.1f}s", file=sys.stderr)
    return cells


def report(cells: dict[int, dict[str, Cell]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.requests} non-stream chat requests per cell at concurrency {args.concurrency}; faults: reset / 500 / "
        f"stall past read_timeout {args.read_timeout}s, injected on every upstream",
        f"{'faults':>6}  {'setup':<26}{'success':>9}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}{'retries/req':>13}",
    ]
    for rate_pct, row in cells.items():
        for setup, cell in row.items():
            lines.append(
                f"{rate_pct:>5}%  {SETUPS[setup]:<26}{cell.success:>9.2%}{cell.failures:>8}"
                f"{cell.pct(0.5) * 1000:>9.1f}{cell.pct(0.99) * 1000:>9.1f}{cell.retries / cell.requests:>13.3f}"
            )
    lines.append("ratios vs a (success, p50 latency, p99 latency):")
    for rate_pct, row in cells.items():
        base = row["direct"]
        parts = [
            f"{setup} success {cell.success / base.success:.3f}x, p50 {cell.pct(0.5) / base.pct(0.5):.2f}x, "
            f"p99 {cell.pct(0.99) / base.pct(0.99):.2f}x"
            for setup, cell in row.items()
            if setup != "direct" and base.success and base.pct(0.5) and base.pct(0.99)
        ]
        lines.append(f"{rate_pct:>5}%  " + "; ".join(parts))
    return "\n".join(lines)


def success_label(percent: float) -> str:
    return f"{percent:.2f}".rstrip("0").rstrip(".")  # 100 stays 100, 99.75 is not rounded up to it


def plot(cells: dict[int, dict[str, Cell]], args: argparse.Namespace) -> None:
    """Two panels of grouped bars (one group per fault rate, one bar per setup): success %, p99 latency."""
    plt = pyplot()
    rates = list(cells)
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.6 * len(rates) + 2), 4.0))
    width = 0.8 / len(SETUPS)
    panels: tuple[tuple[str, str, Callable[[Cell], float], Callable[[float], str]], ...] = (
        ("client-visible success", "% of requests", lambda c: c.success * 100, success_label),
        ("p99 latency (lower is better)", "ms", lambda c: c.pct(0.99) * 1000, lambda v: f"{v:.0f}"),
    )
    for ax, (title, unit, value_of, label_of) in zip(axes, panels, strict=True):
        for index, (setup, label) in enumerate(SETUPS.items()):
            values = [value_of(cells[rate][setup]) for rate in rates]
            offsets = [r + (index - (len(SETUPS) - 1) / 2) * width for r in range(len(rates))]
            bars = ax.bar(offsets, values, width, label=label, color=PALETTE[index % len(PALETTE)])
            ax.bar_label(bars, labels=[label_of(v) for v in values], padding=2, fontsize=6.5, rotation=90)
        ax.set_xticks(range(len(rates)), [f"{rate}% faults" for rate in rates], fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        top = max(value_of(cell) for row in cells.values() for cell in row.values())
        ax.set_ylim(0, max(top, 1e-9) * 1.35)  # headroom for the legend above the bars
    axes[0].legend(fontsize=7.5, frameon=False, loc="upper center", ncol=len(SETUPS))
    note = (
        f"{args.requests} requests per bar, concurrency {args.concurrency}; faults = reset / HTTP 500 / stall past "
        f"read_timeout {args.read_timeout}s"
    )
    finish_figure(fig, plt, args.plot, "Engine pools under injected upstream faults", note)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per cell (fault rate x setup)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rates", default="0,10,20,30", help="fault rates in percent, comma-separated")
    parser.add_argument("--read-timeout", type=float, default=0.5, help="seconds; a stall fault outlasts it")
    parser.add_argument("--seed", type=int, default=7, help="first upstream's fault seed (the others follow)")
    parser.add_argument(
        "--plot", metavar="PATH", nargs="?", const=DEFAULT_PLOT, help=f"write a PNG chart (default {DEFAULT_PLOT})"
    )
    args = parser.parse_args()
    args.rates = list(dict.fromkeys(int(rate) for rate in args.rates.split(",")))  # one set of models per rate
    began = time.perf_counter()
    cells = measure(args)
    print(report(cells, args))
    print(f"whole run {time.perf_counter() - began:.0f}s")
    if args.plot:
        plot(cells, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
