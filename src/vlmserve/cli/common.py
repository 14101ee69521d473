"""What the commands share: the consoles, failing with an exit code, the server address and the HTTP helper.

Exit codes: 0 done, 1 the work failed (server unreachable or answered an error, download failed), 2 bad usage
or configuration (as click's own usage errors).
"""

from __future__ import annotations

from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_SERVER = "http://127.0.0.1:11434"
OLLAMA_PORT = 11434

# stdout carries results (answers, secrets, JSON); stderr carries progress, timings and errors.
# soft_wrap: never insert line breaks into text that scripts may grep or copy.
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

ServerOption = Annotated[
    str,
    typer.Option(
        "--host", "--url", envvar=["VLMSERVE_HOST_URL", "OLLAMA_HOST"], metavar="URL",
        help="address of a running vlmserve (also VLMSERVE_HOST_URL, or OLLAMA_HOST style host:port)",
    ),
]  # fmt: skip
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="VLMSERVE_API_KEY", help="sent as Bearer token (VLMSERVE_API_KEY)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the raw JSON result on stdout")]


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]vlmserve:[/] {escape(message)}")
    raise typer.Exit(code)


def server_url(value: str) -> str:
    """A base URL from `http://host:port`, `host:port`, `host` or `0.0.0.0` (OLLAMA_HOST accepts all of these)."""
    value = value.strip().rstrip("/") or DEFAULT_SERVER
    has_scheme = "://" in value
    parts = urlsplit(value if has_scheme else f"http://{value}")
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # a bind-all address is not somewhere to connect to
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (None if has_scheme else OLLAMA_PORT)
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def error_message(body: Any) -> str:
    """The message of an error body in OpenAI's (`{"error": {"message"}}`) or Ollama's (`{"error": "..."}`) shape."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)


async def request_json(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Any:
    """The JSON answer of one request; an error status fails the command with the server's own message."""
    async with http.request(method, url, **kwargs) as response:
        body = await response.json(content_type=None)
        if response.status >= 400:
            fail(f"server answered {response.status}: {error_message(body)}")
        return body


def unreachable(base: str, exc: BaseException) -> NoReturn:
    fail(f"cannot reach a vlmserve server at {base} ({exc}). Start one with `vlmserve serve`, or point --host "
         "(VLMSERVE_HOST_URL) at it.")  # fmt: skip
