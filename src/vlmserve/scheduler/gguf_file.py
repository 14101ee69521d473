"""What a GGUF file says about its memory: architecture integers and every tensor's size, from the header alone.

The `gguf` package gives the block and type sizes of each tensor type (GGML_QUANT_SIZES). Its GGUFReader is
not used to read the header: it builds an object per vocabulary entry and took 14 s on SmolLM2's 49k-token
vocabulary here, in the scheduler's owner task. This reader seeks past arrays, reads each tensor's name,
shape and type, and refuses lengths a lying header could make it allocate. Results are cached per file
(path + mtime).
"""

from __future__ import annotations

import functools
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

log = logging.getLogger("vlmserve.scheduler")
MB = 1024 * 1024
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_ARCH_KEYS = (
    "block_count", "head_count", "head_count_kv", "embedding_length", "context_length", "key_length",
    "value_length", "feed_forward_length", "vocab_size",
)  # fmt: skip
MAX_KV = 4096
MAX_TENSORS = 1_000_000
MAX_DIMS = 8


@dataclass(frozen=True, slots=True)
class GgufInfo:
    arch: str = ""
    ints: dict[str, int] = field(default_factory=dict)  # short names: block_count, head_count, ...
    vocab: int = 0  # entries of tokenizer.ggml.tokens (the array's length)
    tensors: tuple[tuple[str, int], ...] = ()  # (name, bytes) in file order; empty when unreadable

    @property
    def tensor_bytes(self) -> int:
        return sum(size for _, size in self.tensors)


def _bounded(length: int, limit: int) -> int:
    """A length field from the file, refused past `limit` (a lying header must not make us allocate it)."""
    if length > limit:
        raise ValueError(f"GGUF length {length} is past {limit}")
    return length


def _u64(handle: BinaryIO) -> int:
    return int(struct.unpack("<Q", handle.read(8))[0])


def _u32(handle: BinaryIO) -> int:
    return int(struct.unpack("<I", handle.read(4))[0])


def _string(handle: BinaryIO, limit: int) -> bytes:
    return handle.read(_bounded(_u64(handle), limit))


def _skip_value(handle: BinaryIO, kind: int) -> object:
    """Read a scalar or string; skip an array (its element count is returned as a tuple for the vocabulary)."""
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        return _string(handle, 64 * MB)
    if kind == 9:  # array: element type, count, elements (a tokenizer's vocabulary: up to a few MB)
        element, count = struct.unpack("<IQ", handle.read(12))
        if element in _SCALARS:
            handle.seek(_bounded(struct.calcsize(_SCALARS[element]) * count, 1024 * MB), os.SEEK_CUR)
        else:
            _bounded(count, 16 * 2**20)
            for _ in range(count):
                _skip_value(handle, element)
        return (count,)
    raise ValueError(f"unknown GGUF value type {kind}")


def _tensor_bytes(dims: list[int], kind: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType  # imported here: it imports numpy

    elements = 1
    for dim in dims:
        elements *= dim
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown GGML tensor type {kind}") from None
    return elements // block * size


_ERRORS = (OSError, struct.error, UnicodeDecodeError, ValueError, OverflowError, MemoryError)


def _read(handle: BinaryIO, path: str) -> GgufInfo:
    """The header's integers and tensors; a truncated or hostile header gives what was read before the fault
    (the integers without tensors: estimates then fall back to the file size)."""
    if handle.read(4) != b"GGUF" or _u32(handle) < 2:
        return GgufInfo()
    arch, vocab = "", 0
    ints: dict[str, int] = {}
    try:
        n_tensors, n_kv = struct.unpack("<QQ", handle.read(16))
        for _ in range(min(n_kv, MAX_KV)):
            key = _string(handle, 65536).decode("utf-8", "replace")
            value = _skip_value(handle, _u32(handle))
            short = key.rsplit(".", 1)[-1]
            if key == "general.architecture" and isinstance(value, bytes):
                arch = value.decode("utf-8", "replace")
            elif key == "tokenizer.ggml.tokens" and isinstance(value, tuple):
                vocab = int(value[0])
            elif isinstance(value, int) and not isinstance(value, bool) and short in _ARCH_KEYS:
                ints.setdefault(short, value)
        if n_kv > MAX_KV:
            return GgufInfo(arch, ints, vocab)
        tensors = []
        for _ in range(_bounded(n_tensors, MAX_TENSORS)):
            name = _string(handle, 65536).decode("utf-8", "replace")
            dims = [_u64(handle) for _ in range(_bounded(_u32(handle), MAX_DIMS))]
            kind = _u32(handle)
            _u64(handle)  # offset in the data section
            tensors.append((name, _tensor_bytes(dims, kind)))
    except _ERRORS as exc:
        log.warning("GGUF header of %s is unreadable past some point: %s", path, exc)
        return GgufInfo(arch, ints, vocab)
    return GgufInfo(arch, ints, vocab, tuple(tensors))


@functools.lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int) -> GgufInfo:
    del mtime_ns  # part of the cache key only: a replaced file is read again
    try:
        with open(path, "rb") as handle:
            return _read(handle, path)
    except _ERRORS:
        return GgufInfo()


def read_gguf(path: str) -> GgufInfo:
    try:
        return _cached(path, os.stat(path).st_mtime_ns)
    except OSError:
        return GgufInfo()


def layer_of(name: str) -> int | None:
    """The block a tensor belongs to (`blk.N.*`), None for the others (token_embd, output, ...)."""
    if not name.startswith("blk."):
        return None
    index = name[4:].split(".", 1)[0]
    return int(index) if index.isdigit() else None
