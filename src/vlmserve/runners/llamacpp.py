"""llama.cpp runner: the llama.cpp server (xllamacpp, in this process) on a free loopback port.

llama.cpp's own HTTP server already speaks the OpenAI API (chat with image parts when an mmproj is given,
completions, embeddings, streaming, json_schema via grammars), so the runner only configures and supervises.

GPU placement comes in the spec: a number of `gpu_layers` (the scheduler's choice, or the entry's) is used as
it is, with llama.cpp's own fitting turned off (it would re-fit to the whole free VRAM, not our budget);
`gpu_layers: auto` (no GPU managed by the scheduler) leaves llama.cpp's defaults: all layers, fitted to free
memory. The runner's CUDA_VISIBLE_DEVICES already holds only the placement's GPUs, so the main GPU is 0.

Speed options (`speed_params`): `parallel` slots (each with context_size cells; n_ctx is their sum), continuous
batching, and a draft model for speculative decoding: it runs with the main model's KV cache types and goes
wholly to the GPU unless the model runs on the CPU (gpu_layers 0), as the memory estimate assumes.
"""

from __future__ import annotations

import os
from typing import Any, get_args

from vlmserve.domain.spec import CacheType, ModelSpec
from vlmserve.domain.types import Capability
from vlmserve.runners.lifecycle import announce_ready, wait_for_parent_exit


def serve_llamacpp(spec: ModelSpec, *, threads: int | None) -> int:
    import xllamacpp as xlc

    if not spec.path or not os.path.isfile(spec.path):
        raise SystemExit(f"GGUF file not found: {spec.path}")
    params = xlc.CommonParams()
    params.model.path = spec.path
    if spec.mmproj:
        if not os.path.isfile(spec.mmproj):
            raise SystemExit(f"mmproj file not found: {spec.mmproj}")
        params.mmproj.path = spec.mmproj
    params.port = 0
    params.cpuparams.n_threads = spec.threads or threads or os.cpu_count() or 1
    params.cpuparams_batch.n_threads = params.cpuparams.n_threads
    gpu_params(params, spec, xlc)
    speed_params(params, spec, xlc)
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    if spec.chat_template:
        params.chat_template = spec.chat_template
    if Capability.EMBEDDING in spec.capabilities:
        params.embedding = True
    server = xlc.Server(params)
    announce_ready(str(server.listening_address))
    wait_for_parent_exit()
    del server
    return 0


CACHE_TYPES = {name: f"GGML_TYPE_{name.upper()}" for name in get_args(CacheType)}  # f16 -> GGML_TYPE_F16
FLASH = {"auto": "LLAMA_FLASH_ATTN_TYPE_AUTO", "on": "LLAMA_FLASH_ATTN_TYPE_ENABLED",
         "off": "LLAMA_FLASH_ATTN_TYPE_DISABLED"}  # fmt: skip
MAX_DEVICES = 128  # xllamacpp's tensor_split has this many entries


def gpu_params(params: Any, spec: ModelSpec, xlc: Any) -> None:
    """Layers, devices, KV cache types and flash attention from the spec onto llama.cpp's parameters."""
    if spec.gpu_layers != "auto":
        params.n_gpu_layers = int(spec.gpu_layers)
        params.fit_params = False
    params.main_gpu = 0
    if len(spec.tensor_split) > 1:
        shares = [float(s) for s in spec.tensor_split][:MAX_DEVICES]
        params.tensor_split = shares + [0.0] * (MAX_DEVICES - len(shares))
    params.cache_type_k = getattr(xlc.ggml_type, CACHE_TYPES[spec.cache_type_k])
    params.cache_type_v = getattr(xlc.ggml_type, CACHE_TYPES[spec.cache_type_v])
    params.flash_attn_type = getattr(xlc.llama_flash_attn_type, FLASH[spec.flash_attention])


def speed_params(params: Any, spec: ModelSpec, xlc: Any) -> None:
    """Slots, continuous batching and the draft model (speculative decoding) onto llama.cpp's parameters."""
    params.n_ctx = spec.context_size * spec.parallel  # llama.cpp splits the context between slots
    params.n_parallel = spec.parallel
    params.cont_batching = spec.cont_batching
    if not spec.draft_model:
        return
    if not os.path.isfile(spec.draft_model):
        raise SystemExit(f"draft model not found: {spec.draft_model}")
    draft = params.speculative.draft
    draft.mparams.path = spec.draft_model
    if spec.draft_max_tokens is not None:
        draft.n_max = spec.draft_max_tokens
    if spec.draft_min_tokens is not None:
        draft.n_min = spec.draft_min_tokens
    draft.cache_type_k = params.cache_type_k
    draft.cache_type_v = params.cache_type_v
    if spec.gpu_layers != "auto":
        draft.n_gpu_layers = 0 if int(spec.gpu_layers) == 0 else -1
    draft.cpuparams.n_threads = params.cpuparams.n_threads
    draft.cpuparams_batch.n_threads = params.cpuparams_batch.n_threads
    params.speculative.types = [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
