"""Sentence embeddings on ONNX Runtime: a BERT-style encoder (all-MiniLM-L6-v2), mean pooling, L2 norm.

No torch: the tokenizer is a Hugging Face tokenizer.json run by `tokenizers`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, Message, SamplingParams

BATCH = 32


class OnnxEmbedEngine:
    def __init__(self, spec: ModelSpec, *, threads: int | None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if not spec.path or not spec.tokenizer:
            raise SystemExit("onnx-embed needs `path` (model.onnx) and `tokenizer` (tokenizer.json)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(spec.path, options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(Path(spec.tokenizer)))
        # longer inputs are truncated (the service refused them first if the request said truncate: false)
        self._tokenizer.enable_truncation(spec.embed_context)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), BATCH):
            encodings = self._tokenizer.encode_batch(texts[start : start + BATCH])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            vectors.extend(pooled.astype(float).tolist())
            tokens += int(mask.sum())
        return vectors, tokens

    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event
    ) -> Iterator[ChatChunk]:
        raise NotImplementedError("embedding models do not generate text")
