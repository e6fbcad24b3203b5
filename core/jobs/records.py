"""Job records in Redis: creating them, reading them as `JobRecord`s, the owner's list, and every status change.

Status changes go through one Lua script, so that a worker finishing, a client cancelling and a monitor
declaring a worker dead can race without ever overwriting each other: each transition names the statuses (and
attempt) it may start from, and an ending one appends the `end` event in the same step. The script also keeps
the started and queued indexes that the supervisor scans (`core.jobs.supervisor`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis
import redis.asyncio
from pydantic import BaseModel

from core.jobs.events import JobEvents
from core.jobs.files import JobFiles
from core.jobs.keys import JobKeys, fields_of, in_pipeline, text
from core.jobs.record import JobProgress, JobRecord, JobSpec
from core.jobs.status import ENDED, JobStatus

ENDED_LIST = ",".join(sorted(ENDED))

# KEYS: job hash, events stream, started zset, ended stream, artifacts hash, queued zset
# ARGV: allowed statuses (comma list), attempt ('' = any), new status, ttl s, now, job id,
#       the `started` status, the ended statuses (comma list), then field/value pairs
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return {0, current} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then return {0, current} end
local new, ttl, now, id = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
redis.call('HSET', KEYS[1], 'status', new)
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if new == ARGV[7] then
  redis.call('ZADD', KEYS[3], now, id)
else
  redis.call('ZREM', KEYS[3], id)
end
if new == 'queued' then
  redis.call('ZADD', KEYS[6], now, id)
else
  redis.call('ZREM', KEYS[6], id)
end
if string.find(',' .. ARGV[8] .. ',', ',' .. new .. ',', 1, true) then
  redis.call('HSET', KEYS[1], 'ended_at', now)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'end', 'data', cjson.encode({status = new}))
  for _, key in ipairs({KEYS[1], KEYS[2], KEYS[5]}) do redis.call('EXPIRE', key, ttl) end
  local kind = cjson.decode(redis.call('HGET', KEYS[1], 'spec'))['kind']
  local began = redis.call('HGET', KEYS[1], 'started_at')
  local seconds = began and (tonumber(now) - tonumber(began)) or 0
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'kind', kind, 'status', new, 'seconds', tostring(seconds))
end
return {1, current}
"""


