"""Job records, events, artifacts and worker heartbeats in Redis, shared by the API and the workers.

Keys (all under the settings' prefix `P`):

    P job:<id>              hash: spec (JSON), status, progress, timestamps, error, result, worker, attempt
    P job:<id>:artifacts    hash: artifact name → bytes
    P job:<id>:events       stream: progress / preview / end events, read by SSE and `?wait=`
    P jobs:<owner or ->     sorted set: job id → created_at, the caller's job list
    P jobs:started          sorted set: ids of started jobs, scanned for lost ones
    P jobs:ended            stream: {kind, status, seconds} of every ended job (metrics)
    P jobcache:<digest>     id of a finished job with that spec (same model, image bytes, params)
    P jobinput:<sha256>     an input image file, by content
    P jobinput:<sha256>.rgb the same image as the API decoded it (npy, H×W×3 uint8), for a small image, kept
                            briefly (`DECODED_TTL_S`): the worker then skips decoding it again
    P worker:<name>         heartbeat: the id of the job the worker runs ("-" when idle), short TTL
    P workers               set: names of workers that published their cache figures
    P workerstats:<name>    JSON of a worker's cache figures (networks, sessions, blobs), heartbeat TTL
    P jobs:queued           sorted set: ids of queued jobs → when they were queued, scanned for strays
    P lock:<name>           a short-lived lock (`lock`), e.g. `modelblob:<sha256>` around adding and deleting
                            a model file

Status changes go through one Lua script, so that a worker finishing, a client cancelling and a
monitor declaring a worker dead can race without ever overwriting each other: each transition
names the statuses (and attempt) it may start from, and an ending one appends the `end` event
in the same step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import redis.asyncio

from core.jobs.status import ENDED, JobStatus, media_type

ENDED_LIST = ",".join(sorted(ENDED))
EVENTS_MAXLEN = 2000
DECODED_TTL_S = 600  # decoded pixels are a shortcut for a job about to run, not a second copy kept for a day

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


@dataclass
class JobKeys:
    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def artifacts(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:artifacts"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:events"

    def index(self, owner: str | None) -> str:
        return f"{self.prefix}jobs:{owner or '-'}"

    @property
    def started(self) -> str:
        return f"{self.prefix}jobs:started"

    @property
    def ended(self) -> str:
        return f"{self.prefix}jobs:ended"

    def cache(self, digest: str) -> str:
        return f"{self.prefix}jobcache:{digest}"

    def input(self, sha256: str) -> str:
        return f"{self.prefix}jobinput:{sha256}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}worker:{name}"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def worker_stats(self, name: str) -> str:
        return f"{self.prefix}workerstats:{name}"

    @property
    def queued(self) -> str:
        return f"{self.prefix}jobs:queued"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"


@contextmanager
def _in(client: redis.Redis, pipe, transaction: bool = True):
    """The caller's pipeline as is, or a pipeline of our own that is executed on leaving (one round trip)."""
    if pipe is not None:
        yield pipe
        return
    with client.pipeline(transaction=transaction) as own:
        yield own
        own.execute()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobStore:
    """Reads and writes job records; every status change is one atomic transition."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, aclient: redis.asyncio.Redis | None = None):
        self.client = client
        self.aclient = aclient  # for the API's async readers (`?wait=`, SSE); None in workers
        self.keys = JobKeys(prefix)
        self.ttl_s = ttl_s
        self._transition = client.register_script(_TRANSITION)

    # Records.
    def create(self, job_id: str, spec: dict, *, status: JobStatus = JobStatus.QUEUED, listed_max: int = 10_000,
               extra: dict | None = None, pipe=None) -> dict:
        """Store a new record (in `pipe`, when given, for the caller to execute); returns it as `get` would."""
        now = time.time()
        fields = {"spec": json.dumps(spec), "status": status, "created_at": repr(now), "attempt": "1",
                  "progress": json.dumps({"step": 0, "total": 0}), **(extra or {})}
        index = self.keys.index(spec.get("owner"))
        with _in(self.client, pipe) as target:
            target.hset(self.keys.job(job_id), mapping=fields)
            target.expire(self.keys.job(job_id), self.ttl_s)
            if status == JobStatus.QUEUED:
                target.zadd(self.keys.queued, {job_id: now})
            target.zadd(index, {job_id: now})
            target.zremrangebyrank(index, 0, -listed_max - 1)
            target.expire(index, self.ttl_s)
        return {k: str(v) for k, v in fields.items()}

    def get(self, job_id: str) -> dict | None:
        raw = self.client.hgetall(self.keys.job(job_id))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    def newest(self, owner: str | None, page: int = 100) -> Iterator[dict]:
        """The owner's job records (with `id`), newest first; entries whose record expired are dropped."""
        index, start = self.keys.index(owner), 0
        while ids := [_text(i) for i in self.client.zrevrange(index, start, start + page - 1)]:
            with self.client.pipeline() as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(job_id))
                records = pipe.execute()
            gone = [job_id for job_id, raw in zip(ids, records) if not raw]
            if gone:
                self.client.zrem(index, *gone)
            for job_id, raw in zip(ids, records):
                if raw:
                    yield {"id": job_id, **{_text(k): _text(v) for k, v in raw.items()}}
            start += page - len(gone)

    def transition(self, job_id: str, allowed: tuple[JobStatus, ...], new: JobStatus, *, expect_attempt: int | None = None,
                   **fields) -> tuple[bool, str | None]:
        """Move the job to `new` if its status is in `allowed` (and its attempt matches).

        Returns (changed, status before). Field values are strings or JSON-able objects.
        """
        changed, before = self._transition(**self._transition_call(job_id, allowed, new, expect_attempt, fields))
        return bool(changed), (_text(before) or None)

    def _transition_call(self, job_id: str, allowed: tuple[JobStatus, ...], new: JobStatus, expect_attempt: int | None,
                         fields: dict) -> dict:
        args = [",".join(allowed), "" if expect_attempt is None else str(expect_attempt), new, self.ttl_s,
                repr(time.time()), job_id, JobStatus.STARTED, ENDED_LIST]
        for name, value in fields.items():
            args += [name, value if isinstance(value, str) else json.dumps(value)]
        keys = [self.keys.job(job_id), self.keys.events(job_id), self.keys.started, self.keys.ended,
                self.keys.artifacts(job_id), self.keys.queued]
        return {"keys": keys, "args": args}

    def finish(self, job_id: str, attempt: int, new: JobStatus, artifacts: dict[str, bytes], remember: str | None,
               **fields) -> tuple[bool, str | None]:
        """A started job's ending with its artifacts, in one round trip: the artifacts stored, then the transition
        (started → `new`), so that a client woken by the `end` event finds them. With `remember` (the spec's digest)
        a finished job is also remembered for the result cache (a second trip, after the `end` event)."""
        with self.client.pipeline(transaction=False) as pipe:
            if artifacts:
                pipe.hset(self.keys.artifacts(job_id), mapping=artifacts)
                pipe.expire(self.keys.artifacts(job_id), self.ttl_s)
            self._transition(**self._transition_call(job_id, (JobStatus.STARTED,), new, attempt, fields), client=pipe)
            changed, before = pipe.execute()[-1]
        if changed and remember and new == JobStatus.FINISHED:
            self.remember(remember, job_id)
        return bool(changed), (_text(before) or None)

    # Progress, events, cancellation.
    def event(self, job_id: str, event: str, data: dict, pipe=None) -> None:
        target = pipe if pipe is not None else self.client
        target.xadd(self.keys.events(job_id), {"event": event, "data": json.dumps(data)},
                    maxlen=EVENTS_MAXLEN, approximate=True)
        target.expire(self.keys.events(job_id), self.ttl_s)

    def progress(self, job_id: str, step: int, total: int) -> bool:
        """Record progress; returns True when cancellation of the job has been asked for."""
        data = {"step": step, "total": total}
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.job(job_id), "progress", json.dumps(data))
            self.event(job_id, "progress", data, pipe)
            pipe.hget(self.keys.job(job_id), "cancel")
            return pipe.execute()[-1] is not None

    def request_cancel(self, job_id: str) -> None:
        self.client.hset(self.keys.job(job_id), "cancel", "1")

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.hexists(self.keys.job(job_id), "cancel"))

    # Artifacts.
    def put_artifacts(self, job_id: str, artifacts: dict[str, bytes]) -> None:
        if not artifacts:
            return
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.artifacts(job_id), mapping=artifacts)
            pipe.expire(self.keys.artifacts(job_id), self.ttl_s)
            pipe.execute()

    def publish(self, job_id: str, artifacts: dict[str, bytes]) -> None:
        """Store files of a job that is still running and announce each with an `artifact` event: the API serves
        the files named in the record's `ready` field before the job ends (a map while its scores are computed)."""
        ready = sorted(set(json.loads(_text(self.client.hget(self.keys.job(job_id), "ready")) or "[]")) | set(artifacts))
        with self.client.pipeline() as pipe:
            pipe.hset(self.keys.artifacts(job_id), mapping=artifacts)
            pipe.expire(self.keys.artifacts(job_id), self.ttl_s)
            pipe.hset(self.keys.job(job_id), "ready", json.dumps(ready))
            for name in artifacts:
                self.event(job_id, "artifact", {"name": name, "media_type": media_type(name),
                                                "url": f"/v1/jobs/{job_id}/artifacts/{name}"}, pipe)
            pipe.execute()

    def artifact(self, job_id: str, name: str) -> bytes | None:
        return self.client.hget(self.keys.artifacts(job_id), name)

    def copy_artifacts(self, source_id: str, job_id: str) -> bool:
        """Copy a finished job's artifacts to another job (a cache hit); False when they expired."""
        return bool(self.client.copy(self.keys.artifacts(source_id), self.keys.artifacts(job_id), replace=True))

    # Inputs and the result cache.
    def put_input(self, sha256: str, data: bytes, decoded: bytes | None = None, pipe=None) -> None:
        """Keep an input file (and, given, its decoded pixels as npy bytes, for `DECODED_TTL_S`), in one round trip
        (or in `pipe`, when given, for the caller to execute)."""
        with _in(self.client, pipe, transaction=False) as target:
            target.set(self.keys.input(sha256), data, ex=self.ttl_s)
            if decoded is not None:
                target.set(self.keys.input(sha256) + ".rgb", decoded, ex=min(self.ttl_s, DECODED_TTL_S))

    def get_input(self, sha256: str) -> bytes | None:
        return self.client.get(self.keys.input(sha256))

    def get_decoded(self, sha256: str) -> bytes | None:
        """The pixels the API decoded from input `sha256` (npy bytes), while they are kept; else None."""
        return self.client.get(self.keys.input(sha256) + ".rgb")

    def remember(self, digest: str, job_id: str) -> None:
        self.client.set(self.keys.cache(digest), job_id, ex=self.ttl_s)

    # Ended jobs (for metrics).
    def ended_cursor(self) -> str:
        """The id of the newest entry of the ended-jobs stream ('0-0' when empty): read after it."""
        last = self.client.xrevrange(self.keys.ended, count=1)
        return _text(last[0][0]) if last else "0-0"

    def ended_since(self, cursor: str, count: int = 1000) -> tuple[str, list[tuple[str, str, float]]]:
        """(new cursor, [(kind, status, seconds started → ended)]) of jobs that ended after `cursor`."""
        ended = []
        for _, entries in self.client.xread({self.keys.ended: cursor}, count=count) or []:
            for entry_id, fields in entries:
                cursor = _text(entry_id)
                ended.append((_text(fields[b"kind"]), _text(fields[b"status"]), float(fields[b"seconds"])))
        return cursor, ended

    # Async reads (the API's event loop).
    async def get_async(self, job_id: str) -> dict | None:
        raw = await self.aclient.hgetall(self.keys.job(job_id))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    async def get_with_artifact_async(self, job_id: str, name: str) -> tuple[dict | None, bytes | None]:
        """(record, artifact `name` or None) in one round trip."""
        async with self.aclient.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.job(job_id))
            pipe.hget(self.keys.artifacts(job_id), name)
            raw, data = await pipe.execute()
        return ({_text(k): _text(v) for k, v in raw.items()} if raw else None), data

    async def events_async(self, job_id: str, cursor: str, block_s: float, count: int = 100) -> list[tuple[str, str, str]]:
        """[(event id, event, data)] after `cursor`, waiting up to `block_s` for the first one."""
        reply = await self.aclient.xread({self.keys.events(job_id): cursor}, block=max(1, int(block_s * 1000)),
                                         count=count)
        return [(_text(entry_id), _text(fields[b"event"]), _text(fields[b"data"]))
                for _, entries in reply or [] for entry_id, fields in entries]

    async def has_events_async(self, job_id: str) -> bool:
        return bool(await self.aclient.exists(self.keys.events(job_id)))

    async def close_async(self) -> None:
        if self.aclient is not None:
            await self.aclient.aclose()

    # Worker liveness.
    def beat(self, worker: str, job_id: str, ttl_s: float) -> None:
        """A worker's heartbeat: the job it runs ('-' when idle), alive for `ttl_s`."""
        self.client.set(self.keys.worker(worker), job_id, ex=max(1, round(ttl_s)))

    def forget_worker(self, worker: str) -> None:
        self.client.delete(self.keys.worker(worker))

    def worker_job(self, name: str) -> str | None:
        """What a worker's heartbeat says it runs: a job id, '-' when idle, None when it is silent (dead)."""
        value = self.client.get(self.keys.worker(name))
        return _text(value) if value is not None else None

    def publish_stats(self, worker: str, stats: dict, ttl_s: float) -> None:
        """A worker's cache figures, for the API's /metrics; they vanish with the worker."""
        with self.client.pipeline() as pipe:
            pipe.sadd(self.keys.workers, worker)
            pipe.set(self.keys.worker_stats(worker), json.dumps(stats), ex=max(1, round(ttl_s)))
            pipe.execute()

    def workers_stats(self) -> dict[str, dict]:
        """Live workers' published figures by worker name (workers gone silent are forgotten)."""
        names = sorted(_text(n) for n in self.client.smembers(self.keys.workers))
        if not names:
            return {}
        values = self.client.mget([self.keys.worker_stats(n) for n in names])
        gone = [n for n, v in zip(names, values) if v is None]
        if gone:
            self.client.srem(self.keys.workers, *gone)
        return {n: json.loads(v) for n, v in zip(names, values) if v is not None}

    def started_ids(self) -> list[str]:
        return [_text(i) for i in self.client.zrange(self.keys.started, 0, -1)]

    def forget_started(self, job_id: str) -> None:
        self.client.zrem(self.keys.started, job_id)

    def queued_since(self, before: float) -> list[str]:
        """Ids of jobs queued (or re-queued) before `before` (Unix seconds) that are still listed as queued."""
        return [_text(i) for i in self.client.zrangebyscore(self.keys.queued, "-inf", before)]

    def forget_queued(self, job_id: str) -> None:
        self.client.zrem(self.keys.queued, job_id)

    def stray_since(self, job_id: str, now: float) -> float:
        """When a queued job was first seen neither waiting in its queue nor held by a live worker (now, if this is
        the first time)."""
        seen = _text(self.client.hget(self.keys.job(job_id), "stray_at"))
        if seen:
            return float(seen)
        self.client.hset(self.keys.job(job_id), "stray_at", repr(now))
        return now

    def not_stray(self, job_id: str) -> None:
        """The queued job was found waiting in its queue or held by a live worker: forget any stray sighting."""
        self.client.hdel(self.keys.job(job_id), "stray_at")

    # Locks.
    def lock(self, name: str, timeout_s: float = 300, wait_s: float = 120):
        """A Redis lock shared by every process (`with store.lock(name): ...`), released after `timeout_s` even when
        its holder dies."""
        return self.client.lock(self.keys.lock(name), timeout=timeout_s, blocking_timeout=wait_s)
