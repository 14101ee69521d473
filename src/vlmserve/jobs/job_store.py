"""Async single jobs (`vlm_jobs`: submit now, poll later) and the leases one worker holds across jobs, batch
lines and batches (renewed together, given back together on a clean stop)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from vlmserve.jobs import queries as q
from vlmserve.jobs.db import Driver, Row
from vlmserve.jobs.model import ItemState, JobStatus, new_id


class JobStore:
    def __init__(self, driver: Driver) -> None:
        self.db = driver

    async def create_job(self, kind: str, body: dict[str, Any], key_id: str | None = None) -> Row:
        """`key_id`: the submitting API key (None: no key); only that key may read the job back."""
        job_id = new_id("job-")
        await self.db.execute(
            q.JOB_INSERT, job_id, kind, JobStatus.PENDING.value, orjson.dumps(body).decode(), time.time(), key_id
        )
        job = await self.get_job(job_id)
        assert job is not None
        return job

    async def get_job(self, job_id: str) -> Row | None:
        rows = await self.db.fetch(q.JOB_GET, job_id)
        return rows[0] if rows else None

    async def claim_jobs(self, owner: str, n: int, lease: float) -> list[Row]:
        now = time.time()
        return await self.db.fetch(
            q.JOBS_CLAIM,
            JobStatus.PENDING.value, JobStatus.RUNNING.value, now, n, JobStatus.RUNNING.value, owner, now + lease,
        )  # fmt: skip

    async def finish_job(
        self, job_id: str, owner: str, result: dict[str, Any] | None, error: dict[str, Any] | None
    ) -> bool:
        return bool(
            await self.db.execute(
                q.JOB_FINISH,
                (JobStatus.FAILED if error else JobStatus.COMPLETE).value,
                orjson.dumps(result).decode() if result is not None else None,
                orjson.dumps(error).decode() if error else None,
                time.time(),
                job_id,
                owner,
                JobStatus.RUNNING.value,
            )
        )


class Leases:
    """Everything one owner (a worker process) holds: running batch lines and jobs, batch-level leases."""

    def __init__(self, driver: Driver) -> None:
        self.db = driver

    async def renew(self, owner: str, lease: float) -> None:
        until = time.time() + lease
        await self.db.execute(q.ITEMS_RENEW, until, owner, ItemState.RUNNING.value)
        await self.db.execute(q.JOBS_RENEW, until, owner, JobStatus.RUNNING.value)
        await self.db.execute(q.BATCHES_RENEW, until, owner)

    async def release(self, owner: str) -> None:
        """On a clean stop, give claimed work back at once instead of waiting for leases to run out."""
        await self.db.execute(q.ITEMS_RELEASE, ItemState.PENDING.value, owner, ItemState.RUNNING.value)
        await self.db.execute(q.JOBS_RELEASE, JobStatus.PENDING.value, owner, JobStatus.RUNNING.value)
        await self.db.execute(q.BATCHES_RELEASE, owner)
