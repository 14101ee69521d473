"""Memory: the machine's budget, and what a model will need before it is loaded.

The estimate is the model's layout (scheduler/layout.py: weights per block from the GGUF or safetensors
headers, KV cache at context x parallel x cache type, mmproj, compute buffer, the runner's own overhead) placed
on the CPU alone. After loading, the scheduler measures the runner's RSS (and its GPU memory) and keeps the
measured/estimated ratio to correct the next estimate.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vlmserve.backends.engines import RUNNER_OVERHEAD, traits_of
from vlmserve.domain.spec import ModelSpec
from vlmserve.scheduler.gguf_file import read_gguf
from vlmserve.scheduler.layout import kv_bytes_per_token, layout_of

log = logging.getLogger("vlmserve.scheduler")
MB = 1024 * 1024
ABSOLUTE_MAX_CONTEXT = 1_048_576  # tokens: no request asks for more, whatever the model says
__all__ = ["MB", "RUNNER_OVERHEAD", "estimate_bytes", "max_context"]


def machine_memory_bytes() -> int:
    """Total RAM from /proc/meminfo (Linux), else from sysconf."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_budget_bytes(configured_mb: int | None) -> int:
    """The configured budget (VLMSERVE_MEMORY_BUDGET_MB, like the seeds' MAX_VRAM_USAGE_MB), else 80% of RAM."""
    if configured_mb is not None:
        return configured_mb * MB
    return int(machine_memory_bytes() * 0.8)


def gguf_header(path: str) -> dict[str, int]:
    """The architecture's integer keys of a GGUF header (block_count, head_count, ...), by short name."""
    return read_gguf(path).ints


def gguf_kv_bytes_per_token(path: str) -> int | None:
    """K+V bytes per token (f16 cache) from a GGUF header: 2 x layers x kv_heads x head_dim x 2; None if unknown."""
    return kv_bytes_per_token(gguf_header(path))


def max_context(spec: ModelSpec) -> int:
    """The largest context a request may ask this model for: `max_context_size`, else what the GGUF was trained
    with, else an absolute bound (the memory budget is the check that remains)."""
    if spec.max_context_size is not None:
        return max(spec.max_context_size, spec.context_size)
    trained = (
        gguf_header(spec.path).get("context_length") if traits_of(spec).file_format == "gguf" and spec.path else None
    )
    return max(trained or ABSOLUTE_MAX_CONTEXT, spec.context_size)


def estimate_bytes(spec: ModelSpec) -> int:
    """What loading `spec` will take in this machine's RAM with nothing on a GPU (0 for remote engines)."""
    return layout_of(spec).cpu_bytes
