"""Estimated vs measured memory of real runners on this machine's CPU (the scheduler's RAM estimate, before
any measurement corrects it, against the runner's RSS after one short request warmed its buffers).

Cases: the embedded SmolLM2 GGUF at several contexts, slot counts and KV cache types; a small random Llama
converted to an f16 GGUF; the tiny random LLaVA of the tests as GGUF + mmproj and as a transformers folder; the
ONNX models. Target: GGUF estimates within +-15% of the measured RSS.

    .venv/bin/python bench/memory_estimates.py [--skip-built]   (--skip-built: only the embedded models)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vlmserve.backends.runner_process import LocalRunnerBackend
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatRequest, Message, SamplingParams, TextPart
from vlmserve.scheduler.memory import estimate_bytes
from vlmserve.service.catalog import embedded_specs

MB = 2**20
CACHE = Path(tempfile.gettempdir()) / "vlmserve-bench-models"


def small_llama(dest: Path) -> Path:
    """A random Llama (8 blocks of hidden 512) as an f16 GGUF, with the tests' tokenizer and converter."""
    import tiny_models
    import torch
    import transformers

    out = dest / "small-llama-f16.gguf"
    if out.is_file():
        return out
    folder = dest / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    tiny_models._build_tokenizer(folder)
    tokenizer: Any = transformers.AutoTokenizer.from_pretrained(folder)
    config: Any = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tiny_models._run_vendor(["-c", tiny_models._CONVERT_TEXT, str(folder), "--outfile", str(out), "--outtype", "f16"])
    return out


def cases(skip_built: bool) -> list[tuple[str, ModelSpec]]:
    specs = {s.name: s for s in embedded_specs()}
    out: list[tuple[str, ModelSpec]] = []
    smol = specs.get("smollm2")
    if smol is not None:
        for ctx, par, cache in [(2048, 2, "f16"), (512, 1, "f16"), (8192, 1, "f16"), (8192, 4, "f16"),
                                (8192, 1, "q8_0"), (16384, 1, "q4_0")]:  # fmt: skip
            update = {"context_size": ctx, "parallel": par, "cache_type_k": cache, "cache_type_v": cache}
            out.append((f"smollm2 {ctx}x{par} {cache}", smol.model_copy(update=update)))
    for name in ("rapidocr", "all-minilm"):
        if name in specs:
            out.append((name, specs[name]))
    if skip_built:
        return out
    import tiny_models

    llama = small_llama(CACHE / "small-llama")
    out.append(("small-llama f16 4096x1", ModelSpec(name="small-llama", engine="llamacpp", path=str(llama))))
    out.append(("small-llama f16 32768x1", ModelSpec(name="small-llama", engine="llamacpp", path=str(llama),
                                                     context_size=32768)))  # fmt: skip
    hf = tiny_models.build_tiny_llava(CACHE / "tiny-llava")
    if tiny_models.converter_available():
        text, mmproj = tiny_models.build_tiny_llava_gguf(hf, CACHE / "tiny-llava-gguf")
        out.append(("tiny-llava gguf+mmproj", ModelSpec(name="tiny-llava", engine="llamacpp", path=str(text),
                                                        mmproj=str(mmproj), context_size=2048)))  # fmt: skip
    out.append(("tiny-llava transformers", ModelSpec(name="tiny-llava-hf", engine="transformers", path=str(hf))))
    return out


async def measure(spec: ModelSpec) -> int:
    backend = LocalRunnerBackend(spec, start_timeout=300.0, threads=2)
    await backend.start()
    try:
        if spec.engine in ("llamacpp", "transformers"):
            # a prompt of about a third of the context touches the compute buffers as real use does
            prompt = ("Describe a quiet morning in a few words. " * 200)[: min(spec.context_size, 6000) // 2]
            request = ChatRequest(
                model=spec.name,
                messages=[Message(role="user", parts=[TextPart(prompt)])],
                sampling=SamplingParams(max_tokens=8, temperature=0.0),
            )
            async for _ in backend.chat(request):
                pass
        return backend.memory_bytes or 0
    finally:
        await backend.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-built", action="store_true", help="only the models that ship in wheels")
    args = parser.parse_args()
    todo = cases(args.skip_built)  # builds the random models first, so their logs come before the table
    print(f"{'model':<28} {'estimate MB':>12} {'measured MB':>12} {'error':>8}")
    errors: list[float] = []
    for label, spec in todo:
        estimate = estimate_bytes(spec)
        measured = await measure(spec)
        error = (estimate - measured) / measured if measured else float("nan")
        if spec.engine == "llamacpp":
            errors.append(error)
        print(f"{label:<28} {estimate / MB:>12.0f} {measured / MB:>12.0f} {error:>+8.1%}")
    if errors:
        worst = max(errors, key=abs)
        print(f"GGUF cases: worst error {worst:+.1%} (target within +-15%)")


if __name__ == "__main__":
    asyncio.run(main())
