"""A model's memory by part, from its files: what `placement` places. Which reading applies, and each runner's own
memory, come from the engine's traits (backends/engines.py), not from engine names.

- llama.cpp (GGUF): every `blk.N.*` tensor is block N's weights; its KV cache is context x parallel cells of
  (key_length + value_length) x head_count_kv elements at the cache type's size (`CACHE_BYTES`); `output*` is
  the head; `token_embd` (and anything else) stays in RAM, as llama.cpp keeps it; the mmproj file goes with
  the offloaded part; the compute buffer is sized from the batch, the context and the vocabulary (measured on
  SmolLM2 here: 16.6 MiB at 2048 cells, 22.6 at 8192 with flash attention). A `draft_model` adds its tensors,
  its own KV cache (the same cells and cache types) and compute buffer, counted with the mmproj: the runner
  puts it wholly on the main GPU unless the model runs on the CPU (measured on SmolLM2 drafting for itself at
  2 x 2048 cells: +205 MiB of RSS, estimated 199 MiB).
- transformers: safetensors headers give each tensor's elements and dtype; `layers.N.` tensors are the
  blocks, scaled to the dtype the runner loads them in (float32 on CPU, bf16/fp16 on CUDA, 8/4-bit with
  bitsandbytes), plus a KV cache at context_size from config.json and a 20% margin for activations.
- ONNX engines: file sizes, CPU only.

`memory_mb` on the entry replaces all of this with one indivisible block of that size.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

from vlmserve.backends.engines import LLAMACPP_RUNNER, MB, traits_of
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.gguf_file import layer_of, read_gguf
from vlmserve.scheduler.placement import RAM, Layout, Placement

log = logging.getLogger("vlmserve.scheduler")
__all__ = ["LLAMACPP_RUNNER", "MB", "apply_placement", "kv_bytes_per_token", "layout_of"]
# bytes per K/V element: ggml's block sizes (q8_0: 32 int8 + an f16 scale; q4_1/q5_1 add an f16 minimum)
CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
               "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}  # fmt: skip
UBATCH = 512  # llama.cpp's default n_ubatch: the compute buffer is sized for it
ACTIVATIONS = 0.2  # transformers: activations and allocator slack on top of the weights
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def path_bytes(path: str | None) -> int:
    if not path:
        return 0
    target = Path(path)
    if target.is_file():
        return target.stat().st_size
    if target.is_dir():
        return sum(f.stat().st_size for f in target.rglob("*") if f.is_file() and f.suffix != ".md")
    return 0


def layout_of(spec: ModelSpec) -> Layout:
    """What loading `spec` takes, by part (0 for remote engines and pipelines)."""
    knobs: dict[str, Any] = {
        "forced": None if spec.gpu_layers == "auto" else int(spec.gpu_layers),
        "devices": tuple(spec.devices),
        "split": tuple(spec.tensor_split),
    }
    traits = traits_of(spec)
    if spec.memory_mb is not None:
        gpu = traits.uses_gpu and spec.device != "cpu"
        return Layout(0, (spec.memory_mb * MB,), offload=gpu, whole=True, **knobs)
    if not spec.is_local:
        return Layout(0)
    if traits.file_format == "gguf" and spec.path:
        return _llamacpp(spec, knobs)
    if traits.file_format == "safetensors" and spec.path:
        return _transformers(spec, knobs)
    weights = path_bytes(spec.path) + path_bytes(spec.mmproj)
    return Layout(traits.runner_bytes + weights)


def kv_bytes_per_token(ints: dict[str, int], cache_k: str = "f16", cache_v: str = "f16") -> int | None:
    """K+V bytes per token of context for all blocks; None when the header lacks what it takes."""
    if {"block_count", "head_count", "embedding_length"} - ints.keys():
        return None
    per_block = _kv_per_block_token(ints, cache_k, cache_v)
    return int(per_block * ints["block_count"])


def _kv_per_block_token(ints: dict[str, int], cache_k: str, cache_v: str) -> float:
    head_dim = ints["embedding_length"] // max(1, ints["head_count"])
    kv_heads = ints.get("head_count_kv", ints["head_count"])
    k_len, v_len = ints.get("key_length", head_dim), ints.get("value_length", head_dim)
    return kv_heads * (k_len * CACHE_BYTES[cache_k] + v_len * CACHE_BYTES[cache_v])


def _compute_bytes(ints: dict[str, int], vocab: int, cells_per_seq: int, flash: bool) -> int:
    """llama.cpp's compute buffer for one ubatch: activations + the attention mask (+ KQ without flash
    attention) + a slice of logits; fitted to what llama.cpp reports for SmolLM2 (within a few MiB)."""
    embd, ff = ints.get("embedding_length", 0), ints.get("feed_forward_length", 0)
    heads = ints.get("head_count", 1)
    size = UBATCH * (2 * cells_per_seq + 4 * (4 * embd + ff + vocab // 8))
    if not flash:
        size += UBATCH * cells_per_seq * (heads + 1) * 4
    return size


def _llamacpp(spec: ModelSpec, knobs: dict[str, Any]) -> Layout:
    info = read_gguf(spec.path or "")
    mmproj = path_bytes(spec.mmproj)
    cells = spec.context_size * spec.parallel
    if not info.tensors or {"block_count", "head_count", "embedding_length"} - info.ints.keys():
        weights = path_bytes(spec.path)  # unreadable header: the file, and no KV estimate
        return Layout(traits_of(spec).runner_bytes + weights, mmproj=mmproj, offload=False, **knobs)
    n_blocks = info.ints["block_count"]
    blocks = [0] * n_blocks
    output = host = 0
    for name, size in info.tensors:
        layer = layer_of(name)
        if layer is not None and layer < n_blocks:
            blocks[layer] += size
        elif name.startswith("output"):
            output += size
        else:
            host += size  # token_embd, rope tables: llama.cpp keeps them in RAM
    names = {name: size for name, size in info.tensors}
    tied = names.get("token_embd.weight", 0) if "output.weight" not in names else 0  # llama.cpp duplicates it
    kv_block = int(_kv_per_block_token(info.ints, spec.cache_type_k, spec.cache_type_v) * cells)
    flash = spec.flash_attention != "off"
    compute = _compute_bytes(info.ints, info.vocab or info.ints.get("vocab_size", 0), spec.context_size, flash)
    return Layout(
        traits_of(spec).runner_bytes + host,
        tuple(b + kv_block for b in blocks),
        output=output,
        tied_head=tied,
        mmproj=mmproj + _draft_bytes(spec),
        compute=compute,
        gpu_context=traits_of(spec).gpu_context,
        gpu_host=traits_of(spec).gpu_host,
        offload=spec.device != "cpu",
        **knobs,
    )


def _draft_bytes(spec: ModelSpec) -> int:
    """The draft model of speculative decoding: its tensors, its KV cache at the main model's cells and cache
    types, and its compute buffer (0 without one; its file's size when the header is unreadable)."""
    if not spec.draft_model:
        return 0
    info = read_gguf(spec.draft_model)
    if not info.tensors or {"block_count", "head_count", "embedding_length"} - info.ints.keys():
        return path_bytes(spec.draft_model)
    kv = kv_bytes_per_token(info.ints, spec.cache_type_k, spec.cache_type_v) or 0
    vocab = info.vocab or info.ints.get("vocab_size", 0)
    compute = _compute_bytes(info.ints, vocab, spec.context_size, spec.flash_attention != "off")
    return info.tensor_bytes + kv * spec.context_size * spec.parallel + compute


def _target_bytes(spec: ModelSpec, on_gpu: bool) -> float:
    """Bytes per weight element the transformers runner loads (see runners/transformers_engine.py)."""
    if spec.quantization == "8bit":
        return 1.0
    if spec.quantization == "4bit":
        return 0.56  # 4 bits + block scales
    if spec.dtype != "auto":
        return 4.0 if spec.dtype == "float32" else 2.0
    return 2.0 if on_gpu else 4.0


@functools.lru_cache(maxsize=64)
def _safetensors(folder: str, mtime_ns: int) -> tuple[tuple[str, int, int], ...]:
    """(tensor name, elements, bytes per element) of every safetensors file in `folder`."""
    del mtime_ns
    out: list[tuple[str, int, int]] = []
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with open(file, "rb") as handle:
                length = struct.unpack("<Q", handle.read(8))[0]
                if length > 100 * MB:
                    raise ValueError(f"safetensors header of {length} bytes")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error) as exc:
            log.warning("cannot read %s: %s", file, exc)
            continue
        for name, meta in header.items():
            if name == "__metadata__" or not isinstance(meta, dict):
                continue
            elements = 1
            for dim in meta.get("shape", []):
                elements *= int(dim)
            out.append((name, elements, _DTYPE_BYTES.get(str(meta.get("dtype")), 4)))
    return tuple(out)


