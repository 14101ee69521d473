"""Swap-aware ordering vs plain FIFO: two models, memory for one, two clients sending interleaved requests.

The real Scheduler (scheduler/core.py + policy.py) runs with engines that take LOAD_S to load and SERVICE_S
per request (sleeps, so the figures are the policy's, not this machine's CPU). Both orderings run in this one
process, one after the other, on the same workload: total time, number of loads and the p99 wait in queue.
Target: total <= 0.5x FIFO, with p99 wait within the configured bound (max_swap_wait + a swap + a run).

    .venv/bin/python bench/scheduler_swap.py [--requests 120] [--load 0.2] [--service 0.02] [--bound 1] [--plot c.png]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

from plotting import Panel, save_panels

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ChatRequest, CompletionRequest, EmbedRequest, EmbedResult
from vlmserve.scheduler.core import Scheduler
from vlmserve.scheduler.state import SchedulerConfig

MB = 2**20


class TimedEngine:
    """A backend that takes `load_s` to load: what the scheduler sees of a real runner, without the CPU."""

    def __init__(self, spec: ModelSpec, load_s: float) -> None:
        self.spec = spec
        self._load_s = load_s
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def memory_bytes(self) -> int | None:
        return 600 * MB if self._loaded else None

    async def start(self) -> None:
        await asyncio.sleep(self._load_s)
        self._loaded = True

    async def stop(self) -> None:
        await asyncio.sleep(0.01)
        self._loaded = False

    async def health(self) -> bool:
        return self._loaded

    async def chat(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def complete(self, request: CompletionRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk(finish_reason="stop")

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        return EmbedResult([[0.0]], 0)


async def run(ordering: str, args: argparse.Namespace) -> dict[str, float]:
    specs = [ModelSpec(name=name, engine="llamacpp", path="/x.gguf", memory_mb=600, parallel=2) for name in "ab"]
    config = SchedulerConfig(budget_bytes=1000 * MB, max_swap_wait=args.bound, ordering=ordering, max_queue=1000)
    scheduler = Scheduler(lambda spec: TimedEngine(spec, args.load), config)
    scheduler.start()
    waits: list[float] = []

    async def client(spec: ModelSpec, offset: float) -> None:
        await asyncio.sleep(offset)

        async def worker() -> None:
            for _ in range(args.requests // 2):
                asked = time.perf_counter()
                async with scheduler.lease(spec, client=spec.name):
                    waits.append(time.perf_counter() - asked)
                    await asyncio.sleep(args.service)

        await asyncio.gather(worker(), worker())

    began = time.perf_counter()
    await asyncio.gather(client(specs[0], 0.0), client(specs[1], 0.005))
    total = time.perf_counter() - began
    loads = sum(n for (kind, _, _), n in config.counters.items() if kind == "load")
    await scheduler.close()
    waits.sort()
    return {
        "total_s": total,
        "loads": loads,
        "p50_wait_s": statistics.median(waits),
        "p99_wait_s": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120, help="requests per client")
    parser.add_argument("--load", type=float, default=0.2, help="seconds a model takes to load")
    parser.add_argument("--service", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--bound", type=float, default=1.0, help="max_swap_wait, seconds")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    args = parser.parse_args()
    fifo = asyncio.run(run("fifo", args))
    swap = asyncio.run(run("swap-aware", args))
    bound = args.bound + 2 * args.load + 2 * args.service + 0.1  # wait bound + drain + unload + load (+ slack)
    print(
        f"2 models (600 MB each, budget 1000 MB), 2 clients x {args.requests} requests, load {args.load}s, "
        f"service {args.service}s, max_swap_wait {args.bound}s"
    )
    print(f"{'':14}{'total s':>10}{'loads':>8}{'p50 wait s':>12}{'p99 wait s':>12}")
    for name, fig in (("fifo", fifo), ("swap-aware", swap)):
        print(
            f"{name:14}{fig['total_s']:>10.2f}{fig['loads']:>8.0f}{fig['p50_wait_s']:>12.3f}{fig['p99_wait_s']:>12.3f}"
        )
    ratio = swap["total_s"] / fifo["total_s"]
    print(
        f"total swap-aware / fifo: {ratio:.2f} (target <= 0.5: {'PASS' if ratio <= 0.5 else 'MISS'}); "
        f"p99 wait {swap['p99_wait_s']:.2f}s vs bound {bound:.2f}s: "
        f"{'PASS' if swap['p99_wait_s'] <= bound else 'MISS'}"
    )
    if args.plot:
        labels = ("FIFO", "swap-aware")
        save_panels(args.plot, "Two models that do not fit together: FIFO vs swap-aware ordering", [
            Panel("total time", labels, [fifo["total_s"], swap["total_s"]], "seconds", "{:.1f}", lower_is_better=True),
            Panel("model loads", labels, [fifo["loads"], swap["loads"]], "loads", "{:.0f}", lower_is_better=True),
            Panel("p99 queue wait", labels, [fifo["p99_wait_s"], swap["p99_wait_s"]], "seconds", "{:.2f}",
                  lower_is_better=True),
        ], note=f"{args.requests} requests, load {args.load}s, service {args.service}s, max_swap_wait {args.bound}s; "
                f"swap-aware/FIFO time {ratio:.2f}; p99 wait bound {bound:.2f}s")  # fmt: skip


if __name__ == "__main__":
    main()
