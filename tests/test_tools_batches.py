"""Batch lines with `tools` run as live requests do: a /v1/batches line with tools and a forced call on the
embedded SmolLM2 (llama.cpp, grammar-constrained) comes back with tool_calls in its output line."""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson
from batch_helpers import jsonl, output_lines, wait_batch
from server_process import ServerProcess
from test_tools_openai import ASK, TIME, WEATHER


def test_batch_line_with_tools_gives_tool_calls(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    named = {"type": "function", "function": {"name": "get_time"}}
    lines: list[dict[str, Any]] = [
        {"tools": [WEATHER, TIME], "tool_choice": "required"},
        {"tools": [WEATHER, TIME], "tool_choice": named, "parallel_tool_calls": False},
    ]
    body = {"model": "smollm2", "messages": ASK, "max_tokens": 60}
    requests = [
        orjson.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions", "body": {**body, **x}})
        for i, x in enumerate(lines)
    ]
    try:
        file = client.files.create(file=("tools.jsonl", jsonl(requests)), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        done = wait_batch(client, batch.id, timeout=240)
        assert done.status == "completed" and done.request_counts is not None, done
        assert done.request_counts.failed == 0
        out = {
            line["custom_id"]: line["response"]["body"]["choices"][0]
            for line in output_lines(client, done.output_file_id)
        }
    finally:
        client.close()
    for custom_id, allowed in (("t0", {"get_weather", "get_time"}), ("t1", {"get_time"})):
        choice = out[custom_id]
        assert choice["finish_reason"] == "tool_calls"
        [call] = choice["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"] and call["function"]["name"] in allowed
        arguments = json.loads(call["function"]["arguments"])
        required = {"get_weather": {"city", "unit"}, "get_time": {"timezone"}}[call["function"]["name"]]
        assert required <= set(arguments)  # the grammar made them fit the tool's schema