def _kv_from_config(folder: str, context: int, element: float) -> tuple[int, int]:
    """(decoder layers, KV bytes per layer at `context` tokens) from config.json (its text_config for VLMs)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return 0, 0
    text = config.get("text_config") or config
    layers = int(text.get("num_hidden_layers") or 0)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // max(1, heads)))
    return layers, int(2 * kv_heads * head_dim * context * element)


def _transformers(spec: ModelSpec, knobs: dict[str, Any]) -> Layout:
    folder = spec.path or ""
    try:
        tensors = _safetensors(folder, os.stat(folder).st_mtime_ns)
    except OSError:
        tensors = ()
    host = traits_of(spec).runner_bytes
    if not tensors:  # .bin weights or an unreadable folder: the files, as before
        return Layout(host + int(path_bytes(folder) * (1 + ACTIVATIONS)), offload=False, **knobs)
    element = _target_bytes(spec, on_gpu=True)
    cpu_element = _target_bytes(spec, on_gpu=False)
    n_layers, kv_layer = _kv_from_config(folder, spec.context_size * spec.parallel, min(element, 2.0))
    by_layer: dict[int, int] = {}
    rest = 0
    for name, elements, _stored in tensors:
        match = _LAYER.search(name)
        size = int(elements * element)
        if match and ("language_model" in name or "vision" not in name):
            index = int(match.group(1))
            by_layer[index] = by_layer.get(index, 0) + size
        else:
            rest += size
    blocks = [by_layer[i] + (kv_layer if i < n_layers else 0) for i in sorted(by_layer)]
    weights = sum(blocks) + rest
    cpu_weights = int(sum(elements for _, elements, _ in tensors) * cpu_element) + n_layers * kv_layer
    return Layout(
        host,
        tuple(blocks),
        output=rest,
        compute=int(weights * ACTIVATIONS),
        gpu_context=traits_of(spec).gpu_context,
        gpu_host=traits_of(spec).gpu_host,
        cpu_only=max(0, int(cpu_weights * (1 + ACTIVATIONS)) - int(weights * (1 + ACTIVATIONS))),
        offload=spec.device != "cpu",
        whole=spec.device_map is None,
        **knobs,
    )


def apply_placement(spec: ModelSpec, placement: Placement) -> ModelSpec:
    """The spec a runner starts with for `placement`: llama.cpp's n_gpu_layers / devices / tensor_split, or
    transformers' device (and, with device_map, max_memory per GPU). The runner sets CUDA_VISIBLE_DEVICES to
    `devices` (none at all for a CPU placement), so the engine's own device numbers start at 0."""
    devices = list(placement.devices)
    traits = traits_of(spec)
    if traits.placement == "layers":
        return spec.model_copy(
            update={"gpu_layers": placement.gpu_layers, "devices": devices, "tensor_split": list(placement.split)}
        )
    if traits.placement != "device":
        return spec
    if placement.gpu_layers == 0 or not devices:
        return spec.model_copy(update={"device": "cpu", "devices": [], "device_map": None, "max_memory": None})
    update: dict[str, Any] = {"device": "cuda", "devices": devices}
    if spec.device_map is not None and spec.max_memory is None and not placement.complete:
        memory = placement.memory
        per_gpu = {str(i): f"{max(1, (memory.get(d, 0) - traits.gpu_context) // MB)}MiB" for i, d in
                   enumerate(devices)}  # fmt: skip
        update["max_memory"] = {**per_gpu, "cpu": f"{max(1, memory.get(RAM, 0) // MB)}MiB"}
    return spec.model_copy(update=update)
