"""The files behind models made over the API: uploaded blobs (Ollama's `POST /api/blobs/sha256:...`), the GGUF
files `/api/create` names (by blob digest or by a path on the server), and which of them is a multimodal
projector.

Blobs live in `<data_dir>/blobs/sha256-<hex>`; an upload is written beside it as `sha256-<hex>.partial-<id>`,
hashed as it arrives, and renamed into place only when its sha256 is the one named (else it is deleted: 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from vlmserve.errors import BadRequest, PayloadTooLarge

DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
GGUF_MAGIC = b"GGUF"
WRITE_CHUNK = 4 * 2**20  # bytes gathered before one write (+ hash) in a worker thread
PROJECTOR_ARCHITECTURES = frozenset({"clip", "mmproj"})


def digest_hex(digest: str) -> str:
    match = DIGEST.match(digest.strip())
    if match is None:
        raise BadRequest(f"{digest!r} is not a blob digest: expected sha256:<64 hex digits>", param="digest")
    return match.group(1)


def gguf_architecture(path: Path) -> str | None:
    """`general.architecture` from a GGUF header (read until the first array, where it no longer comes), or
    None when the file is no GGUF. Only small scalars and strings are read: a lying header allocates nothing."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    try:
        with path.open("rb") as handle:
            if handle.read(4) != GGUF_MAGIC:
                return None
            handle.read(4 + 16)  # version, tensor count, kv count
            for _ in range(64):
                (key_length,) = struct.unpack("<Q", handle.read(8))
                if key_length > 1024:
                    return ""
                key = handle.read(key_length).decode("utf-8", "replace")
                (kind,) = struct.unpack("<I", handle.read(4))
                if kind == 8:  # string
                    (length,) = struct.unpack("<Q", handle.read(8))
                    if length > 4096:
                        return ""
                    value = handle.read(length).decode("utf-8", "replace")
                    if key == "general.architecture":
                        return value
                elif kind in sizes:
                    handle.read(sizes[kind])
                else:
                    return ""  # an array: the general.* keys are behind us
    except (OSError, struct.error):
        return ""
    return ""


def is_projector(name: str, path: Path) -> bool:
    """A multimodal projector: named so (mmproj-*.gguf, as llama.cpp's converter writes), or a GGUF whose
    architecture is CLIP (how Ollama recognises one)."""
    lowered = Path(name).name.lower()
    return "mmproj" in lowered or "projector" in lowered or gguf_architecture(path) in PROJECTOR_ARCHITECTURES


def checked_gguf(path: Path, param: str) -> Path:
    """`path` as an absolute GGUF file on this server, or a 400 naming what is wrong with it."""
    if not path.is_absolute():
        raise BadRequest(f"{path}: give an absolute path on the server (or upload the file as a blob)", param=param)
    if not path.is_file():
        raise BadRequest(f"{path}: no such file on the server", param=param)
    if gguf_architecture(path) is None:
        raise BadRequest(f"{path}: not a GGUF file (only GGUF models can be created)", param=param)
    return path


def remove_unused(paths: list[Path], used: set[Path], models_root: Path, blobs_root: Path) -> list[Path]:
    """Delete those of `paths` that are the server's own (under `models_root` or `blobs_root`) and that no model
    uses (`used`); a model folder left with only its download cache goes too. Returns what was deleted."""
    used = {u.resolve() for u in used}
    roots = (models_root.resolve(), blobs_root.resolve())
    removed: list[Path] = []
    for path in (p.resolve() for p in paths):
        if path in used or not any(path.is_relative_to(root) and path != root for root in roots):
            continue
        if any(u.is_relative_to(path) for u in used):  # a folder that holds another model's files
            continue
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
                (path.parent / ".cache" / "huggingface" / "download" / f"{path.name}.metadata").unlink(missing_ok=True)
            removed.append(path)
    for folder in {p.parent for p in removed if p.parent.parent == roots[0]}:
        if folder.is_dir() and not any(p for p in folder.iterdir() if p.name != ".cache"):
            shutil.rmtree(folder, ignore_errors=True)  # only the download cache was left
    return removed


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploading: set[Path] = set()  # partial files being written now (left alone by temp cleanup)

    def path(self, digest: str) -> Path:
        return self.root / f"sha256-{digest_hex(digest)}"

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def all(self) -> list[Path]:
        return sorted(p for p in self.root.glob("sha256-*") if p.is_file() and ".partial" not in p.name)

    async def write(self, digest: str, chunks: AsyncIterator[bytes], length: int | None) -> bool:
        """Store an upload as blob `digest`; False when it was already there (the bytes are still read)."""
        final = self.path(digest)
        expected = digest_hex(digest)
        self.root.mkdir(parents=True, exist_ok=True)
        if length is not None and length > shutil.disk_usage(self.root).free:
            raise PayloadTooLarge(f"the upload is {length} bytes, more than the free disk space in {self.root}")
        partial = final.with_name(f"{final.name}.partial-{uuid.uuid4().hex[:8]}")
        self.uploading.add(partial)
        hasher = hashlib.sha256()
        try:
            with partial.open("wb") as handle:
                pending = bytearray()
                async for chunk in chunks:
                    pending += chunk
                    if len(pending) >= WRITE_CHUNK:
                        await asyncio.to_thread(_write, handle, hasher, bytes(pending))
                        pending.clear()
                await asyncio.to_thread(_write, handle, hasher, bytes(pending))
            if hasher.hexdigest() != expected:
                raise BadRequest(f"digest mismatch: the bytes sent have sha256 {hasher.hexdigest()}", param="digest")
            existed = final.is_file()
            os.replace(partial, final)
            return not existed
        finally:
            self.uploading.discard(partial)
            partial.unlink(missing_ok=True)


def _write(handle: object, hasher: Any, data: bytes) -> None:
    hasher.update(data)
    handle.write(data)  # type: ignore[attr-defined]
