"""A local imitation of the Hugging Face Hub's file API, enough for huggingface_hub's `model_info` and
`hf_hub_download` (point HF_ENDPOINT at it):

- GET  /api/models/{owner}/{name}[/revision/{rev}]  → id, sha, siblings (rfilename, size, blobId, lfs{size,
  sha256, pointerSize} for binary files); an unknown repo → 401 + `X-Error-Code: RepoNotFound`, as the Hub does;
- HEAD /{owner}/{name}/resolve/{rev}/{path}  → X-Repo-Commit, ETag (git blob id, or the sha256 for LFS files),
  X-Linked-Etag + X-Linked-Size for LFS files, Content-Length, Accept-Ranges; unknown file → 404 EntryNotFound;
- GET  same → the bytes, with `Range: bytes=N-` answered 206 + Content-Range (how huggingface_hub resumes).

Faults for tests: `drop_once` files ({(repo, path): bytes sent}) are cut off after that many bytes (the
connection closes under a full Content-Length) the first time they are fetched; `wrong_sha256` files are
advertised with a sha256 that is not theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits: huggingface_hub checks the form
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".onnx", ".pt")


@dataclass
class Hub:
    """What the imitation serves (repo id → {path in repo → bytes}) and what it has seen."""

    repos: dict[str, dict[str, bytes]]
    drop_once: dict[tuple[str, str], int] = field(default_factory=dict)
    wrong_sha256: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    url: str = ""

    def gets(self, filename: str) -> list[str]:
        """The Range headers ("" for none) of the GETs of files named `filename`."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + filename)]


def folder_files(folder: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under `folder` (not hidden ones), keyed by its path relative to it."""
    return {
        prefix + p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _sha256(hub: Hub, repo: str, path: str, data: bytes) -> str:
    if (repo, path) in hub.wrong_sha256:
        return hashlib.sha256(data + b"tampered").hexdigest()
    return hashlib.sha256(data).hexdigest()


def _sibling(hub: Hub, repo: str, path: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {"rfilename": path, "size": len(data), "blobId": _blob_id(data)}
    if _is_lfs(path):
        entry["lfs"] = {"size": len(data), "sha256": _sha256(hub, repo, path, data), "pointerSize": 134}
    return entry


def _not_found(code: str, message: str, status: int = 404) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"X-Error-Code": code})


def _app(hub: Hub) -> web.Application:
    async def model_info(request: web.Request) -> web.Response:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        hub.requests.append((request.method, request.path, ""))
        if repo not in hub.repos:
            return _not_found("RepoNotFound", "Repository not found", status=401)
        siblings = [_sibling(hub, repo, p, d) for p, d in sorted(hub.repos[repo].items())]
        return web.json_response({"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})

    async def resolve(request: web.Request) -> web.StreamResponse:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        path = request.match_info["path"]
        hub.requests.append((request.method, request.path, request.headers.get("Range", "")))
        if repo not in hub.repos:
            return _not_found("RepoNotFound", "Repository not found", status=401)
        data = hub.repos[repo].get(path)
        if data is None:
            return _not_found("EntryNotFound", f"{path} does not exist on {request.match_info['rev']}")
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes", "ETag": f'"{_blob_id(data)}"'}
        if _is_lfs(path):
            etag = _sha256(hub, repo, path, data)
            headers.update({"ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        start = 0
        if match := re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", "")):
            start = int(match.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        response.content_length = len(data) - start
        await response.prepare(request)
        if (repo, path) in hub.drop_once and not start:
            await response.write(data[: hub.drop_once.pop((repo, path))])
            assert request.transport is not None
            request.transport.close()  # the rest never comes: the client sees a body cut short
            return response
        await response.write(data[start:])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/models/{owner}/{name}", model_info)
    app.router.add_get("/api/models/{owner}/{name}/revision/{rev}", model_info)
    app.router.add_route("*", "/{owner}/{name}/resolve/{rev}/{path:.+}", resolve)
    return app


@contextlib.contextmanager
def running_hub(hub: Hub) -> Iterator[Hub]:
    """Serve `hub` on a free loopback port (in a thread with its own event loop); sets `hub.url`."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(hub), access_log=None)
    started = threading.Event()

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        hub.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        started.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=serve, name="hub-imitation", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the Hub imitation did not start")
    try:
        yield hub
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