def _value(value) -> str:
    """A hash field's text: strings as they are, models and other values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value)


def _record(job_id: str, raw: dict) -> JobRecord | None:
    return JobRecord.from_fields(job_id, fields_of(raw)) if raw else None


class JobRecords:
    """Reads and writes job records; every status change is one atomic transition."""

    def __init__(self, client: redis.Redis, keys: JobKeys, ttl_s: int, events: JobEvents, files: JobFiles,
                 aclient: redis.asyncio.Redis | None = None):
        self.client, self.keys, self.ttl_s, self.aclient = client, keys, ttl_s, aclient
        self.events, self.files = events, files  # a progress step appends an event; an ending stores files
        self._transition = client.register_script(_TRANSITION)

    def create(self, job_id: str, spec: JobSpec, *, status: JobStatus = JobStatus.QUEUED, listed_max: int = 10_000,
               extra: dict | None = None, pipe=None) -> JobRecord:
        """Store a new record (in `pipe`, when given, for the caller to execute); returns it as `get` would."""
        now = time.time()
        fields = {"spec": spec.model_dump_json(), "status": status, "created_at": repr(now), "attempt": "1",
                  "progress": JobProgress().model_dump_json(), **{k: _value(v) for k, v in (extra or {}).items()}}
        index = self.keys.index(spec.owner)
        with in_pipeline(self.client, pipe) as target:
            target.hset(self.keys.job(job_id), mapping=fields)
            target.expire(self.keys.job(job_id), self.ttl_s)
            if status == JobStatus.QUEUED:
                target.zadd(self.keys.queued, {job_id: now})
            target.zadd(index, {job_id: now})
            target.zremrangebyrank(index, 0, -listed_max - 1)
            target.expire(index, self.ttl_s)
        return JobRecord.from_fields(job_id, {k: str(v) for k, v in fields.items()})

    def get(self, job_id: str) -> JobRecord | None:
        return _record(job_id, self.client.hgetall(self.keys.job(job_id)))

    def newest(self, owner: str | None, page: int = 100) -> Iterator[JobRecord]:
        """The owner's job records, newest first; entries whose record expired are dropped."""
        index, start = self.keys.index(owner), 0
        while ids := [text(i) for i in self.client.zrevrange(index, start, start + page - 1)]:
            with self.client.pipeline() as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(job_id))
                records = pipe.execute()
            gone = [job_id for job_id, raw in zip(ids, records) if not raw]
            if gone:
                self.client.zrem(index, *gone)
            for job_id, raw in zip(ids, records):
                if raw:
                    yield _record(job_id, raw)
            start += page - len(gone)

    def transition(self, job_id: str, allowed: tuple[JobStatus, ...], new: JobStatus, *, expect_attempt: int | None = None,
                   **fields) -> tuple[bool, JobStatus | None]:
        """Move the job to `new` if its status is in `allowed` (and its attempt matches).

        Returns (changed, status before). Field values are strings, models or JSON-able objects.
        """
        changed, before = self._transition(**self._transition_call(job_id, allowed, new, expect_attempt, fields))
        return bool(changed), _status(before)

    def _transition_call(self, job_id: str, allowed: tuple[JobStatus, ...], new: JobStatus, expect_attempt: int | None,
                         fields: dict) -> dict:
        args = [",".join(allowed), "" if expect_attempt is None else str(expect_attempt), new, self.ttl_s,
                repr(time.time()), job_id, JobStatus.STARTED, ENDED_LIST]
        for name, value in fields.items():
            args += [name, _value(value)]
        keys = [self.keys.job(job_id), self.keys.events(job_id), self.keys.started, self.keys.ended,
                self.keys.artifacts(job_id), self.keys.queued]
        return {"keys": keys, "args": args}

    def finish(self, job_id: str, attempt: int, new: JobStatus, artifacts: dict[str, bytes],
               **fields) -> tuple[bool, JobStatus | None]:
        """A started job's ending with its artifacts, in one round trip: the artifacts stored, then the transition
        (started → `new`), so that a client woken by the `end` event finds them."""
        with self.client.pipeline(transaction=False) as pipe:
            self.files.put_artifacts(job_id, artifacts, pipe)
            self._transition(**self._transition_call(job_id, (JobStatus.STARTED,), new, attempt, fields), client=pipe)
            changed, before = pipe.execute()[-1]
        return bool(changed), _status(before)

    # Progress and cancellation.
    def progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; returns True when cancellation of the job has been asked for."""
        data = {"step": step, "total": total}
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.job(job_id), "progress", json.dumps(data))
            self.events.append(job_id, "progress", data, pipe)
            pipe.hget(self.keys.job(job_id), "cancel")
            return pipe.execute()[-1] is not None

    def request_cancel(self, job_id: str) -> None:
        self.client.hset(self.keys.job(job_id), "cancel", "1")

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.hexists(self.keys.job(job_id), "cancel"))

    # The indexes the supervisor scans.
    def started_ids(self) -> list[str]:
        return [text(i) for i in self.client.zrange(self.keys.started, 0, -1)]

    def owners(self, job_ids: list[str]) -> list[str | None]:
        """The owner of each of these jobs whose record is still there (read from its spec), in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "spec")
            specs = pipe.execute()
        return [JobSpec.model_validate_json(spec).owner for spec in specs if spec is not None]

    def forget_started(self, job_id: str) -> None:
        self.client.zrem(self.keys.started, job_id)

    def queued_since(self, before: float) -> list[str]:
        """Ids of jobs queued (or re-queued) before `before` (Unix seconds) that are still listed as queued."""
        return [text(i) for i in self.client.zrangebyscore(self.keys.queued, "-inf", before)]

    def forget_queued(self, job_id: str) -> None:
        self.client.zrem(self.keys.queued, job_id)

    def stray_since(self, job_id: str, now: float) -> float:
        """When a queued job was first seen neither waiting in its queue nor held by a live worker (now, if this is
        the first time)."""
        seen = text(self.client.hget(self.keys.job(job_id), "stray_at"))
        if seen:
            return float(seen)
        self.client.hset(self.keys.job(job_id), "stray_at", repr(now))
        return now

    def not_stray(self, job_id: str) -> None:
        """The queued job was found waiting in its queue or held by a live worker: forget any stray sighting."""
        self.client.hdel(self.keys.job(job_id), "stray_at")

    # Async reads (the API's event loop).
    async def get_async(self, job_id: str) -> JobRecord | None:
        return _record(job_id, await self.aclient.hgetall(self.keys.job(job_id)))

    async def get_with_artifact_async(self, job_id: str, name: str) -> tuple[JobRecord | None, bytes | None]:
        """(record, artifact `name` or None) in one round trip."""
        async with self.aclient.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.hget(self.keys.artifacts(job_id), name)
            raw, data = await pipe.execute()
        return _record(job_id, raw), data


def _status(value) -> JobStatus | None:
    return JobStatus(text(value)) if value else None
