"""llama.cpp runner: the llama.cpp server (xllamacpp, in this process) on a free loopback port.

llama.cpp's own HTTP server already speaks the OpenAI API (chat with image parts when an mmproj is given,
completions, embeddings, streaming, json_schema via grammars), so the runner only configures and supervises.
"""

from __future__ import annotations

import os

from vlmserve.domain.spec import ModelSpec
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
    params.n_ctx = spec.context_size * spec.parallel  # llama.cpp splits the context between slots
    params.n_parallel = spec.parallel
    params.port = 0
    params.cpuparams.n_threads = spec.threads or threads or os.cpu_count() or 1
    params.cpuparams_batch.n_threads = params.cpuparams.n_threads
    params.n_gpu_layers = spec.gpu_layers
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
