"""`vlmserve models`: the catalog of a running server and what is loaded, from /v1/models and /admin/models
(or Ollama's /api/ps when the admin routes are closed to the key in use)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from rich.table import Table
from rich.text import Text

from vlmserve.cli.common import (
    ApiKeyOption,
    JsonOption,
    ServerOption,
    auth_headers,
    out,
    request_json,
    server_url,
    unreachable,
)

MB = 1024 * 1024


async def _runtime(http: aiohttp.ClientSession, base: str) -> dict[str, dict[str, Any]]:
    """Per model: state and memory. /admin/models knows every state; /api/ps only the loaded local models."""
    async with http.get(f"{base}/admin/models") as response:
        if response.status == 200:
            body = await response.json()
            return {m["name"]: {"state": m["state"], "memory_bytes": (m.get("memory") or {}).get("measured_bytes")
                                or (m.get("memory") or {}).get("estimated_bytes")} for m in body["models"]}  # fmt: skip
    ps = await request_json(http, "GET", f"{base}/api/ps")
    # Ollama names carry a tag (`smollm2:latest`) where /v1/models has the bare name (`smollm2`)
    return {
        name: {"state": "loaded", "memory_bytes": m.get("size")}
        for m in ps["models"]
        for name in {m["name"], m["name"].removesuffix(":latest")}
    }


async def fetch(base: str, api_key: str | None) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=auth_headers(api_key)) as http:
        listed = await request_json(http, "GET", f"{base}/v1/models")
        runtime = await _runtime(http, base)
    rows = []
    for card in listed["data"]:
        state = runtime.get(card["id"], {})
        rows.append({
            "name": card["id"], "engine": card.get("engine"), "capabilities": card.get("capabilities", []),
            "aliases": card.get("aliases", []), "state": state.get("state", "unloaded"),
            "memory_bytes": state.get("memory_bytes"),
        })  # fmt: skip
    return rows


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table("name", "engine", "capabilities", "loaded", "memory", box=None, pad_edge=False)
    table.add_column("aliases", overflow="fold")
    for row in rows:
        memory = f"{row['memory_bytes'] / MB:.0f} MB" if row["memory_bytes"] else "-"
        loaded = "yes" if row["state"] == "loaded" else ("no" if row["state"] == "unloaded" else row["state"])
        cells = (row["name"], row["engine"] or "-", ",".join(row["capabilities"]), loaded, memory,
                 ",".join(row["aliases"]))  # fmt: skip
        table.add_row(*(Text(cell) for cell in cells))  # Text: names are never rich markup
    return table


def models(
    host: ServerOption = "http://127.0.0.1:11434", api_key: ApiKeyOption = None, json_: JsonOption = False
) -> None:
    """List the models of a running server: name, engine, capabilities, loaded or not, memory."""
    base = server_url(host)
    try:
        rows = asyncio.run(fetch(base, api_key))
    except aiohttp.ClientConnectionError as exc:
        unreachable(base, exc)
    if json_:
        print(json.dumps({"models": rows}, indent=2))
    else:
        out.print(_table(rows))
