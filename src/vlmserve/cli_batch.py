"""`vlmserve batch submit FILE [--wait]`: upload a JSONL batch to a running server, create the batch, and with
--wait follow it with a progress bar and write the output (and error) files next to the input."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

DONE = {"completed", "failed", "expired", "cancelled"}


def add_parser(sub: Any) -> None:
    batch = sub.add_parser("batch", help="OpenAI-style batch jobs on a running server")
    actions = batch.add_subparsers(dest="batch_command", required=True)
    submit = actions.add_parser("submit", help="upload a JSONL file and start a batch")
    submit.add_argument("file", type=Path, help="JSONL input: {custom_id, method, url, body} per line")
    submit.add_argument("--url", default="http://127.0.0.1:11434", help="server address")
    submit.add_argument("--endpoint", default=None, help="batch endpoint (default: the url of the first line)")
    submit.add_argument("--api-key", default=None, help="sent as Bearer token")
    submit.add_argument("--wait", action="store_true", help="follow progress and download the results")
    submit.add_argument("--output", type=Path, default=None, help="where to write results (default FILE.output.jsonl)")
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")


def _first_url(path: Path) -> str:
    import json

    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                return str(json.loads(raw).get("url", "/v1/chat/completions"))
    raise SystemExit(f"vlmserve: {path} is empty")


def bar(done: int, total: int, failed: int, status: str, width: int = 30) -> str:
    filled = int(width * done / total) if total else 0
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done, {failed} failed  {status}"


async def _submit(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    base = args.url.rstrip("/") + "/v1"
    async with aiohttp.ClientSession(headers=headers) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", args.file.read_bytes(), filename=args.file.name, content_type="application/jsonl")
        upload = await _json(http.post(f"{base}/files", data=form))
        endpoint = args.endpoint or _first_url(args.file)
        batch = await _json(http.post(f"{base}/batches", json={
            "input_file_id": upload["id"], "endpoint": endpoint, "completion_window": "24h"}))
        print(f"batch {batch['id']} created from file {upload['id']} ({endpoint})", file=sys.stderr)
        if not args.wait:
            print(batch["id"])
            return 0
        began = time.monotonic()
        while batch["status"] not in DONE:
            await asyncio.sleep(args.poll)
            batch = await _json(http.get(f"{base}/batches/{batch['id']}"))
            counts = batch.get("request_counts") or {}
            line = bar(counts.get("completed", 0) + counts.get("failed", 0), counts.get("total", 0),
                       counts.get("failed", 0), batch["status"])
            print(f"\r{line}  {time.monotonic() - began:.0f}s", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        output = args.output or args.file.with_suffix(".output.jsonl")
        for key, target in (("output_file_id", output), ("error_file_id", output.with_suffix(".errors.jsonl"))):
            if batch.get(key):
                async with http.get(f"{base}/files/{batch[key]}/content") as response:
                    target.write_bytes(await response.read())
                print(f"wrote {target}", file=sys.stderr)
        if batch["status"] == "failed":
            for error in (batch.get("errors") or {}).get("data", [])[:20]:
                print(f"line {error.get('line')}: {error.get('message')}", file=sys.stderr)
        return 0 if batch["status"] == "completed" else 1


async def _json(call: Any) -> dict[str, Any]:
    async with call as response:
        body: dict[str, Any] = await response.json(content_type=None)
        if response.status >= 400:
            message = (body.get("error") or {}).get("message", body) if isinstance(body, dict) else body
            raise SystemExit(f"vlmserve: server answered {response.status}: {message}")
        return body


def run(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"vlmserve: no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_submit(args))
    except aiohttp.ClientError as exc:
        print(f"vlmserve: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 3
