"""Cache-aware routing vs least-busy: time to first token of follow-up turns on two real llama.cpp runners.

    .venv/bin/python bench/pool_affinity.py [--conversations 20] [--turns 4] [--system-tokens 1500] [--slots 12]

Two runner processes of the embedded SmolLM2 (llama.cpp, one thread each, `--slots` slots of 4,096 tokens each)
are the replicas of one PoolBackend, in this process. Each runner has slots for a little more than half of the
conversations (12 for 20): what a pool sized for its load has. llama.cpp gives a request the slot whose cached
prompt is most like it, so a conversation that keeps coming back to one runner finds its earlier turns there;
with one slot per runner (as this bench first ran) every request overwrote the last one's cache and only the
shared system prompt was ever reused, by either policy.
20 conversations of 4 turns share a ~1,500-token system prompt; each turn adds a ~120-token user message and
the model's answer (24 tokens). Every round sends turn t of every conversation, in a shuffled order (the same
seed for both policies), one request at a time, streaming. The same trace runs through a pool with cache-aware
routing and one with least-busy routing (fresh runners for each).
Printed: median and p90 TTFT of turns 2-4 per policy, and the ratio (goal: affinity <= 0.4x least-busy).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from vlmserve.backends.openai_http import OpenAICompatibleBackend  # noqa: E402
from vlmserve.backends.pool import PoolBackend  # noqa: E402
from vlmserve.domain.spec import ModelSpec  # noqa: E402
from vlmserve.domain.types import ChatRequest, Message, SamplingParams, TextPart  # noqa: E402
from vlmserve.runners.lifecycle import READY_PREFIX  # noqa: E402
from vlmserve.service.catalog import embedded_specs  # noqa: E402

WORDS = [
    "river",
    "stone",
    "lamp",
    "orchard",
    "copper",
    "violet",
    "harbor",
    "meadow",
    "lantern",
    "pepper",
    "canyon",
    "ribbon",
]


def start_runner(stack: ExitStack, spec: ModelSpec) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmserve.runners", "--spec", spec.model_dump_json(), "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    stack.callback(proc.wait, 30)
    stack.callback(proc.stdin.close)  # type: ignore[union-attr]
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()
    raise RuntimeError("runner exited before it was ready")


def text_of(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


async def run_policy(spec: ModelSpec, cache_aware: bool, args: argparse.Namespace) -> list[float]:
    with ExitStack() as stack:
        urls = [start_runner(stack, spec) for _ in range(2)]
        members = [
            (url, OpenAICompatibleBackend(spec.model_copy(update={"remote_model": spec.name}), url)) for url in urls
        ]
        pool = PoolBackend(
            spec.model_copy(update={"replicas": urls, "engine": "openai"}), members, cache_aware=cache_aware
        )
        rng = random.Random(args.seed)
        system = Message(
            role="system", parts=[TextPart("You answer briefly. Notes: " + text_of(rng, args.system_tokens))]
        )
        histories = [[system] for _ in range(args.conversations)]
        ttfts: list[float] = []
        for turn in range(args.turns):
            order = list(range(args.conversations))
            rng.shuffle(order)
            for c in order:
                histories[c].append(Message(role="user", parts=[TextPart(f"Question {turn}: " + text_of(rng, 120))]))
                request = ChatRequest(
                    model=spec.name, messages=list(histories[c]), stream=True,
                    sampling=SamplingParams(max_tokens=24, temperature=0.0),
                )  # fmt: skip
                began = time.perf_counter()
                first: float | None = None
                answer = []
                async for chunk in pool.chat(request):
                    if first is None and chunk.text:
                        first = time.perf_counter() - began
                    answer.append(chunk.text)
                if turn > 0 and first is not None:
                    ttfts.append(first)
                histories[c].append(Message(role="assistant", parts=[TextPart("".join(answer))]))
        await pool.aclose()
        return ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--system-tokens", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--slots", type=int, default=12, help="llama.cpp slots per runner")
    args = parser.parse_args()
    spec = next(s for s in embedded_specs() if s.name == "smollm2")
    spec = spec.model_copy(update={"parallel": args.slots, "context_size": 4096})
    results = {}
    for label, cache_aware in (("least-busy", False), ("cache-aware", True)):
        ttfts = asyncio.run(run_policy(spec, cache_aware, args))
        ttfts.sort()
        results[label] = statistics.median(ttfts)
        print(f"{label:<12} turns 2-{args.turns}: TTFT median {results[label] * 1000:7.1f} ms, "
              f"p90 {ttfts[int(len(ttfts) * 0.9)] * 1000:7.1f} ms ({len(ttfts)} requests)")  # fmt: skip
    ratio = results["cache-aware"] / results["least-busy"]
    print(f"cache-aware / least-busy median TTFT: {ratio:.2f}x (goal <= 0.4x)")


if __name__ == "__main__":
    main()
