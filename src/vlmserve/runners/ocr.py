"""OCR engine: RapidOCR (PP-OCRv4 detection + recognition, ONNX Runtime) reads the text in each image.

The "answer" is the text found, in reading order (top to bottom, then left to right), one line per text
line. Usage: prompt_tokens counts images, completion_tokens counts recognised characters (the recogniser
emits one symbol per character).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ImageInput, ImagePart, Message, SamplingParams, Usage


def reading_order(boxes: list[tuple[list[list[float]], str, float]]) -> list[str]:
    """Group detections into lines by vertical overlap, then order each line left to right."""
    items = sorted(boxes, key=lambda b: min(p[1] for p in b[0]))
    lines: list[list[tuple[float, float, float, str]]] = []
    for box, text, _score in items:
        top, bottom = min(p[1] for p in box), max(p[1] for p in box)
        left = min(p[0] for p in box)
        for line in lines:
            line_top, line_bottom = line[0][0], line[0][1]
            overlap = min(bottom, line_bottom) - max(top, line_top)
            if overlap > 0.5 * min(bottom - top, line_bottom - line_top):
                line.append((top, bottom, left, text))
                break
        else:
            lines.append([(top, bottom, left, text)])
    return [" ".join(t for *_, t in sorted(line, key=lambda item: item[2])) for line in lines]


class OcrEngine:
    def __init__(self, spec: ModelSpec, *, threads: int | None) -> None:
        from rapidocr_onnxruntime import RapidOCR

        kwargs: dict[str, Any] = {}
        if threads:
            kwargs["intra_op_num_threads"] = threads
        self._ocr = RapidOCR(**kwargs)

    def read(self, image_bytes: bytes) -> list[str]:
        rgb = np.asarray(Image.open(io.BytesIO(image_bytes)).convert("RGB"))
        result, _elapsed = self._ocr(rgb[:, :, ::-1])  # RapidOCR expects OpenCV's BGR order
        return reading_order(result or [])

    def generate(
        self, messages: list[Message], sampling: SamplingParams, cancel: threading.Event
    ) -> Iterator[ChatChunk]:
        images = [p.data for m in messages for p in m.parts if isinstance(p, ImageInput | ImagePart)]
        texts: list[str] = []
        for index, data in enumerate(images):
            if cancel.is_set():
                break
            lines = self.read(data)
            body = "\n".join(lines) if lines else "(no text found)"
            texts.append(body if len(images) == 1 else f"[image {index + 1}]\n{body}")
        answer = "\n\n".join(texts)
        if sampling.max_tokens is not None and len(answer) > sampling.max_tokens:
            yield ChatChunk(text=answer[: sampling.max_tokens])
            yield ChatChunk(finish_reason="length", usage=Usage(len(images), sampling.max_tokens))
            return
        yield ChatChunk(text=answer)
        yield ChatChunk(finish_reason="stop", usage=Usage(len(images), len(answer)))

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        raise NotImplementedError("the OCR engine does not make embeddings")
