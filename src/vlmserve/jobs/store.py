"""The batch layer's storage, one object per aggregate over one database: `files` (files_store.py), `batches`
(batches and their lines, batch_store.py), `jobs` and `leases` (job_store.py). Every statement they run is a
named query in queries.py; `db` is the driver, shared with the API key and stored-response stores."""

from __future__ import annotations

from pathlib import Path

from vlmserve.jobs.batch_store import BatchStore
from vlmserve.jobs.db import Driver
from vlmserve.jobs.files_store import FileStore
from vlmserve.jobs.job_store import JobStore, Leases


class Store:
    def __init__(self, driver: Driver, files_dir: Path | None) -> None:
        self.db = driver
        self.files = FileStore(driver, files_dir)
        self.batches = BatchStore(driver, self.files)
        self.jobs = JobStore(driver)
        self.leases = Leases(driver)

    async def close(self) -> None:
        await self.db.close()
