"""Give freed heap memory back to the system (glibc's malloc_trim), from any layer.

glibc raises its mmap threshold each time a large mmapped block is freed, so later large buffers (Pillow's
16 MB pixel blocks, ONNX Runtime's activations) come from malloc arenas that keep the memory after it is freed:
eight big image decodes left 3.5 GB resident, a run of odd-shaped OCR inputs ~250 MB. `trim()` hands it back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    result: Callable[[int], int] = trim
    return result


def trim() -> bool:
    """Return free memory at the top of every arena and the free pages inside them; False where unsupported."""
    function = _malloc_trim()
    return bool(function(0)) if function is not None else False
