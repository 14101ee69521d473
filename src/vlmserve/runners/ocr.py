"""OCR engine: RapidOCR (PP-OCRv4 detection + recognition, ONNX Runtime) reads the text in each image.

The "answer" is the text found, in reading order (top to bottom, then left to right), one line per text
line. Usage: prompt_tokens counts images, completion_tokens counts recognised characters (the recogniser
emits one symbol per character).

Work is bounded by the image's shape, not only by its pixel count. RapidOCR scales a shorter side under 30 px up
(past its own longest-side limit), then its detector scales the shorter side to 736 px: a 1024x4 strip became a
7680x1920 detector input (2.3 GB, 16 s), 4x1024 a 736x176640 one (over 6 GB). `shape_for_ocr` hands RapidOCR an
image on which those steps stay small: longest side <= 2000, shorter side >= 32, sides at most 4:1 (the short
side padded, as RapidOCR's own letterbox does for wide lines) and at most ~2.2 MP, so the detector sees at most
2944x736. Text crops wider than 48:1 are read in pieces (the recogniser's input is 48 px high, 48 x ratio wide).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from vlmserve import malloc
from vlmserve.domain.spec import ModelSpec
from vlmserve.domain.types import ChatChunk, ImageInput, ImagePart, Message, SamplingParams, Usage
from vlmserve.errors import InvalidMedia, PayloadTooLarge

MAX_SIDE = 2000  # RapidOCR's max_side_len: longer sides are reduced anyway
MIN_SIDE = 32  # RapidOCR scales a shorter side under 30 px up (min_side_len), whatever the longer side
MAX_RATIO = 4  # beyond this the detector's 736 px shorter side makes its input long: the short side is padded
DET_MAX_PIXELS = 2944 * 736  # the detector's largest input once the shorter side is scaled to 736 px
REC_MAX_RATIO = 48  # a text crop wider than this is read in pieces: the recogniser's width is 48 px x ratio
MAX_DECODE_PIXELS = 64_000_000  # images reach the runner prepared by the gateway; this only guards the decode


def ocr_size(width: int, height: int) -> tuple[int, int]:
    """The scaled size before padding: longest side <= MAX_SIDE, at most DET_MAX_PIXELS, and the shorter side
    brought up towards MIN_SIDE only as far as the longest side allows."""
    long_side, short_side = max(width, height), min(width, height)
    scale = min(1.0, MAX_SIDE / long_side, (DET_MAX_PIXELS / (width * height)) ** 0.5)
    if short_side * scale < MIN_SIDE:
        scale = min(MIN_SIDE / short_side, MAX_SIDE / long_side)
    return max(1, round(width * scale)), max(1, round(height * scale))


def padding(width: int, height: int) -> int:
    """Rows (or columns) added on each side of the shorter side: none up to MAX_RATIO, else RapidOCR's own
    letterbox formula (shorter side about longer / 4; kept exact, its models are sensitive to the offset)."""
    long_side, short_side = max(width, height), min(width, height)
    if long_side <= MAX_RATIO * short_side and short_side >= MIN_SIDE:
        return 0
    target = max(int(long_side / 8), MIN_SIDE // 2) * 2
    return max(0, int((target - short_side) / 2))


def shape_for_ocr(image: Image.Image) -> np.ndarray:
    """An RGB array on which RapidOCR's preprocessing, letterbox and detector stay within DET_MAX_PIXELS."""
    size = ocr_size(image.width, image.height)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    pad = padding(*image.size)
    if pad:  # black, like RapidOCR's own letterbox
        wide = image.width >= image.height
        canvas = Image.new(
            "RGB", (image.width, image.height + 2 * pad) if wide else (image.width + 2 * pad, image.height)
        )
        canvas.paste(image, (0, pad) if wide else (pad, 0))
        image = canvas
    return np.asarray(image)


class PiecewiseRecognizer:
    """Wraps RapidOCR's recogniser: a crop wider than REC_MAX_RATIO x its height is split into pieces that are
    read on their own and joined, so no crop makes the recogniser's batch (48 px x widest ratio) huge."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, crops: Any, return_word_box: bool = False) -> tuple[list[tuple[str, float]], float]:
        crops = [crops] if isinstance(crops, np.ndarray) else list(crops)
        pieces: list[np.ndarray] = []
        owners: list[int] = []
        for index, crop in enumerate(crops):
            height, width = crop.shape[:2]
            step = max(1, height * REC_MAX_RATIO)
            for start in range(0, max(width, 1), step):
                pieces.append(crop[:, start : start + step])
                owners.append(index)
        if not pieces:
            return [], 0.0
        results, elapsed = self.inner(pieces, False)
        texts: list[list[str]] = [[] for _ in crops]
        scores: list[list[float]] = [[] for _ in crops]
        for owner, result in zip(owners, results, strict=True):
            texts[owner].append(str(result[0]))
            scores[owner].append(float(result[1]))
        joined = [("".join(t), sum(s) / len(s) if s else 0.0) for t, s in zip(texts, scores, strict=True)]
        return joined, float(elapsed)


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


def open_rgb(data: bytes) -> Image.Image:
    """The image as RGB, JPEGs decoded at the DCT scale OCR needs; bad bytes are a 400, not an engine crash."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_DECODE_PIXELS:
            raise PayloadTooLarge(
                f"image is {image.width}x{image.height}, the OCR engine reads at most {MAX_DECODE_PIXELS} pixels",
                param="image",
            )
        if image.format == "JPEG":
            image.draft("RGB", ocr_size(image.width, image.height))
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InvalidMedia("image: not an image the OCR engine can read", param="image") from exc


class OcrEngine:
    def __init__(self, spec: ModelSpec, *, threads: int | None) -> None:
        from rapidocr_onnxruntime import RapidOCR

        kwargs: dict[str, Any] = {}
        if threads:
            kwargs["intra_op_num_threads"] = threads
        self._ocr = RapidOCR(**kwargs)
        self._ocr.text_rec = PiecewiseRecognizer(self._ocr.text_rec)

    def read(self, image_bytes: bytes) -> list[str]:
        rgb = shape_for_ocr(open_rgb(image_bytes))
        try:
            result, _elapsed = self._ocr(rgb[:, :, ::-1])  # RapidOCR expects OpenCV's BGR order
        finally:
            malloc.trim()  # the detector's activations (up to ~400 MB) go back to the system, not to an arena
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
