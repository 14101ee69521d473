"""A raw HTTP/1.1 client for hostile bodies: sends a chunked body from a generator and stops as soon as the
server answers, so a test can tell how many bytes the server took before refusing (httpx would keep writing)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before the server answered (or closed)

    def json(self) -> object:
        return orjson.loads(self.body)


def _read_answer(sock: socket.socket, deadline: float) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            piece = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not piece:
            break
        data += piece
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = headers.get("content-length")
            if length is not None and len(body) >= int(length):
                return int(lines[0].split()[1]), headers, body[: int(length)]
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        raise AssertionError("the server sent no answer")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def send_chunked(
    url: str,
    path: str,
    chunks: Iterator[bytes],
    *,
    content_type: str = "application/json",
    on_chunk: Callable[[int], None] | None = None,
    timeout: float = 60.0,
) -> RawAnswer:
    """POST `chunks` with Transfer-Encoding: chunked; stop sending once an answer is readable or the server
    closes. `on_chunk(sent)` runs after each chunk (e.g. to sample the server's memory)."""
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        sock.sendall(head.encode())
        sent = 0
        finished = True
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable or time.monotonic() > deadline:
                finished = False
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                finished = False
                break
            sent += len(chunk)
            if on_chunk is not None:
                on_chunk(sent)
        if finished:
            sock.sendall(b"0\r\n\r\n")
        status, headers, body = _read_answer(sock, deadline)
    return RawAnswer(status, headers, body, sent)


def repeated(first: bytes, filler: bytes, total: int) -> Iterator[bytes]:
    """`first`, then `filler` again and again up to `total` bytes: a huge body that costs the test no memory."""
    yield first
    sent = len(first)
    while sent < total:
        yield filler
        sent += len(filler)
