"""Stored responses of the Responses API (`store: true`), in the batch database (SQLite or PostgreSQL).

One row per response: the response object as answered (JSON), the request's own input items (JSON, each with
an id), the previous response it continues, and the API key that made it (NULL: made with no key). A
conversation is read back by walking `previous_id` links, oldest first. Table `vlm_responses`, migration 5.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from vlmserve.jobs import queries as q
from vlmserve.jobs.db import Driver, Row

MAX_CHAIN = 1000  # responses of one conversation read back for previous_response_id


def _json(text: str | None) -> Any:
    return orjson.loads(text) if text else None


class ResponsesStore:
    def __init__(self, db: Driver) -> None:
        self.db = db

    async def save(self, response: dict[str, Any], input_items: list[dict[str, Any]], key_id: str | None) -> None:
        """Insert the response, or update its status and object (a background response as it runs)."""
        now = time.time()
        await self.db.execute(
            q.RESPONSE_SAVE,
            response["id"],
            key_id,
            response.get("previous_response_id"),
            response["status"],
            float(response.get("created_at") or now),
            now,
            orjson.dumps(input_items).decode(),
            orjson.dumps(response).decode(),
        )

    async def get(self, response_id: str, key_id: str | None) -> Row | None:
        """The row, with `response` and `input_items` decoded; None when missing or another key's (a response
        made with a key is that key's alone; one made with no key is open to all)."""
        rows = await self.db.fetch(q.RESPONSE_GET, response_id)
        if not rows or not _owned(rows[0], key_id):
            return None
        row = rows[0]
        return {**row, "response": _json(row["response"]), "input_items": _json(row["input_items"]) or []}

    async def delete(self, response_id: str, key_id: str | None) -> bool:
        if await self.get(response_id, key_id) is None:
            return False
        return await self.db.execute(q.RESPONSE_DELETE, response_id) > 0

    async def conversation(self, response_id: str, key_id: str | None) -> list[dict[str, Any]] | None:
        """Every item of the conversation up to and including `response_id` (each response's input items,
        then its output items), oldest first; None when the response is missing or another key's."""
        links: list[Row] = []
        next_id: str | None = response_id
        while next_id is not None and len(links) < MAX_CHAIN:
            rows = await self.db.fetch(q.RESPONSE_LINK, next_id)
            if not rows or not _owned(rows[0], key_id):
                if not links:
                    return None
                break  # an earlier response was deleted: the conversation starts after it
            links.append(rows[0])
            next_id = rows[0]["previous_id"]
        items: list[dict[str, Any]] = []
        for link in reversed(links):
            items += _json(link["input_items"]) or []
            items += (_json(link["response"]) or {}).get("output") or []
        return items


def _owned(row: Row, key_id: str | None) -> bool:
    return row["key_id"] is None or row["key_id"] == key_id
