"""`vlmserve batch submit FILE [--wait]`: upload a JSONL batch to a running server and create the batch; with
--wait follow it with a progress bar and write the output (and error) files next to the input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vlmserve.cli.common import (
    ApiKeyOption,
    ServerOption,
    auth_headers,
    err,
    fail,
    out,
    request_json,
    server_url,
    unreachable,
)

DONE = {"completed", "failed", "expired", "cancelled"}
app = typer.Typer(help="OpenAI-style batch jobs on a running server.", no_args_is_help=True)


def _first_url(path: Path) -> str:
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    return str(json.loads(raw).get("url", "/v1/chat/completions"))
                except (ValueError, AttributeError):
                    fail(f"{path}: the first line is not a JSON object", code=2)
    fail(f"{path} is empty", code=2)


def summary(batch: dict[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    done = counts.get("completed", 0) + counts.get("failed", 0)
    return f"{done}/{counts.get('total', 0)} done, {counts.get('failed', 0)} failed"


async def _follow(http: aiohttp.ClientSession, base: str, batch: dict[str, Any], poll: float) -> dict[str, Any]:
    began = time.monotonic()
    columns = (TextColumn("batch"), BarColumn(), TextColumn("{task.fields[summary]}  {task.fields[status]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("batch", total=None, summary="", status=batch["status"])
        while batch["status"] not in DONE:
            await asyncio.sleep(poll)
            batch = await request_json(http, "GET", f"{base}/batches/{batch['id']}")
            counts = batch.get("request_counts") or {}
            progress.update(task, total=counts.get("total") or None, summary=summary(batch), status=batch["status"],
                            completed=counts.get("completed", 0) + counts.get("failed", 0))  # fmt: skip
    err.print(f"{summary(batch)}  {batch['status']}  {time.monotonic() - began:.0f}s")
    return batch


async def _download(http: aiohttp.ClientSession, base: str, batch: dict[str, Any], output: Path) -> None:
    for key, target in (("output_file_id", output), ("error_file_id", output.with_suffix(".errors.jsonl"))):
        if batch.get(key):
            async with http.get(f"{base}/files/{batch[key]}/content") as response:
                target.write_bytes(await response.read())
            err.print(f"wrote {target}")


async def _submit(file: Path, content: bytes, base: str, endpoint: str, api_key: str | None, wait: bool,
                  output: Path | None, poll: float) -> int:  # fmt: skip
    async with aiohttp.ClientSession(headers=auth_headers(api_key)) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=file.name, content_type="application/jsonl")
        upload = await request_json(http, "POST", f"{base}/files", data=form)
        batch = await request_json(http, "POST", f"{base}/batches", json={
            "input_file_id": upload["id"], "endpoint": endpoint, "completion_window": "24h"})  # fmt: skip
        err.print(f"batch {batch['id']} created from file {upload['id']} ({endpoint})")
        if not wait:
            out.print(batch["id"])
            return 0
        batch = await _follow(http, base, batch, poll)
        await _download(http, base, batch, output or file.with_suffix(".output.jsonl"))
        if batch["status"] == "failed":
            for error in (batch.get("errors") or {}).get("data", [])[:20]:
                err.print(f"line {error.get('line')}: {error.get('message')}")
        return 0 if batch["status"] == "completed" else 1


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSONL input: {custom_id, method, url, body} per line")],
    host: ServerOption = "http://127.0.0.1:11434",
    endpoint: Annotated[str | None, typer.Option(help="batch endpoint (default: the url of the first line)")] = None,
    api_key: ApiKeyOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow progress and download the results")] = False,
    output: Annotated[Path | None, typer.Option(help="where to write results (default FILE.output.jsonl)")] = None,
    poll: Annotated[float, typer.Option(min=0.01, help="seconds between progress checks")] = 1.0,
) -> None:
    """Upload a JSONL file and start a batch (exit 1 unless it completes, with --wait)."""
    if not file.is_file():
        fail(f"no such file: {file}", code=2)
    base = server_url(host)
    try:
        content, endpoint = file.read_bytes(), endpoint or _first_url(file)
        code = asyncio.run(_submit(file, content, base + "/v1", endpoint, api_key, wait, output, poll))
    except aiohttp.ClientError as exc:
        unreachable(base, exc)
    raise typer.Exit(code)
