"""The job system's Redis, by what it keeps: job records and their index (`records`), event streams (`events`),
inputs, artifacts and the result cache (`files`), worker heartbeats and statistics (`workers`), and locks.
Shared by the API and the workers; the key layout is in `core/jobs/keys.py`."""

from __future__ import annotations

import redis
import redis.asyncio

from core.jobs.events import JobEvents
from core.jobs.files import JobFiles
from core.jobs.keys import JobKeys
from core.jobs.records import JobRecords
from core.jobs.workers import WorkerBoard
from core.stores.usage import UsageLedger


class JobStore:
    """One Redis client (and, in the API, one asyncio client for `?wait=` and SSE), its parts built on it."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, aclient: redis.asyncio.Redis | None = None):
        self.client, self.aclient, self.ttl_s = client, aclient, ttl_s
        self.keys = JobKeys(prefix)
        self.usage = UsageLedger(client, prefix)  # what each key holds, against its quotas
        self.events = JobEvents(client, self.keys, ttl_s, aclient)
        self.files = JobFiles(client, self.keys, ttl_s, self.events, self.usage)
        self.records = JobRecords(client, self.keys, ttl_s, self.events, self.files, aclient)
        self.workers = WorkerBoard(client, self.keys)

    def lock(self, name: str, timeout_s: float = 300, wait_s: float = 120):
        """A Redis lock shared by every process (`with store.lock(name): ...`), released after `timeout_s` even when
        its holder dies."""
        return self.client.lock(self.keys.lock(name), timeout=timeout_s, blocking_timeout=wait_s)

    async def close_async(self) -> None:
        if self.aclient is not None:
            await self.aclient.aclose()
