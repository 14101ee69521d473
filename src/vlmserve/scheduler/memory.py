"""Memory: the machine's budget, and what a model will need before it is loaded.

The estimate is weights (file sizes: GGUF + mmproj, or a model folder) + KV cache (context x parallel x the
per-token size read from the GGUF header when it can be) + a runner's fixed overhead. After loading, the
scheduler measures the runner's RSS and keeps the measured/estimated ratio to correct the next estimate.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from pathlib import Path

from vlmserve.domain.spec import ModelSpec

log = logging.getLogger("vlmserve.scheduler")
MB = 1024 * 1024
RUNNER_OVERHEAD = 160 * MB  # a Python runner process with its engine library loaded, before any model
ENGINE_OVERHEAD = {"rapidocr": 220 * MB, "onnx-embed": 120 * MB, "transformers": 600 * MB}
ABSOLUTE_MAX_CONTEXT = 1_048_576  # tokens: no request asks for more, whatever the model says
_GGUF_TYPES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # scalar type -> byte size


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


def _path_bytes(path: str | None) -> int:
    if not path:
        return 0
    target = Path(path)
    if target.is_file():
        return target.stat().st_size
    if target.is_dir():
        return sum(f.stat().st_size for f in target.rglob("*") if f.is_file() and f.suffix != ".md")
    return 0


_GGUF_KEYS = (".block_count", ".head_count", ".head_count_kv", ".embedding_length", ".context_length")


@functools.lru_cache(maxsize=64)
def _gguf_ints(path: str, mtime_ns: int) -> dict[str, int]:
    """The architecture's integer keys we use from a GGUF header (block_count, head_count, ...), by short name."""
    del mtime_ns  # part of the cache key only: a replaced file is read again
    wanted: dict[str, int] = {}
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != b"GGUF":
                return {}
            version = struct.unpack("<I", handle.read(4))[0]
            if version < 2:
                return {}
            _tensors, count = struct.unpack("<QQ", handle.read(16))
            for _ in range(min(count, 4096)):
                key = handle.read(_bounded(struct.unpack("<Q", handle.read(8))[0], 65536)).decode("utf-8", "replace")
                value = _read_value(handle, struct.unpack("<I", handle.read(4))[0])
                if isinstance(value, int) and key.endswith(_GGUF_KEYS):
                    wanted[key.rsplit(".", 1)[-1]] = value
                if len(wanted) == len(_GGUF_KEYS):
                    break
    except (OSError, struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError):
        return wanted  # a truncated or hostile header: what was read so far
    return wanted


def _bounded(length: int, limit: int) -> int:
    """A length field from the file, refused past `limit` (a lying header must not make us allocate it)."""
    if length > limit:
        raise ValueError(f"GGUF length {length} is past {limit}")
    return length


def gguf_header(path: str) -> dict[str, int]:
    try:
        return _gguf_ints(path, os.stat(path).st_mtime_ns)
    except OSError:
        return {}


def gguf_kv_bytes_per_token(path: str) -> int | None:
    """K+V bytes per token (f16 cache) from a GGUF header: 2 x layers x kv_heads x head_dim x 2; None if unknown."""
    wanted = gguf_header(path)
    if {"block_count", "head_count", "embedding_length"} - wanted.keys():
        return None
    head_dim = wanted["embedding_length"] // max(1, wanted["head_count"])
    kv_heads = wanted.get("head_count_kv", wanted["head_count"])
    return 2 * wanted["block_count"] * kv_heads * head_dim * 2


def max_context(spec: ModelSpec) -> int:
    """The largest context a request may ask this model for: `max_context_size`, else what the GGUF was trained
    with, else an absolute bound (the memory budget is the check that remains)."""
    if spec.max_context_size is not None:
        return max(spec.max_context_size, spec.context_size)
    trained = gguf_header(spec.path).get("context_length") if spec.engine == "llamacpp" and spec.path else None
    return max(trained or ABSOLUTE_MAX_CONTEXT, spec.context_size)


def _read_value(handle: object, kind: int) -> object:
    read = handle.read  # type: ignore[attr-defined]
    if kind in _GGUF_TYPES:
        size = _GGUF_TYPES[kind]
        fmt = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}[
            kind
        ]
        return struct.unpack(fmt, read(size))[0]
    if kind == 8:  # string
        return read(_bounded(struct.unpack("<Q", read(8))[0], 64 * MB))
    if kind == 9:  # array: element type, count, elements (a tokenizer's vocabulary: up to a few MB)
        element, count = struct.unpack("<IQ", read(12))
        if element in _GGUF_TYPES:
            handle.seek(_bounded(_GGUF_TYPES[element] * count, 1024 * MB), os.SEEK_CUR)  # type: ignore[attr-defined]
        else:
            _bounded(count, 16 * 2**20)
            for _ in range(count):
                _read_value(handle, element)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def estimate_bytes(spec: ModelSpec) -> int:
    """What loading `spec` will take in this machine's RAM (0 for remote engines and pipelines)."""
    if spec.memory_mb is not None:
        return spec.memory_mb * MB
    if not spec.is_local:
        return 0
    weights = _path_bytes(spec.path) + _path_bytes(spec.mmproj)
    kv = 0
    if spec.engine == "llamacpp" and spec.path:
        per_token = gguf_kv_bytes_per_token(spec.path)
        kv = (per_token or 0) * spec.context_size * spec.parallel
    if spec.engine == "transformers":
        weights = int(weights * 1.2)  # activations and caches on top; the measurement corrects the rest
    return RUNNER_OVERHEAD + ENGINE_OVERHEAD.get(spec.engine, 0) + weights + kv
