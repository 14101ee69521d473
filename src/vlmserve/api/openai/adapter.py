"""The OpenAI surface's side of the wire: chat and completions decode and encode through vlmserve/wire (one
definition for the routes, the batch lines, the HTTP backend and the runners); embeddings and lists here."""

from __future__ import annotations

import base64
import struct
from typing import Any

from vlmserve.domain.duration import keep_alive_seconds
from vlmserve.domain.types import EmbedRequest, EmbedResult
from vlmserve.errors import BadRequest
from vlmserve.wire import openai_answers as answers
from vlmserve.wire import openai_codec as codec
from vlmserve.wire import openai_models as p

chat_to_domain = codec.chat_from_wire
completion_to_domain = codec.completion_from_wire


def embed_to_domain(req: p.EmbeddingRequest) -> EmbedRequest:
    raw = req.input
    token_ids: list[list[int]] | None = None
    if isinstance(raw, str):
        inputs = [raw]
    elif not raw:
        raise BadRequest("input must not be empty", param="input")
    elif all(isinstance(x, str) for x in raw):
        inputs = [str(x) for x in raw]
    else:  # token ids: one list of them, or a list of lists (what LangChain's OpenAIEmbeddings sends)
        inputs = []
        token_ids = [list(x) for x in raw] if isinstance(raw[0], list) else [[int(x) for x in raw]]
        if any(not ids for ids in token_ids):
            raise BadRequest("input must not contain empty token lists", param="input")
    if any(not text for text in inputs):
        raise BadRequest("input must not contain empty strings", param="input")
    return EmbedRequest(
        model=req.model,
        inputs=inputs,
        token_ids=token_ids,
        dimensions=req.dimensions,
        keep_alive=keep_alive_seconds(req.keep_alive),
    )


usage_dict = answers.usage_dict
chat_response = answers.chat_completion
completion_response = answers.completion


def embeddings_response(model: str, result: EmbedResult, encoding: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(result.vectors)],
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's paginated list object (files, batches)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
