"""Wires the batch layer (vlmserve.jobs) to the services: batch lines and async jobs run exactly as live
requests do (same protocol validation, adapters, ChatService / EmbedService, scheduler), marked `background`
so the scheduler queues them behind live traffic."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmserve.api.openai import adapter
from vlmserve.api.responses import answer as responses
from vlmserve.api.responses.protocol import ResponsesRequest
from vlmserve.api.simple import DEFAULT_PROMPT, AnalyzeRequest
from vlmserve.api.state import AppState
from vlmserve.domain.types import Capability, ChatRequest, ImageInput, Message, SamplingParams, TextPart
from vlmserve.errors import BadRequest, VlmServeError
from vlmserve.jobs.db import open_driver
from vlmserve.jobs.model import LineOutcome
from vlmserve.jobs.runtime import JobsRuntime
from vlmserve.jobs.store import Store
from vlmserve.jobs.validate import ModelCheck
from vlmserve.jobs.worker import AccessCheck, BatchWorker, JobRunner, WorkerConfig
from vlmserve.media.images import decode_base64
from vlmserve.wire import openai_models as p

log = logging.getLogger("vlmserve.batches")
BATCH_CLIENT = "batch"


def _validated(model: type[Any], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(x) for x in first.get("loc", ())) or None
        raise BadRequest(f"{param}: {first.get('msg')}" if param else str(first.get("msg")), param=param) from None


class LineExecutor:
    """One batch line: the body of a live request to `endpoint`, answered with the live response body."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __call__(self, endpoint: str, body: dict[str, Any]) -> LineOutcome:
        chat = self.state.chat
        if endpoint == "/v1/chat/completions":
            req = _validated(p.ChatCompletionRequest, body)
            domain = replace(adapter.chat_to_domain(req), client=BATCH_CLIENT, background=True)
            stream = await chat.chat(domain)
            result = await chat.collect(stream)
            out = adapter.chat_response(f"chatcmpl-{uuid.uuid4().hex}", stream.model, result)
            return LineOutcome(200, out, result.usage.prompt_tokens, result.usage.completion_tokens)
        if endpoint == "/v1/completions":
            creq = _validated(p.CompletionRequest, body)
            cdomain = replace(adapter.completion_to_domain(creq), client=BATCH_CLIENT, background=True)
            stream = await chat.complete(cdomain)
            result = await chat.collect(stream)
            out = adapter.completion_response(f"cmpl-{uuid.uuid4().hex}", stream.model, result)
            return LineOutcome(200, out, result.usage.prompt_tokens, result.usage.completion_tokens)
        if endpoint == "/v1/responses":
            rreq = _validated(ResponsesRequest, body)
            if rreq.background:
                raise BadRequest("background is not supported in batch lines", param="body.background")
            started = await responses.start(self.state, rreq, BATCH_CLIENT, store=False, background=True)
            answered = await responses.collect(self.state, started)
            usage = answered["usage"]
            return LineOutcome(200, answered, usage["input_tokens"], usage["output_tokens"])
        if endpoint == "/v1/embeddings":
            ereq = _validated(p.EmbeddingRequest, body)
            edomain = replace(adapter.embed_to_domain(ereq), client=BATCH_CLIENT, background=True)
            model, embedded, _load_ns = await self.state.embed.embed(edomain)
            out = adapter.embeddings_response(model, embedded, ereq.encoding_format)
            return LineOutcome(200, out, embedded.prompt_tokens, 0)
        raise BadRequest(f"unsupported batch endpoint {endpoint}", param="url")


def model_checker(state: AppState) -> ModelCheck:
    def check(endpoint: str, model: str) -> str | None:
        capability = Capability.EMBEDDING if endpoint == "/v1/embeddings" else Capability.COMPLETION
        try:
            state.catalog.resolve(model or None, capability)
        except VlmServeError as exc:
            return exc.message
        return None

    return check


def access_checker(state: AppState) -> AccessCheck:
    """A batch line's model, resolved as a live request would (default model included), against the allowlist
    of the key that created the batch: the same refusal as a live request with that key."""

    def check(endpoint: str, model: str, allowed: frozenset[str]) -> str | None:
        capability = Capability.EMBEDDING if endpoint == "/v1/embeddings" else Capability.COMPLETION
        try:
            name = state.catalog.resolve(model or None, capability).name
        except VlmServeError as exc:
            return exc.message
        return None if name in allowed else f"this API key may not use model '{name}'"

    return check


def job_runner(state: AppState) -> JobRunner:
    async def run(kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if kind == responses.JOB_KIND:  # a background response (POST /v1/responses, background: true)
            return await responses.run_background(state, body)
        if kind != "analyze":
            raise BadRequest(f"unknown job kind {kind!r}")
        req = AnalyzeRequest.model_validate(body)
        image = decode_base64(req.image_base64.split(",", 1)[-1], field="image_base64")
        domain = ChatRequest(
            model=req.model or state.catalog.default_vision_model or "",
            messages=[Message(role="user", parts=[TextPart(req.prompt or DEFAULT_PROMPT), ImageInput(image, "image")])],
            sampling=SamplingParams(max_tokens=req.max_tokens),
            client=BATCH_CLIENT,
            background=True,
        )
        result = await state.chat.collect(await state.chat.chat(domain))
        usage = {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens}
        return {"response": result.text, "model": domain.model, "usage": usage}

    return run


def data_dir_of(state: AppState) -> Path:
    configured = state.settings.data_dir
    return Path(configured).expanduser() if configured else Path.home() / ".vlmserve"


async def start_jobs(state: AppState) -> JobsRuntime:
    s = state.settings
    data_dir = data_dir_of(state)
    began = time.perf_counter()
    driver = await open_driver(s.database_url, data_dir, s.database_schema)
    files_dir = data_dir / "files" if driver.dialect == "sqlite" else None
    store = Store(driver, files_dir)
    worker = None
    if s.batch_workers:
        config = WorkerConfig(
            concurrency=s.batch_concurrency,
            lease=s.batch_lease,
            poll=s.batch_poll_interval,
            max_attempts=s.batch_max_attempts,
            max_lines=s.batch_max_lines,
        )
        worker = BatchWorker(store, LineExecutor(state), job_runner(state), model_checker(state), config=config,
                             check_access=access_checker(state))  # fmt: skip
        worker.start()
    log.info("batch store: %s (%.0f ms)%s", driver.dialect, (time.perf_counter() - began) * 1000,
             f", worker {worker.owner}" if worker else ", no worker")  # fmt: skip
    runtime = JobsRuntime(store, worker, s.batch_max_file_bytes, s.batch_max_lines)
    state.jobs = runtime
    return runtime


async def stop_jobs(state: AppState) -> None:
    if state.jobs is not None:
        await state.jobs.close()
        state.jobs = None
