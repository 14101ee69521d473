"""What the API holds of the batch layer: the store, this process's worker (if it runs one), the limits."""

from __future__ import annotations

from dataclasses import dataclass

from vlmserve.jobs.store import Store
from vlmserve.jobs.worker import BatchWorker


@dataclass
class JobsRuntime:
    store: Store
    worker: BatchWorker | None
    max_file_bytes: int
    max_lines: int

    def wake(self) -> None:
        """New local work: look for it now rather than at the next poll."""
        if self.worker is not None:
            self.worker.wake()

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        await self.store.close()
