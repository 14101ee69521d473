"""The batch worker of one server process: validates new batches, runs lines, finalizes, runs async jobs.

Every step is claimed in the store with a lease (owner id + expiry) that a background task renews while this
process lives, so several processes on one PostgreSQL share the work and a killed process's lines are
reclaimed once its leases run out. A line's result is stored only while its claim is still held, so each
custom_id gets exactly one result. Lines run through an injected executor (the same services as live
requests; marked background there, so the scheduler serves live traffic first), `concurrency` at a time
per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from vlmserve.errors import VlmServeError, retry_after_of
from vlmserve.jobs.batch_store import LostLease
from vlmserve.jobs.model import BatchStatus, ItemState, LineError, LineOutcome, ParsedLine
from vlmserve.jobs.store import Store
from vlmserve.jobs.validate import ModelCheck, parse_batch_input

log = logging.getLogger("vlmserve.batches")
Executor = Callable[[str, dict[str, Any]], Awaitable[LineOutcome]]  # (endpoint, body) -> outcome
JobRunner = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # (kind, body) -> result; raises
# (endpoint, model, the batch key's allowlist) -> refusal message or None
AccessCheck = Callable[[str, str, frozenset[str]], str | None]
TRANSIENT = (429, 502, 503, 504)
PAGE = 1000


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 8  # lines of one batch in flight in this process
    lease: float = 30.0  # seconds a claim lasts without renewal
    poll: float = 0.5  # seconds between looks for work (new local work wakes the worker at once)
    max_attempts: int = 4  # tries of a line on transient engine errors
    backoff: float = 0.5  # first retry delay; doubles each time
    max_lines: int = 50_000
    job_concurrency: int = 4


def _result_line(row: dict[str, Any], batch_id: str) -> dict[str, Any]:
    state = row["state"]
    line_id = "batch_req_" + hashlib.sha256(f"{batch_id}:{row['line_no']}".encode()).hexdigest()[:24]
    if state in (ItemState.CANCELLED, ItemState.EXPIRED):
        code = f"batch_{state}"
        message = (
            "the batch was cancelled before this request ran"
            if state == ItemState.CANCELLED
            else ("the batch's completion window ended before this request ran")
        )
        return {"id": line_id, "custom_id": row["custom_id"], "response": None,
                "error": {"code": code, "message": message}}  # fmt: skip
    response = {
        "status_code": row["status_code"],
        "request_id": row["request_id"],
        "body": orjson.loads(row["response"]) if row["response"] else None,
    }
    error = orjson.loads(row["error"]) if row["error"] else None
    return {"id": line_id, "custom_id": row["custom_id"], "response": response, "error": error}


def failed_outcome(exc: VlmServeError) -> LineOutcome:
    """The error a live request would have answered, as this line's response; 429/502/503/504 may retry."""
    body = {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
    return LineOutcome(
        exc.status,
        body,
        error={"code": exc.code or exc.type, "message": exc.message},
        retryable=exc.status in TRANSIENT,
        retry_after=retry_after_of(exc),
    )


class BatchWorker:
    def __init__(
        self,
        store: Store,
        execute: Executor,
        run_job: JobRunner,
        check_model: ModelCheck,
        config: WorkerConfig | None = None,
        check_access: AccessCheck | None = None,
    ) -> None:
        self.store = store
        self.execute = execute
        self.run_job = run_job
        self.check_model = check_model
        self.check_access = check_access
        self.config = config or WorkerConfig()
        self.owner = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._last_purge = 0.0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._main()), loop.create_task(self._renew())]

    async def close(self) -> None:
        tasks = [*self._tasks, *self._runners.values(), *self._jobs]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.store.leases.release(self.owner)

    async def _main(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("batch worker tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease / 3)
            try:
                await self.store.leases.renew(self.owner, self.config.lease)
            except Exception:
                log.exception("lease renewal failed")

    async def tick(self) -> None:
        now = time.time()
        open_states = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)
        for batch in await self.store.batches.batches_in(*open_states):
            status = BatchStatus(batch["status"])
            if status == BatchStatus.VALIDATING:
                await self._validate(batch)
            elif status == BatchStatus.CANCELLING:
                await self._finalize(batch, BatchStatus.CANCELLED)
            elif status == BatchStatus.FINALIZING:
                await self._finalize(batch, None)
            elif batch["expires_at"] <= now:
                await self._finalize(batch, BatchStatus.EXPIRED)
            elif batch["id"] not in self._runners:
                if await self.store.batches.unrun_left(batch["id"]) == 0:
                    await self._finalize(batch, BatchStatus.COMPLETED)
                else:
                    task = asyncio.get_running_loop().create_task(self._run_batch(batch["id"], batch["endpoint"]))
                    self._runners[batch["id"]] = task
        await self._claim_jobs()
        if now - self._last_purge > 60:
            self._last_purge = now
            await self.store.files.purge_expired_files()

    # ---- validation
    async def _validate(self, batch: dict[str, Any]) -> None:
        if not await self.store.batches.claim_batch(batch["id"], self.owner, self.config.lease, BatchStatus.VALIDATING):
            return
        file = await self.store.files.get_file(batch["input_file_id"])
        if file is None:
            errors = [LineError("file_not_found", f"input file {batch['input_file_id']} not found",
                                param="input_file_id")]  # fmt: skip
            lines: list[ParsedLine] = []
        else:
            content = await self.store.files.file_content(file["id"])
            lines, errors = await asyncio.to_thread(
                parse_batch_input, content, batch["endpoint"], self.config.max_lines, self.check_model,
                self._access_of(batch),
            )  # fmt: skip
        if errors:
            await self.store.batches.fail_batch(batch["id"], self.owner, [e.as_dict() for e in errors])
            log.info("batch %s failed validation: %d errors", batch["id"], len(errors))
        elif await self.store.batches.start_batch(batch["id"], self.owner, lines):
            log.info("batch %s in progress: %d requests", batch["id"], len(lines))
        self.wake()

    def _access_of(self, batch: dict[str, Any]) -> ModelCheck | None:
        """The model check of the key that created the batch (its allowlist was stored with the batch)."""
        check, models = self.check_access, batch.get("models")
        if check is None or models is None:
            return None
        allowed = frozenset(orjson.loads(models))
        return lambda endpoint, model: check(endpoint, model, allowed)

    # ---- running lines
    async def _run_batch(self, batch_id: str, endpoint: str) -> None:
        """Claim lines `concurrency` at a time, one claim ahead of the engine: a line starts the moment an
        engine call of this batch ends, while results are stored and the next lines claimed alongside."""
        slots = asyncio.Semaphore(self.config.concurrency)
        running: set[asyncio.Task[None]] = set()
        batches = self.store.batches
        try:
            while True:
                items = await batches.claim_items(batch_id, self.owner, self.config.concurrency, self.config.lease)
                if not items:
                    if not running:
                        return
                    await asyncio.wait(running, timeout=self.config.poll, return_when=asyncio.FIRST_COMPLETED)
                    continue
                for item in items:
                    await slots.acquire()
                    task = asyncio.get_running_loop().create_task(self._run_line(batch_id, endpoint, item, slots))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            for task in list(running):
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._runners.pop(batch_id, None)
            self.wake()

    async def _attempt(self, endpoint: str, body: dict[str, Any]) -> LineOutcome:
        try:
            return await self.execute(endpoint, body)
        except VlmServeError as exc:
            return failed_outcome(exc)
        except Exception as exc:  # a bug must not stop the batch: this line fails, the rest run
            log.exception("batch line crashed")
            return failed_outcome(VlmServeError(f"internal error: {exc.__class__.__name__}"))

    async def _run_line(self, batch_id: str, endpoint: str, item: dict[str, Any], slots: asyncio.Semaphore) -> None:
        """Runs holding one of the batch's slots (acquired by the caller), released while backing off and
        before the result is stored."""
        body = orjson.loads(item["body"])
        request_id = f"req_{secrets.token_hex(12)}"
        attempt = 0
        while True:
            if attempt:
                await slots.acquire()
            try:
                outcome = await self._attempt(endpoint, body)
            finally:
                slots.release()
            attempt += 1
            if not outcome.retryable or attempt >= self.config.max_attempts:
                break
            delay = max(self.config.backoff * 2 ** (attempt - 1), outcome.retry_after or 0.0)
            await asyncio.sleep(min(delay, 30.0))
        try:
            if not await self.store.batches.finish_item(batch_id, item["line_no"], self.owner, request_id, outcome):
                log.warning("batch %s line %d: claim lost, result dropped", batch_id, item["line_no"])
        except Exception:
            log.exception("batch %s line %d: storing the result failed; it will run again", batch_id,
                          item["line_no"])  # fmt: skip

    # ---- finalization
    async def _finalize(self, batch: dict[str, Any], target: BatchStatus | None) -> None:
        batch_id, batches = batch["id"], self.store.batches
        if target == BatchStatus.COMPLETED and await batches.unrun_left(batch_id):
            return
        if target in (BatchStatus.EXPIRED, BatchStatus.CANCELLED, None) and await batches.live_running(batch_id):
            return  # lines in flight finish first: their results are kept
        claimable = (BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)
        if not await self.store.batches.claim_batch(batch_id, self.owner, self.config.lease, *claimable):
            return
        counts = await self.store.batches.batch_counts(batch_id)
        if target is None:  # a finalizer died: finish what it started
            target = BatchStatus.EXPIRED if ItemState.EXPIRED in counts else BatchStatus.COMPLETED
        if target != BatchStatus.CANCELLED:
            await self.store.batches.set_batch_status(batch_id, self.owner, BatchStatus.FINALIZING)
        if target in (BatchStatus.EXPIRED, BatchStatus.CANCELLED):
            await self.store.batches.close_out_items(batch_id, ItemState(target.value))
        output, errors = bytearray(), bytearray()
        after = 0
        while rows := await self.store.batches.items_page(batch_id, after, PAGE):
            for row in rows:
                if row["state"] == ItemState.SUCCEEDED:
                    output += orjson.dumps(_result_line(row, batch_id)) + b"\n"
                else:
                    errors += orjson.dumps(_result_line(row, batch_id)) + b"\n"
            after = rows[-1]["line_no"]
        files = [(kind, bytes(data)) for kind, data in (("batch_output", output), ("batch_error", errors)) if data]
        try:
            await self.store.batches.close_batch(batch_id, self.owner, target, files)
            log.info("batch %s %s", batch_id, target.value)
        except LostLease:
            log.warning("batch %s: finalization taken over by another process", batch_id)

    # ---- async single jobs
    async def _claim_jobs(self) -> None:
        free = self.config.job_concurrency - len(self._jobs)
        if free <= 0:
            return
        for job in await self.store.jobs.claim_jobs(self.owner, free, self.config.lease):
            task = asyncio.get_running_loop().create_task(self._run_job(job))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _run_job(self, job: dict[str, Any]) -> None:
        body = orjson.loads(job["body"])
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                result, error = await self.run_job(job["kind"], body), None
                break
            except VlmServeError as exc:
                error = {"message": exc.message, "type": exc.type, "code": exc.code, "status": exc.status}
                if exc.status not in TRANSIENT or attempt == self.config.max_attempts:
                    break
                await asyncio.sleep(min(30.0, max(self.config.backoff * 2 ** (attempt - 1), retry_after_of(exc) or 0)))
            except Exception as exc:
                log.exception("job %s crashed", job["id"])
                error = {"message": f"internal error: {exc.__class__.__name__}", "type": "server_error",
                         "code": None, "status": 500}  # fmt: skip
                break
        await self.store.jobs.finish_job(job["id"], self.owner, result, error)
        self.wake()
