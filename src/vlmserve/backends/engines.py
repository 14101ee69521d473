"""What each engine is, in one table: the layers above ask `traits_of(spec)` instead of comparing engine names.

Engine names ("llamacpp", "rapidocr", ...) live here, in the backends and runners that implement them and in the
catalog that writes entries; api/, service/, ui/ and scheduler/ read these traits (tests/unit/test_engine_names.py
holds them to it). A new engine is one row here (and its `EngineKind` in domain/spec.py).

Memory numbers are a runner's own, before any model (bench/memory_estimates.py measured them here): what
scheduler/layout.py adds to a model's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from vlmserve.domain.spec import EngineKind, ModelSpec

MB = 1024 * 1024
RUNNER_OVERHEAD = 160 * MB  # a Python runner process with its engine library loaded, before any model
LLAMACPP_RUNNER = 56 * MB  # measured here (bench/memory_estimates.py): a llama.cpp runner's RSS before any tensor
TRANSFORMERS_RUNNER = 400 * MB  # measured here: 376 MB for a torch CPU runner with a tiny model

FileFormat = Literal["gguf", "safetensors", "onnx"]
# how a runner is told where its model runs: "layers" (n_gpu_layers, devices, tensor_split), "device" (device,
# device_map, max_memory), "none" (CPU only, or nothing local to place)
PlacementKind = Literal["layers", "device", "none"]


@dataclass(frozen=True, slots=True)
class EngineTraits:
    name: str
    local: bool  # a runner subprocess here (else a remote server, or a pipeline over other models)
    file_format: FileFormat | None = None  # the model's files (/api/show `format`; how layout.py reads them)
    pipeline: bool = False  # runs on other catalog models (ocr_model, chat_model): no engine of its own to load
    ocr: bool = False  # reads the text out of images: a chat needs an image, and it answers that text
    tokenizer_json: bool = False  # tokenizes with the entry's `tokenizer` (tokenizer.json) and truncates at its context
    runner_bytes: int = 0  # RAM of its runner before any model
    gpu_context: int = 0  # CUDA context + workspaces, per GPU used; 0: never on a GPU
    gpu_host: int = 0  # RAM the CUDA runtime adds to a runner that uses a GPU
    placement: PlacementKind = "none"

    @property
    def takes_raw_prompts(self) -> bool:
        """Raw completions (`/v1/completions`, Ollama's generate with `raw`): not for OCR or a pipeline."""
        return not (self.ocr or self.pipeline)

    @property
    def uses_gpu(self) -> bool:
        return self.gpu_context > 0


ENGINES: dict[str, EngineTraits] = {
    t.name: t
    for t in (
        EngineTraits(
            "llamacpp", local=True, file_format="gguf", runner_bytes=LLAMACPP_RUNNER,
            gpu_context=384 * MB, gpu_host=256 * MB, placement="layers",
        ),
        EngineTraits(
            "transformers", local=True, file_format="safetensors", runner_bytes=TRANSFORMERS_RUNNER,
            gpu_context=512 * MB, gpu_host=1024 * MB, placement="device",
        ),
        # ONNX runners: kept generous, they grow with their inputs (an OCR runner's detector on a large page)
        EngineTraits("rapidocr", local=True, file_format="onnx", ocr=True, runner_bytes=RUNNER_OVERHEAD + 220 * MB),
        EngineTraits(
            "onnx-embed", local=True, file_format="onnx", tokenizer_json=True, runner_bytes=RUNNER_OVERHEAD + 120 * MB
        ),
        EngineTraits("ocr-chat", local=False, pipeline=True),
        EngineTraits("ollama", local=False),
        EngineTraits("openai", local=False),
    )
}  # fmt: skip
assert set(ENGINES) == set(get_args(EngineKind)), "every engine of domain/spec.py has one row here"


def traits_of(spec: ModelSpec) -> EngineTraits:
    return ENGINES[spec.engine]


def engine_names() -> frozenset[str]:
    return frozenset(ENGINES)
