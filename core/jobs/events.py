"""A job's event stream: what SSE clients and `?wait=` read while it runs.

Events are `progress` {step, total}, `preview` {step, png_base64}, `artifact` {name, media_type, url} and one
`end` {status}, which the status transition appends itself (`core/jobs/records.py`), in the same step as the
status change.
"""

from __future__ import annotations

import json

import redis
import redis.asyncio

from core.jobs.keys import JobKeys, text

EVENTS_MAXLEN = 2000


class JobEvents:
    """Appends to and reads a job's event stream (reads asynchronously, on the API's event loop)."""

    def __init__(self, client: redis.Redis, keys: JobKeys, ttl_s: int, aclient: redis.asyncio.Redis | None = None):
        self.client, self.keys, self.ttl_s, self.aclient = client, keys, ttl_s, aclient

    def append(self, job_id: str, event: str, data: dict, pipe=None) -> None:
        """Add one event (in `pipe`, when given, for the caller to execute)."""
        target = pipe if pipe is not None else self.client
        target.xadd(self.keys.events(job_id), {"event": event, "data": json.dumps(data)},
                    maxlen=EVENTS_MAXLEN, approximate=True)
        target.expire(self.keys.events(job_id), self.ttl_s)

    async def read_async(self, job_id: str, cursor: str, block_s: float, count: int = 100) -> list[tuple[str, str, str]]:
        """[(event id, event, data)] after `cursor`, waiting up to `block_s` for the first one."""
        reply = await self.aclient.xread({self.keys.events(job_id): cursor}, block=max(1, int(block_s * 1000)),
                                         count=count)
        return [(text(entry_id), text(fields[b"event"]), text(fields[b"data"]))
                for _, entries in reply or [] for entry_id, fields in entries]

    async def exist_async(self, job_id: str) -> bool:
        return bool(await self.aclient.exists(self.keys.events(job_id)))
